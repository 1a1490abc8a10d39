// The shuffled ring's consumers: a pool of ready slot indices, under a futex
// lock in the block, from which each pop picks uniformly at random.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "futex.h"
#include "index_queue.h"
#include "park.h"
#include "pyfastq/ring.h"
#include "random.h"

namespace pyfastq {

using namespace detail;

namespace {

// A pool lock held at most this long by a live holder; the ring ending is
// the only reason to wait longer (a holder in a process that died).
constexpr auto kDrainLockWait = std::chrono::seconds(1);

}  // namespace

Status Ring::pop_shuffled(std::uint32_t n, std::uint32_t* slots, std::uint32_t* got, bool allow_smaller,
                          Deadline deadline, const std::atomic<bool>* abandon) noexcept {
  ShufflePool& pool = header_->pool;
  const std::uint32_t keep = pool.min_after_dequeue;
  // n + keep > capacity is accepted: such a batch cannot form while open (the ring never holds n + keep),
  // so it waits for close(), after which nothing is held back.
  if (n > header_->capacity) return Status::kTooLarge;
  if (n == 0) return Status::kOk;
  return wait_until(
      header_->ready_q, deadline, abandon,
      [&](Status* out) {
        const State s = state();
        if (s == State::kCancelled || s == State::kFailed) {
          *out = status_of(s);
          return Try::kDone;
        }
        if (!lock_pool(no_deadline(), /*give_up_once_ended=*/true)) {
          *out = status_of(state());
          return Try::kDone;
        }
        absorb_ready();
        const std::uint32_t size = pool.size.load(std::memory_order_relaxed);
        std::uint32_t take = 0;
        Try result = Try::kPending;
        if (s == State::kOpen) {
          if (size >= keep + n) take = n;
        } else if (size >= n) {  // closed: min_after_dequeue no longer holds anything back
          take = n;
        } else if (inflight_total() == 0) {
          // Nothing more will come; what the last puts committed is in the ready queue now.
          absorb_ready();
          const std::uint32_t left = pool.size.load(std::memory_order_relaxed);
          take = left >= n ? n : allow_smaller ? left : 0;
          if (take == 0) {
            *out = Status::kClosed;
            result = Try::kDone;
          }
        }
        if (take != 0) {
          *got = pick(take, slots);
          record_taken(slots, *got);
          *out = Status::kOk;
          result = Try::kDone;
        }
        unlock_pool();
        return result;
      },
      [&] {
        // The tail the ready queue must reach before this pop can go: read
        // under the lock, where the pool's size and the queue's head move together.
        const std::uint64_t head = header_->ready_q.head.load(std::memory_order_seq_cst);
        if (state() != State::kOpen || !lock_pool(Clock::now() + kDrainLockWait, true)) return head + 1;
        const std::uint64_t at = header_->ready_q.head.load(std::memory_order_seq_cst);
        const std::uint64_t have = pool.size.load(std::memory_order_relaxed);
        unlock_pool();
        const std::uint64_t want = std::uint64_t(keep) + n;
        return at + (want > have ? want - have : 1);
      });
}

// Drepper's futex mutex ("Futexes Are Tricky", mutex 2), in the block so it
// works across processes. Gives up at `give_up`, or once the ring has been
// cancelled or has failed if asked: a holder that died cannot hang anyone.
bool Ring::lock_pool(Deadline give_up, bool give_up_once_ended) noexcept {
  std::atomic<std::uint32_t>& word = header_->pool.lock;
  std::uint32_t c = 0;
  for (int i = 0; i < kSpins; ++i) {
    c = 0;
    if (word.compare_exchange_weak(c, 1, std::memory_order_acquire, std::memory_order_relaxed)) return true;
    cpu_relax();
  }
  if (c != 2) c = word.exchange(2, std::memory_order_acquire);
  while (c != 0) {
    if (give_up_once_ended && ended_badly(header_->state)) return false;
    const auto now = Clock::now();
    if (now >= give_up) return false;
    futex_wait(&word, 2,
               std::chrono::duration_cast<std::chrono::nanoseconds>(std::min<Clock::duration>(give_up - now, kMaxPark)));
    c = word.exchange(2, std::memory_order_acquire);
  }
  return true;
}

void Ring::unlock_pool() noexcept {
  if (header_->pool.lock.exchange(0, std::memory_order_release) == 2) futex_wake_all(&header_->pool.lock);
}

// Moves every ready index into the pool. Under the pool lock.
void Ring::absorb_ready() noexcept {
  ShufflePool& pool = header_->pool;
  std::uint32_t size = pool.size.load(std::memory_order_relaxed);
  const std::uint32_t cap = header_->capacity;
  // Every slot index is in one place at a time, so the pool never overflows.
  while (size < cap) {
    const std::uint32_t got = pop_n(header_->ready_q, ready_cells(), cap, cap - size, 1, pool_cells() + size);
    if (got == 0) break;
    size += got;
  }
  pool.size.store(size, std::memory_order_relaxed);
}

// Takes n indices from the pool (which holds at least n), each uniformly at
// random among those left: a partial Fisher-Yates. Under the pool lock.
std::uint32_t Ring::pick(std::uint32_t n, std::uint32_t* slots) noexcept {
  ShufflePool& pool = header_->pool;
  std::uint32_t* cells = pool_cells();
  std::uint32_t size = pool.size.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::uint32_t r = random_below(pool.rng, size);
    slots[i] = cells[r];
    cells[r] = cells[--size];
  }
  pool.size.store(size, std::memory_order_relaxed);
  // Only the lock holder writes it: a plain store, no read-modify-write.
  pool.gets.store(pool.gets.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  return n;
}

// The cancelled ring's pool goes back to the producers (see drain_to_free).
void Ring::drain_pool() noexcept {
  // A consumer holds the pool lock for microseconds; one that died holding it leaves the pool as it was.
  if (!shuffled() || !lock_pool(Clock::now() + kDrainLockWait, false)) return;
  ShufflePool& pool = header_->pool;
  const std::uint32_t size = pool.size.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < size; ++i) release(pool_cells()[i]);
  pool.size.store(0, std::memory_order_relaxed);
  unlock_pool();
}

}  // namespace pyfastq
