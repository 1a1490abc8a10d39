// The ring's two index queues (free slots, ready slots): Vyukov bounded MPMC
// queues of slot indices in the block, with the futex wake-ups of their
// poppers and the waits that park them.
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "futex.h"
#include "park.h"
#include "pyfastq/ring.h"

namespace pyfastq::detail {

// A popper that finds its queue empty spins this long before it parks (see spin_first).
inline constexpr auto kSpinFirst = std::chrono::microseconds(50);

// wake_at when no parked popper needs anything.
inline constexpr std::uint64_t kNobody = ~std::uint64_t{0};

// Wakes parked poppers if the queue now holds what the neediest of them asked for.
inline void notify(IndexQueueState& q) noexcept {
  q.epoch.fetch_add(1, std::memory_order_seq_cst);
  if (q.waiters.load(std::memory_order_seq_cst) == 0) return;
  std::uint64_t need = q.wake_at.load(std::memory_order_seq_cst);
  if (q.tail.load(std::memory_order_seq_cst) < need) return;
  // Re-arm before waking: woken poppers that still lack elements register
  // again. If a popper lowered wake_at meanwhile, keep its value.
  q.wake_at.compare_exchange_strong(need, kNobody, std::memory_order_seq_cst);
  futex_wake_all(&q.epoch);
}

// Wakes every parked popper, whatever it needs (state changes, drains).
inline void notify_all(IndexQueueState& q) noexcept {
  q.epoch.fetch_add(1, std::memory_order_seq_cst);
  if (q.waiters.load(std::memory_order_seq_cst) != 0) futex_wake_all(&q.epoch);
}

// Registers that a popper needs the tail to reach `need` (keeps the smallest).
inline void want_tail(IndexQueueState& q, std::uint64_t need) noexcept {
  std::uint64_t cur = q.wake_at.load(std::memory_order_seq_cst);
  while (need < cur && !q.wake_at.compare_exchange_weak(cur, need, std::memory_order_seq_cst)) {
  }
}

inline bool ended_badly(const std::atomic<std::uint32_t>& state) noexcept {
  const auto s = State(state.load(std::memory_order_acquire));
  return s == State::kCancelled || s == State::kFailed;
}

// Vyukov push. The queue can never be full (every slot index is in one place
// at a time), so this only retries while racing other pushers. Parked
// poppers are not told: the caller notifies, once for all it pushes.
inline void push(IndexQueueState& q, IndexCell* cells, std::uint32_t cap, std::uint32_t value,
                 const std::atomic<std::uint32_t>& state) noexcept {
  std::uint64_t pos = q.tail.load(std::memory_order_relaxed);
  IndexCell* cell;
  std::uint32_t stalls = 0;
  for (;;) {
    cell = &cells[pos % cap];
    const std::uint64_t seq = cell->seq.load(std::memory_order_acquire);
    const auto diff = static_cast<std::int64_t>(seq - pos);
    if (diff == 0) {
      if (q.tail.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) break;
    } else if (diff < 0) {
      // The popper of this cell's previous lap has claimed it but not yet
      // marked it free: a few instructions away, unless it was a process
      // killed in between. That fails the ring; then the index is dropped
      // rather than waited for forever.
      if (++stalls < kSpins) {
        cpu_relax();
      } else {
        if (ended_badly(state)) return;
        sched_yield();
      }
      pos = q.tail.load(std::memory_order_relaxed);
    } else {
      pos = q.tail.load(std::memory_order_relaxed);
    }
  }
  cell->value = value;
  cell->seq.store(pos + 1, std::memory_order_release);
}

// push() and the wake it may owe parked poppers.
inline void push_and_notify(IndexQueueState& q, IndexCell* cells, std::uint32_t cap, std::uint32_t value,
                            const std::atomic<std::uint32_t>& state) noexcept {
  push(q, cells, cap, value, state);
  notify(q);
}

// Pops up to n values, all at once: checks that the next cells are filled,
// then claims them with one CAS. Takes nothing unless at least min_take are
// ready. Returns how many were taken.
inline std::uint32_t pop_n(IndexQueueState& q, IndexCell* cells, std::uint32_t cap, std::uint32_t n,
                           std::uint32_t min_take, std::uint32_t* out) noexcept {
  std::uint64_t pos = q.head.load(std::memory_order_relaxed);
  for (;;) {
    std::uint32_t ready = 0;
    bool moved = false;
    for (; ready < n; ++ready) {
      const std::uint64_t want = pos + ready + 1;
      const std::uint64_t seq = cells[(pos + ready) % cap].seq.load(std::memory_order_acquire);
      const auto diff = static_cast<std::int64_t>(seq - want);
      if (diff < 0) break;  // not filled yet
      if (diff > 0) {       // already taken: another popper moved head
        moved = true;
        break;
      }
    }
    if (moved) {
      pos = q.head.load(std::memory_order_relaxed);
      continue;
    }
    if (ready < min_take || ready == 0) return 0;
    if (q.head.compare_exchange_weak(pos, pos + ready, std::memory_order_relaxed)) {
      for (std::uint32_t i = 0; i < ready; ++i) {
        IndexCell& cell = cells[(pos + i) % cap];
        out[i] = cell.value;
        cell.seq.store(pos + i + cap, std::memory_order_release);
      }
      return ready;
    }
  }
}

// park_until on an index queue, for a popper that needs the queue's tail to
// reach need_tail() (read once it is counted as a waiter). Parked time goes
// to wait_ns (per popper) and blocked_ns (while at least one is parked).
template <typename F, typename Need>
Status wait_until(IndexQueueState& q, Deadline deadline, const std::atomic<bool>* abandon, F try_once,
                  Need need_tail, Clock::duration max_park = kMaxPark) {
  return park_until(
      q.epoch, q.waiters, deadline, abandon, try_once,
      [&] {
        want_tail(q, need_tail());
        if (q.parked.fetch_add(1, std::memory_order_seq_cst) == 0) {
          q.parked_since.store(clock_ns(), std::memory_order_seq_cst);
        }
      },
      [&](Clock::time_point since) {
        q.wait_ns.fetch_add(
            static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - since).count()),
            std::memory_order_relaxed);
        // Read before leaving: once parked drops to 0, the next popper to park restarts the clock.
        const std::uint64_t began = q.parked_since.load(std::memory_order_seq_cst);
        if (q.parked.fetch_sub(1, std::memory_order_seq_cst) == 1) {
          const std::uint64_t now = clock_ns();
          if (now > began) q.blocked_ns.fetch_add(now - began, std::memory_order_relaxed);
        }
      },
      max_park);
}

// park_until on an index queue, for a popper that needs `n` elements.
template <typename F>
Status wait_until(IndexQueueState& q, std::uint32_t n, Deadline deadline, const std::atomic<bool>* abandon,
                  F try_once) {
  return wait_until(q, deadline, abandon, try_once, [&] { return q.head.load(std::memory_order_seq_cst) + n; });
}

// Tries until kSpinFirst has passed (or the deadline, or the abandon flag),
// if no other popper of `q` is spinning. A partner that keeps pace pushes
// every few microseconds, and each push to a parked popper costs the pusher
// a futex wake and the popper a trip through the scheduler: a popper that
// spins across the gap costs nobody but its own core. One spinner per
// queue at a time, so that many producers of a full ring do not all burn a
// core. True if try_once finished (*st).
template <typename F>
bool spin_first(IndexQueueState& q, Deadline deadline, const std::atomic<bool>* abandon, F try_once, Status* st) {
  if (deadline != Deadline::max() && Clock::now() >= deadline) return false;  // a single try: not a spinner
  std::uint32_t none = 0;
  if (!q.spinners.compare_exchange_strong(none, 1, std::memory_order_acquire, std::memory_order_relaxed)) return false;
  const Deadline until = std::min<Deadline>(deadline, Clock::now() + kSpinFirst);
  bool done = false;
  for (int i = 0;; ++i) {
    if (try_once(st) == Try::kDone) {
      done = true;
      break;
    }
    if (abandon != nullptr && abandon->load(std::memory_order_acquire)) break;
    if (i % kClockEvery == 0 && Clock::now() >= until) break;
    cpu_relax();
  }
  q.spinners.store(0, std::memory_order_release);
  return done;
}

}  // namespace pyfastq::detail
