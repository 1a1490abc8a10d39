// Ordered puts: the turnstile that lets P producers commit in a fixed
// round-robin, skipping those that have finished.
#include <atomic>
#include <cstdint>

#include "futex.h"
#include "park.h"
#include "pyfastq/ring.h"

namespace pyfastq {

using namespace detail;

bool Ring::begin_turns(std::uint32_t workers) noexcept { return begin_turns_at(workers, 0); }

bool Ring::begin_turns_at(std::uint32_t workers, std::uint64_t first) noexcept {
  if (workers == 0 || workers > kMaxTurnWorkers || first == kNoTurn) return false;
  Turnstile& t = header_->turns;
  for (std::uint32_t w = 0; w < kMaxTurnWorkers; ++w) t.finished_at[w].store(kNoTurn, std::memory_order_relaxed);
  t.workers = workers;
  t.turn.store(first, std::memory_order_seq_cst);
  return true;
}

Status Ring::wait_turn(std::uint64_t ticket, Deadline deadline, const std::atomic<bool>* abandon) noexcept {
  Turnstile& t = header_->turns;
  return park_until(
      t.epoch, t.waiters, deadline, abandon,
      [&](Status* out) {
        if (t.turn.load(std::memory_order_seq_cst) == ticket) {
          *out = Status::kOk;
          return Try::kDone;
        }
        const State s = state();
        if (s == State::kOpen) return Try::kPending;
        *out = status_of(s);
        return Try::kDone;
      },
      [] {}, [](Clock::time_point) {});
}

void Ring::pass_turn(std::uint64_t ticket) noexcept {
  // Only the ticket's producer moves the turn off it, so a plain store will do.
  header_->turns.turn.store(ticket + 1, std::memory_order_seq_cst);
  skip_finished_turns();
}

void Ring::finish_turns(std::uint32_t worker, std::uint64_t count) noexcept {
  if (worker >= header_->turns.workers) return;
  header_->turns.finished_at[worker].store(count, std::memory_order_seq_cst);
  skip_finished_turns();
}

// Moves the turn past tickets of producers that have finished, then wakes the
// waiters. Both the producer passing the turn and a producer finishing call
// it after their own store: with seq_cst on both sides at least one of them
// sees the other's store, and the CAS lets only one of them move the turn.
void Ring::skip_finished_turns() noexcept {
  Turnstile& t = header_->turns;
  const std::uint64_t p = t.workers;
  std::uint64_t cur = t.turn.load(std::memory_order_seq_cst);
  while (cur != kNoTurn && p != 0) {
    std::uint64_t next = cur;
    std::uint64_t checked = 0;
    while (checked < p && t.finished_at[next % p].load(std::memory_order_seq_cst) <= next / p) {
      ++next;
      ++checked;
    }
    if (checked == p) next = kNoTurn;
    if (next == cur) break;
    if (t.turn.compare_exchange_strong(cur, next, std::memory_order_seq_cst)) cur = next;
  }
  t.epoch.fetch_add(1, std::memory_order_seq_cst);
  if (t.waiters.load(std::memory_order_seq_cst) != 0) futex_wake_all(&t.epoch);
}

}  // namespace pyfastq
