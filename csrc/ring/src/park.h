// How the ring waits: spin, yield, then park on a futex word (an epoch
// counter bumped by whoever may have made the wait's condition true).
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "futex.h"
#include "pyfastq/ring.h"

namespace pyfastq::detail {

inline constexpr int kSpins = 128;
inline constexpr int kYields = 4;
inline constexpr int kClockEvery = 16;  // spins between looks at the clock, which costs about as much as a few spins
// A parked waiter re-checks at least this often, so a missed wake (or a
// waker in a process that died) costs latency, never a hang.
inline constexpr auto kMaxPark = std::chrono::milliseconds(200);

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

inline std::uint64_t clock_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
}

enum class Try { kPending, kDone };

// Spin, then park on the futex word `epoch` until try_once() is done, the
// deadline passes or the abandon flag is raised. announce() runs once the
// waiter is counted in `waiters`, before the last look at the epoch; parked()
// is told when the park began, once it is over.
template <typename F, typename Announce, typename Parked>
Status park_until(std::atomic<std::uint32_t>& epoch, std::atomic<std::uint32_t>& waiters, Deadline deadline,
                  const std::atomic<bool>* abandon, F try_once, Announce announce, Parked parked,
                  Clock::duration max_park = kMaxPark) {
  Status st = Status::kOk;
  // Spin first: a partner that keeps pace answers within it, at no system
  // call. The spin stops at the deadline, so one that has passed makes this a
  // single try, and a short one a spin that never gives the core away.
  const bool timed = deadline != Deadline::max();
  for (int i = 0; i < kSpins; ++i) {
    if (try_once(&st) == Try::kDone) return st;
    if (timed && i % kClockEvery == 0 && Clock::now() >= deadline) return Status::kTimeout;
    cpu_relax();
  }
  for (int i = 0; i < kYields; ++i) {
    if (try_once(&st) == Try::kDone) return st;
    if (timed && Clock::now() >= deadline) return Status::kTimeout;
    sched_yield();
  }
  for (;;) {
    const std::uint32_t seen = epoch.load(std::memory_order_seq_cst);
    if (try_once(&st) == Try::kDone) return st;
    if (abandon != nullptr && abandon->load(std::memory_order_acquire)) return Status::kAbandoned;
    const auto now = Clock::now();
    if (now >= deadline) return Status::kTimeout;
    const auto park = std::min<Clock::duration>(deadline - now, max_park);
    // Announce ourselves, then re-check the epoch: a waker bumps the epoch
    // before reading waiters, so one of us sees the other.
    waiters.fetch_add(1, std::memory_order_seq_cst);
    announce();
    if (epoch.load(std::memory_order_seq_cst) == seen) {
      futex_wait(&epoch, seen, std::chrono::duration_cast<std::chrono::nanoseconds>(park));
    }
    waiters.fetch_sub(1, std::memory_order_seq_cst);
    parked(now);
  }
}

}  // namespace pyfastq::detail
