// Single-thread semantics of the ring, and the wake-ups of blocked callers.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "ring_helpers.h"

using namespace pyfastq;
using namespace ring_test;
using namespace std::chrono_literals;

TEST(layout_is_aligned) {
  Component c[3] = {{0, 1}, {0, 100}, {0, 0}};
  const std::uint64_t stride = Ring::layout(c, 3);
  CHECK_EQ(c[0].offset, 0);
  CHECK_EQ(c[1].offset, 64);
  CHECK_EQ(c[2].offset, 192);
  CHECK_EQ(stride % kSlotAlignment, 0);
  CHECK_GE(stride, 192);
  auto m = private_ring(5, {1, 100, 3});
  for (std::uint32_t s = 0; s < 5; ++s) {
    CHECK_EQ(reinterpret_cast<std::uintptr_t>(m->ring().slot_data(s)) % kSlotAlignment, 0);
  }
}

// Sizes past 64 bits saturate rather than wrap: a wrapped size would lay a
// huge element out in a few bytes.
TEST(layout_and_bytes_needed_saturate) {
  Component c[2] = {{0, kTooManyBytes - 10}, {0, 100}};
  CHECK_EQ(Ring::layout(c, 2), kTooManyBytes);
  CHECK_EQ(Ring::bytes_needed(4, std::uint64_t{1} << 62), kTooManyBytes);
  CHECK_EQ(Ring::bytes_needed(4, kTooManyBytes), kTooManyBytes);
  CHECK_LT(Ring::bytes_needed(4, std::uint64_t{1} << 40), std::uint64_t{5} << 40);
}

// 2^20 slots of 256 MiB: 256 TiB, beyond a 47-bit address space, so the
// mapping fails at once on any machine, touching no memory.
TEST(a_ring_too_large_for_memory_says_how_many_bytes) {
  const std::uint32_t capacity = 1u << 20;
  const std::uint64_t slot = std::uint64_t{1} << 28;
  bool thrown = false;
  try {
    private_ring(capacity, {slot});
  } catch (const RingAllocError& e) {
    thrown = true;
    CHECK_EQ(e.bytes(), Ring::bytes_needed(capacity, slot));
    const std::string want = "a ring of 1048576 slots x 268435456 bytes needs " + std::to_string(e.bytes()) +
                             " bytes (256.0 TiB) and they could not be allocated (";
    CHECK_EQ(std::string(e.what()).substr(0, want.size()), want);
  }
  CHECK(thrown);
  thrown = false;
  try {
    private_ring(4, {kTooManyBytes});
  } catch (const std::bad_alloc& e) {  // RingAllocError is one
    thrown = true;
    CHECK_EQ(std::string(e.what()),
             "a ring of 4 slots x more than 2^64 bytes needs more than 2^64 bytes, which no machine can allocate");
  }
  CHECK(thrown);
}

TEST(fifo_order_and_capacity) {
  auto m = private_ring(4);
  Ring& r = m->ring();
  for (int i = 0; i < 4; ++i) put_value(r, i);
  std::uint32_t s;
  CHECK(!r.try_acquire(&s));  // full
  CHECK_EQ(r.size(), 4);
  std::uint32_t slots[4], got;
  for (int i = 0; i < 4; ++i) {
    CHECK_EQ(r.pop(1, slots, &got), Status::kOk);
    CHECK_EQ(got, 1);
    CHECK_EQ(read_value<int>(r, slots[0]), i);
    r.release(slots[0]);
  }
  CHECK_EQ(r.size(), 0);
  // Wrap around many laps.
  for (int i = 0; i < 1000; ++i) {
    put_value(r, i);
    CHECK_EQ(r.pop(1, slots, &got), Status::kOk);
    CHECK_EQ(read_value<int>(r, slots[0]), i);
    r.release(slots[0]);
  }
  const Counters c = r.counters();
  CHECK_EQ(c.puts, 1004);
  CHECK_EQ(c.gets, 1004);
  CHECK_EQ(c.size, 0);
}

TEST(pop_n_is_all_or_nothing) {
  auto m = private_ring(8);
  Ring& r = m->ring();
  for (int i = 0; i < 3; ++i) put_value(r, i);
  std::uint32_t slots[8], got = 99;
  CHECK_EQ(r.pop(4, slots, &got, false, in(20ms)), Status::kTimeout);
  CHECK_EQ(got, 0);
  CHECK_EQ(r.size(), 3);
  put_value(r, 3);
  CHECK_EQ(r.pop(4, slots, &got), Status::kOk);
  CHECK_EQ(got, 4);
  for (int i = 0; i < 4; ++i) CHECK_EQ(read_value<int>(r, slots[i]), i);
  for (int i = 0; i < 4; ++i) r.release(slots[i]);
  CHECK_EQ(r.pop(9, slots, &got), Status::kTooLarge);
}

TEST(acquire_many_takes_all_or_nothing_holding_none) {
  auto m = private_ring(4);
  Ring& r = m->ring();
  put_value(r, 1);
  std::uint32_t slots[4], got = 99;
  CHECK_EQ(acquire_many(r, 4, slots, &got, false, in(20ms)), Status::kTimeout);
  CHECK_EQ(got, 0);
  CHECK_EQ(acquire_many(r, 3, slots, &got), Status::kOk);  // nothing was held by the timed-out call
  CHECK_EQ(got, 3);
  for (std::uint32_t i = 0; i < 3; ++i) r.abort(slots[i]);
  CHECK_EQ(acquire_many(r, 4, slots, &got, true), Status::kOk);  // as many as are free
  CHECK_EQ(got, 3);
  for (std::uint32_t i = 0; i < 3; ++i) r.commit(slots[i]);
  CHECK_EQ(r.size(), 4);
  CHECK_EQ(acquire_many(r, 5, slots, &got), Status::kTooLarge);
  r.close();
  CHECK_EQ(acquire_many(r, 1, slots, &got, true), Status::kClosed);
  std::uint32_t out[4];
  CHECK_EQ(r.pop(4, out, &got), Status::kOk);  // in-flight accounting drained cleanly
  CHECK_EQ(got, 4);
  for (std::uint32_t i = 0; i < 4; ++i) r.release(out[i]);
  CHECK_EQ(r.pop(1, out, &got), Status::kClosed);
}

TEST(abort_enqueues_nothing) {
  auto m = private_ring(2);
  Ring& r = m->ring();
  std::uint32_t s;
  CHECK_EQ(acquire(r, &s), Status::kOk);
  r.abort(s);
  CHECK_EQ(r.size(), 0);
  std::uint32_t a, b;
  CHECK(r.try_acquire(&a));  // both slots are free again
  CHECK(r.try_acquire(&b));
  r.abort(a);
  r.abort(b);
  std::uint32_t slots[1], got;
  CHECK_EQ(r.pop(1, slots, &got, false, in(10ms)), Status::kTimeout);
}

TEST(close_drains_then_ends) {
  auto m = private_ring(4);
  Ring& r = m->ring();
  for (int i = 0; i < 3; ++i) put_value(r, i);
  CHECK(r.close());
  CHECK(!r.close());  // once
  std::uint32_t s;
  Status why;
  CHECK(!r.try_acquire(&s, &why));
  CHECK_EQ(why, Status::kClosed);
  CHECK_EQ(acquire(r, &s), Status::kClosed);
  std::uint32_t slots[4], got;
  // Fewer than n left after close: nothing taken, the elements stay...
  CHECK_EQ(r.pop(4, slots, &got), Status::kClosed);
  CHECK_EQ(got, 0);
  CHECK_EQ(r.size(), 3);
  // ...unless the caller takes a smaller final batch.
  CHECK_EQ(r.pop(4, slots, &got, true), Status::kOk);
  CHECK_EQ(got, 3);
  for (std::uint32_t i = 0; i < got; ++i) CHECK_EQ(read_value<int>(r, slots[i]), i);
  for (std::uint32_t i = 0; i < got; ++i) r.release(slots[i]);
  CHECK_EQ(r.pop(1, slots, &got, true), Status::kClosed);
}

TEST(a_put_begun_before_close_still_arrives) {
  auto m = private_ring(4);
  Ring& r = m->ring();
  std::uint32_t s;
  CHECK_EQ(acquire(r, &s), Status::kOk);
  r.close();
  std::uint32_t slots[1], got;
  CHECK_EQ(r.pop(1, slots, &got, false, in(20ms)), Status::kTimeout);  // not drained: a producer is filling
  int v = 42;
  std::memcpy(r.slot_data(s), &v, sizeof v);
  r.commit(s);
  CHECK_EQ(r.pop(1, slots, &got), Status::kOk);
  CHECK_EQ(read_value<int>(r, slots[0]), 42);
  r.release(slots[0]);
  CHECK_EQ(r.pop(1, slots, &got), Status::kClosed);
}

// TF's FIFOQueue rule: close() lets a put already waiting for room complete.
TEST(a_put_waiting_for_room_completes_after_close) {
  auto m = private_ring(2);
  Ring& r = m->ring();
  put_value(r, 1);
  put_value(r, 2);
  Status result{};
  Background producer([&] { result = try_put_value(r, 3); });
  wait_parked(r.header()->free_q);
  CHECK(r.close());
  std::uint32_t s;
  CHECK_EQ(acquire(r, &s, in(10ms)), Status::kClosed);  // a put beginning now is refused
  std::uint32_t slots[1], got;
  for (int want = 1; want <= 3; ++want) {
    CHECK_EQ(r.pop(1, slots, &got, false, in(5000ms)), Status::kOk);
    CHECK_EQ(read_value<int>(r, slots[0]), want);
    r.release(slots[0]);
  }
  CHECK(producer.join_within(5s));
  CHECK_EQ(result, Status::kOk);
  CHECK_EQ(r.pop(1, slots, &got), Status::kClosed);
}

// A consumer of a closed ring waits for the puts under way before it ends.
TEST(a_consumer_waits_for_a_put_begun_before_close) {
  auto m = private_ring(1);
  Ring& r = m->ring();
  CHECK(r.begin_put());
  CHECK(r.close());
  CHECK(!r.begin_put());
  std::uint32_t slots[1], got;
  CHECK_EQ(r.pop(1, slots, &got, false, in(20ms)), Status::kTimeout);
  std::uint32_t s;
  CHECK_EQ(r.acquire_begun(1, &s, &got, false, in(1000ms)), Status::kOk);  // through close
  CHECK_EQ(got, 1);
  r.end_put();
  int v = 9;
  std::memcpy(r.slot_data(s), &v, sizeof v);
  r.commit(s);
  CHECK_EQ(r.pop(1, slots, &got), Status::kOk);
  CHECK_EQ(read_value<int>(r, slots[0]), 9);
  r.release(slots[0]);
  CHECK_EQ(r.pop(1, slots, &got, false, in(1000ms)), Status::kClosed);
}

// close(cancel=true) and fail() refuse puts that are waiting.
TEST(cancel_and_fail_refuse_waiting_puts) {
  for (const bool cancel : {true, false}) {
    auto m = private_ring(1);
    Ring& r = m->ring();
    put_value(r, 1);
    Status result{};
    const auto woke = wake_latency(
        [&] {
          std::uint32_t s[1], got;
          result = acquire_many(r, 1, s, &got);
        },
        parked_on(r.header()->free_q),
        [&] {
          if (cancel) {
            CHECK(r.close(true));
          } else {
            CHECK(r.fail("boom", 4));
          }
        });
    CHECK_EQ(result, cancel ? Status::kCancelled : Status::kFailed);
    CHECK_LE(woke, 1s);
    CHECK_EQ(r.header()->inflight.load(), 0);
  }
}

TEST(cancel_drops_and_fail_carries_message) {
  auto m = private_ring(4);
  Ring& r = m->ring();
  put_value(r, 1);
  CHECK(r.close(true));
  CHECK_EQ(r.size(), 0);
  std::uint32_t slots[1], got;
  CHECK_EQ(r.pop(1, slots, &got), Status::kCancelled);
  CHECK(!r.fail("late", 4));  // cancelled is final

  auto m2 = private_ring(4);
  Ring& r2 = m2->ring();
  put_value(r2, 1);
  const std::string msg = "ValueError: boom\nTraceback ...";
  CHECK(r2.fail(msg.data(), msg.size()));
  CHECK_EQ(r2.state(), State::kFailed);
  CHECK_EQ(r2.fail_message(), msg);
  CHECK_EQ(r2.pop(1, slots, &got), Status::kFailed);
  std::uint32_t s;
  CHECK_EQ(acquire(r2, &s), Status::kFailed);
  CHECK(!r2.fail("second", 6));  // first failure wins
  CHECK_EQ(r2.fail_message(), msg);
}

TEST(timeouts_leave_state_unchanged) {
  auto m = private_ring(1);
  Ring& r = m->ring();
  put_value(r, 7);
  std::uint32_t s;
  const auto t0 = Clock::now();
  CHECK_EQ(acquire(r, &s, in(50ms)), Status::kTimeout);
  CHECK_GE(Clock::now() - t0, 50ms);
  CHECK_EQ(r.size(), 1);
  std::uint32_t slots[1], got;
  CHECK_EQ(r.pop(1, slots, &got), Status::kOk);
  CHECK_EQ(read_value<int>(r, slots[0]), 7);
  CHECK_EQ(r.pop(1, slots + 0, &got, false, in(30ms)), Status::kTimeout);
  CHECK_EQ(got, 0);
}

TEST(a_deadline_that_has_passed_is_one_try) {
  auto m = private_ring(1);
  Ring& r = m->ring();
  std::uint32_t slots[1], got;
  auto t0 = Clock::now();
  CHECK_EQ(r.pop(1, slots, &got, false, Clock::now()), Status::kTimeout);  // empty
  put_value(r, 7);
  std::uint32_t s;
  CHECK_EQ(acquire(r, &s, Clock::now()), Status::kTimeout);  // full
  CHECK_LT(Clock::now() - t0, 20ms);  // neither spun nor yielded nor parked for long
  CHECK_EQ(r.pop(1, slots, &got, false, Clock::now()), Status::kOk);
  CHECK_EQ(read_value<int>(r, slots[0]), 7);
  r.release(slots[0]);
}

TEST(release_many_frees_every_slot_and_wakes_a_producer) {
  auto m = private_ring(4);
  Ring& r = m->ring();
  for (int i = 0; i < 4; ++i) put_value(r, i);
  std::uint32_t slots[4], got;
  CHECK_EQ(r.pop(4, slots, &got), Status::kOk);
  Status result{};
  std::uint32_t taken = 0;
  const auto woke = wake_latency(
      [&] {
        std::uint32_t three[3];
        result = acquire_many(r, 3, three, &taken);  // parks: no slot is free
        for (std::uint32_t i = 0; i < taken; ++i) r.abort(three[i]);
      },
      parked_on(r.header()->free_q), [&] { r.release_many(slots, 4); });
  CHECK_EQ(result, Status::kOk);
  CHECK_EQ(taken, 3);
  CHECK_LE(woke, 1s);
  for (int i = 0; i < 4; ++i) put_value(r, 10 + i);  // all four are free again
  CHECK_EQ(r.size(), 4);
}

TEST(attach_views_the_same_ring) {
  auto m = private_ring(4);
  put_value(m->ring(), 5);
  Ring other = Ring::attach(m->ring().header(), m->bytes());
  std::uint32_t slots[1], got;
  CHECK_EQ(other.pop(1, slots, &got), Status::kOk);
  CHECK_EQ(read_value<int>(other, slots[0]), 5);
  other.release(slots[0]);
  std::vector<std::uint64_t> garbage(1024, 0x1234);
  bool threw = false;
  try {
    Ring::attach(garbage.data(), garbage.size() * sizeof(std::uint64_t));
  } catch (const std::runtime_error&) {
    threw = true;
  }
  CHECK(threw);
}

TEST(registry_forgets_dead_rings) {
  std::uint64_t id;
  {
    auto m = private_ring(2);
    id = m->id();
    CHECK_EQ(find_ring(id), m);
  }
  CHECK_EQ(find_ring(id), nullptr);
}

// Blocked callers wake on close, cancel, fail and the abandon flag.
static void check_wakes(const std::function<void(Ring&)>& end, Status want_consumer) {
  auto m = private_ring(2);
  Ring& r = m->ring();
  Status result{};
  const auto woke = wake_latency(
      [&] {
        std::uint32_t slots[1], got;
        result = r.pop(1, slots, &got);
      },
      parked_on(r.header()->ready_q), [&] { end(r); });
  CHECK_EQ(result, want_consumer);
  CHECK_LE(woke, 1s);
}

TEST(blocked_consumer_wakes) {
  check_wakes([](Ring& r) { r.close(); }, Status::kClosed);
  check_wakes([](Ring& r) { r.close(true); }, Status::kCancelled);
  check_wakes([](Ring& r) { r.fail("x", 1); }, Status::kFailed);
}

TEST(abandon_flag_wakes_a_waiter) {
  auto m = private_ring(1);
  Ring& r = m->ring();
  std::atomic<bool> abandon{false};
  Status result{};
  const auto woke = wake_latency(
      [&] {
        std::uint32_t slots[1], got;
        result = r.pop(1, slots, &got, false, no_deadline(), &abandon);
      },
      parked_on(r.header()->ready_q),
      [&] {
        abandon = true;
        r.wake_all();
      });
  CHECK_EQ(result, Status::kAbandoned);
  CHECK_LE(woke, 1s);
  CHECK_EQ(r.state(), State::kOpen);
}

int main() { return run_tests(); }
