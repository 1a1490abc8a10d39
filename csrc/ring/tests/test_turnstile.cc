// The turnstile for ordered puts: P producers commit in a fixed round-robin
// (ticket k*P + i is producer i's k-th element), skipping those that have
// finished, while they fill their elements in parallel; in threads and in
// forked processes.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "check.h"
#include "ring_helpers.h"

using namespace pyfastq;
using namespace ring_test;
using namespace std::chrono_literals;

namespace {

// Whether at least n ordered producers are parked (or about to park) waiting for their turn.
std::function<bool()> turn_waiters(const Ring& r, std::uint32_t n) {
  return [&r, n] { return r.header()->turns.waiters.load() >= n; };
}

// Producer `i` of `p` ordered producers; its k-th element is ticket k*p + i.
// fill_first: acquire and fill the slot before waiting for the turn, the
// parallel fill the turnstile exists for; otherwise wait, then acquire.
void ordered_worker(Ring& r, std::uint32_t i, std::uint32_t p, std::uint32_t count, bool fill_first,
                    unsigned max_sleep_us, std::uint32_t seed) {
  std::mt19937 rng(seed);
  for (std::uint32_t k = 0; k < count; ++k) {
    if (max_sleep_us != 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % max_sleep_us));
    const std::uint64_t ticket = std::uint64_t(k) * p + i;
    const Item item = item_of(i, k);
    std::uint32_t slot = 0;
    if (fill_first) {
      CHECK_EQ(acquire(r, &slot, in(20000ms)), Status::kOk);
      std::memcpy(r.slot_data(slot), &item, sizeof item);
    }
    CHECK_EQ(r.wait_turn(ticket, in(20000ms)), Status::kOk);
    if (!fill_first) {
      CHECK_EQ(acquire(r, &slot, in(20000ms)), Status::kOk);
      std::memcpy(r.slot_data(slot), &item, sizeof item);
    }
    r.commit(slot);
    r.pass_turn(ticket);
  }
  r.finish_turns(i, count);
}

// Round-robin over the workers, each dropping out after its last element.
std::vector<Item> round_robin(const std::vector<std::uint32_t>& counts) {
  std::uint32_t most = 0;
  for (std::uint32_t c : counts) most = std::max(most, c);
  std::vector<Item> out;
  for (std::uint32_t k = 0; k < most; ++k) {
    for (std::uint32_t i = 0; i < counts.size(); ++i) {
      if (k < counts[i]) out.push_back(item_of(i, k));
    }
  }
  return out;
}

void consume_in_order(Ring& r, const std::vector<std::uint32_t>& counts) {
  const std::vector<Item> want = round_robin(counts);
  std::uint64_t want_sum = 0, got_sum = 0;
  for (std::size_t n = 0; n < want.size(); ++n) {
    std::uint32_t slot, got;
    CHECK_EQ(r.pop(1, &slot, &got, false, in(20000ms)), Status::kOk);
    CHECK_EQ(got, 1);
    const Item item = read_item(r, slot);
    CHECK_EQ(item, want[n]);
    want_sum += want[n].check;
    got_sum += item.check;
    r.release(slot);
  }
  CHECK_EQ(got_sum, want_sum);
  std::uint32_t slot, got;
  CHECK_EQ(r.pop(1, &slot, &got, false, in(20ms)), Status::kTimeout);  // and nothing beyond them
}

void ordered_threads(const std::vector<std::uint32_t>& counts, std::uint32_t capacity, bool fill_first,
                     unsigned max_sleep_us, std::uint32_t seed) {
  auto m = private_ring(capacity);
  Ring& r = m->ring();
  const auto p = static_cast<std::uint32_t>(counts.size());
  CHECK(r.begin_turns(p));
  Barrier barrier(static_cast<int>(p) + 1);
  std::vector<std::thread> workers;
  for (std::uint32_t i = 0; i < p; ++i) {
    workers.emplace_back([&, i] {
      barrier.wait();
      ordered_worker(r, i, p, counts[i], fill_first, max_sleep_us, seed * 1000 + i);
    });
  }
  barrier.wait();
  consume_in_order(r, counts);
  for (auto& t : workers) t.join();
  // The turn is kNoTurn only once every worker has finished, which may be after its last element arrived.
  CHECK_EQ(r.turn(), kNoTurn);
}

}  // namespace

TEST(turnstile_skips_finished_workers) {
  auto m = private_ring(4);
  Ring& r = m->ring();
  CHECK(!r.begin_turns(0));
  CHECK(!r.begin_turns(kMaxTurnWorkers + 1));
  CHECK(r.begin_turns(3));
  CHECK_EQ(r.turn(), 0);
  r.finish_turns(1, 1);  // worker 1 makes one element: ticket 1 stays, 4, 7, ... go
  CHECK_EQ(r.turn(), 0);
  for (std::uint64_t t = 0; t < 4; ++t) {
    CHECK_EQ(r.turn(), t);
    r.pass_turn(t);
  }
  CHECK_EQ(r.turn(), 5);  // 4 was worker 1's second
  r.finish_turns(2, 1);  // 5 is worker 2's second: skipped, and 6 is worker 0's third
  CHECK_EQ(r.turn(), 6);
  r.finish_turns(0, 2);  // 6, 7, 8: nobody has a third element
  CHECK_EQ(r.turn(), kNoTurn);
  r.finish_turns(kMaxTurnWorkers - 1, 0);  // not a worker of this round: ignored
  CHECK_EQ(r.turn(), kNoTurn);

  // A ring runs rounds of ordered producers one after another.
  CHECK(r.begin_turns(2));
  CHECK_EQ(r.turn(), 0);
  r.finish_turns(0, 0);  // a worker with nothing to put
  CHECK_EQ(r.turn(), 1);
  r.pass_turn(1);
  CHECK_EQ(r.turn(), 3);  // 2 was worker 0's
  r.pass_turn(3);
  CHECK_EQ(r.turn(), 5);  // worker 1 has not said it is done
  r.finish_turns(1, 2);
  CHECK_EQ(r.turn(), kNoTurn);

  // As many workers as the header has room for, none with anything to put.
  CHECK(r.begin_turns(kMaxTurnWorkers));
  for (std::uint32_t w = kMaxTurnWorkers; w-- > 1;) r.finish_turns(w, 0);
  CHECK_EQ(r.turn(), 0);  // worker 0 has not finished
  r.finish_turns(0, 0);
  CHECK_EQ(r.turn(), kNoTurn);
}

TEST(wait_turn_times_out_and_abandons_keeping_the_turn) {
  auto m = private_ring(4);
  Ring& r = m->ring();
  CHECK(r.begin_turns(2));
  CHECK_EQ(r.wait_turn(0, in(0ms)), Status::kOk);
  const auto t0 = Clock::now();
  CHECK_EQ(r.wait_turn(1, in(30ms)), Status::kTimeout);
  CHECK_GE(Clock::now() - t0, 30ms);
  std::atomic<bool> raised{true};
  CHECK_EQ(r.wait_turn(1, no_deadline(), &raised), Status::kAbandoned);

  std::atomic<bool> abandon{false};
  Status result{};
  const auto woke = wake_latency([&] { result = r.wait_turn(1, no_deadline(), &abandon); }, turn_waiters(r, 1),
                                 [&] {
                                   abandon = true;
                                   r.wake_all();  // the flag alone moves no futex word
                                 });
  CHECK_EQ(result, Status::kAbandoned);
  CHECK_LT(woke, 100ms);  // woken, not found at its next 200 ms re-check
  CHECK_EQ(r.state(), State::kOpen);

  // None of that moved the turn: the put can be retried with the same ticket.
  CHECK_EQ(r.turn(), 0);
  CHECK_EQ(r.wait_turn(0, in(0ms)), Status::kOk);
  r.pass_turn(0);
  CHECK_EQ(r.wait_turn(1, in(0ms)), Status::kOk);
}

static void check_turn_wakes(const std::function<void(Ring&)>& end, Status want) {
  auto m = private_ring(4);
  Ring& r = m->ring();
  CHECK(r.begin_turns(2));
  Status result{};
  const auto woke = wake_latency([&] { result = r.wait_turn(1); }, turn_waiters(r, 1), [&] { end(r); });
  CHECK_EQ(result, want);
  // Just parked: a waiter the end failed to wake would sleep out its 200 ms park.
  CHECK_LE(woke, 100ms);
  CHECK_EQ(r.wait_turn(3), want);  // and once ended, at once
}

TEST(turn_waiters_wake_when_the_ring_ends) {
  check_turn_wakes([](Ring& r) { r.close(); }, Status::kClosed);
  check_turn_wakes([](Ring& r) { r.close(true); }, Status::kCancelled);
  check_turn_wakes([](Ring& r) { r.fail("x", 1); }, Status::kFailed);
}

TEST(turn_waiters_wake_when_a_worker_finishes_empty) {
  auto m = private_ring(4);
  Ring& r = m->ring();
  CHECK(r.begin_turns(3));
  std::atomic<std::int64_t> finished{0};
  std::thread empty([&] {
    // Workers 1 and 2 parked on their tickets, behind this worker's ticket 0.
    wait_for(turn_waiters(r, 2));
    finished = now_ns();
    r.finish_turns(0, 0);
  });
  std::thread w1([&] { ordered_worker(r, 1, 3, 3, false, 0, 1); });
  std::thread w2([&] { ordered_worker(r, 2, 3, 2, false, 0, 2); });
  std::uint32_t s, got;
  CHECK_EQ(r.pop(1, &s, &got, false, in(5000ms)), Status::kOk);
  // A missed wake would cost the rest of a 200 ms park.
  const std::chrono::nanoseconds latency(now_ns() - finished.load());
  CHECK_LT(latency, 100ms);
  CHECK_EQ(read_item(r, s), item_of(1, 0));
  r.release(s);
  const Item rest[] = {item_of(2, 0), item_of(1, 1), item_of(2, 1), item_of(1, 2)};
  for (const Item& want : rest) {
    CHECK_EQ(r.pop(1, &s, &got, false, in(5000ms)), Status::kOk);
    CHECK_EQ(read_item(r, s), want);
    r.release(s);
  }
  empty.join();
  w1.join();
  w2.join();
  CHECK_EQ(r.turn(), kNoTurn);
}

TEST(ordered_threads_commit_round_robin) {
  // Unequal counts, so workers drop out of the round at different points.
  for (std::uint32_t seed = 1; seed <= 3; ++seed) ordered_threads({5, 2, 7}, 4, false, 2000, seed);
  // A worker with nothing to put finishes at once and is never waited for.
  ordered_threads({3, 0, 2}, 4, false, 2000, 4);
  ordered_threads({0, 4, 1}, 4, true, 2000, 5);
  // No sleeps: the turn is handed over as fast as it goes, and every worker
  // holds a filled slot while it waits (capacity >= workers).
  ordered_threads({500, 0, 1000, 200}, 4, true, 0, 6);
}

TEST(ordered_puts_across_processes) {
  const std::vector<std::uint32_t> counts = {40, 0, 15, 70};
  const auto p = static_cast<std::uint32_t>(counts.size());
  auto m = shared_ring(4);  // capacity >= workers: each may hold a filled slot while it waits its turn
  Ring& r = m->ring();
  CHECK(r.begin_turns(p));  // before the workers start, as begin_turns requires
  Gate gate;
  std::vector<pid_t> kids;
  for (std::uint32_t i = 0; i < p; ++i) {
    kids.push_back(spawn([&, i] {
      auto mine = RingMemory::attach(m->fd());
      gate.child_wait();
      ordered_worker(mine->ring(), i, p, counts[i], true, 300, 100 + i);
    }));
  }
  gate.open();
  consume_in_order(r, counts);
  for (pid_t k : kids) wait_ok(k);
  CHECK_EQ(r.turn(), kNoTurn);
}

int main() { return run_tests(); }
