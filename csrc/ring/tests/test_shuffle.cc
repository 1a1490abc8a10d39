// Shuffled rings (RandomShuffleQueue order), the fill-level histogram and
// the blocked-time counters.
//
// PYFASTQ_STRESS_ITEMS sets the stress test's elements per producer, as in
// test_stress (default 100000).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "check.h"
#include "ring_helpers.h"

using namespace pyfastq;
using namespace ring_test;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<RingMemory> shuffled_ring(std::uint32_t capacity, std::uint32_t keep, std::uint64_t seed,
                                          std::vector<std::uint64_t> bytes = {sizeof(int)}, bool shared = false) {
  RingOptions options;
  options.shuffle = true;
  options.min_after_dequeue = keep;
  options.seed = seed;
  return RingMemory::create(capacity, bytes, shared, options);
}

// Pops one element at a time until the ring says closed; the values in pick order.
std::vector<int> drain_values(Ring& r) {
  std::vector<int> out;
  std::uint32_t slot, got;
  for (;;) {
    const Status st = r.pop(1, &slot, &got, false, in(5000ms));
    if (st == Status::kClosed) return out;
    CHECK_EQ(st, Status::kOk);
    out.push_back(read_value<int>(r, slot));
    r.release(slot);
  }
}

// The order a ring with `seed` gives `count` values put before close.
std::vector<int> order_for(std::uint64_t seed, int count) {
  auto m = shuffled_ring(static_cast<std::uint32_t>(count), 0, seed);
  Ring& r = m->ring();
  for (int i = 0; i < count; ++i) put_value(r, i);
  r.close();
  return drain_values(r);
}

std::vector<int> iota_values(int count) {
  std::vector<int> v(count);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

}  // namespace

TEST(options_are_checked) {
  RingOptions keep_without_shuffle;
  keep_without_shuffle.min_after_dequeue = 1;
  for (const RingOptions& bad : {keep_without_shuffle, RingOptions{true, 4, 0}, RingOptions{true, 9, 0}}) {
    bool threw = false;
    try {
      RingMemory::create(4, {8}, false, bad);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    CHECK(threw);
  }
  auto m = shuffled_ring(4, 3, 1);
  CHECK(m->ring().shuffled());
  CHECK_EQ(m->ring().min_after_dequeue(), 3);
  CHECK(!private_ring(4)->ring().shuffled());
}

TEST(the_multiset_is_kept_and_the_order_mixed) {
  const std::vector<int> order = order_for(7, 256);
  std::vector<int> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  CHECK_EQ(sorted, iota_values(256));
  CHECK_NE(order, iota_values(256));
  // Mixed, not merely rotated: far from FIFO on most picks.
  int displaced = 0;
  for (int i = 0; i < 256; ++i) displaced += std::abs(order[i] - i) > 8 ? 1 : 0;
  CHECK_GT(displaced, 128);
}

TEST(a_seed_fixes_the_order) {
  CHECK_EQ(order_for(42, 100), order_for(42, 100));
  CHECK_NE(order_for(42, 100), order_for(43, 100));
}

TEST(picks_are_uniform) {
  // The first pick from a pool of 8 lands on each element about equally often.
  constexpr int kRuns = 4000;
  std::vector<int> first(8, 0);
  auto m = shuffled_ring(8, 0, 3);
  Ring& r = m->ring();
  for (int run = 0; run < kRuns; ++run) {
    for (int i = 0; i < 8; ++i) put_value(r, i);
    std::uint32_t slots[8], got;
    CHECK_EQ(r.pop(8, slots, &got), Status::kOk);
    ++first[read_value<int>(r, slots[0])];
    for (std::uint32_t i = 0; i < got; ++i) r.release(slots[i]);
  }
  // Expected 500 each, standard deviation ~21: 400..600 is about 5 sigma.
  for (int count : first) {
    CHECK_GT(count, 400);
    CHECK_LT(count, 600);
  }
}

TEST(min_after_dequeue_holds_back_while_open) {
  auto m = shuffled_ring(8, 3, 5);
  Ring& r = m->ring();
  std::uint32_t slots[8], got = 99;
  for (int i = 0; i < 3; ++i) put_value(r, i);
  CHECK_EQ(r.pop(1, slots, &got, false, in(20ms)), Status::kTimeout);  // would leave 2 of 3
  CHECK_EQ(got, 0);
  CHECK_EQ(r.size(), 3);
  put_value(r, 3);
  CHECK_EQ(r.pop(1, slots, &got, false, in(1000ms)), Status::kOk);
  r.release(slots[0]);
  CHECK_EQ(r.size(), 3);
  put_value(r, 4);
  put_value(r, 5);
  CHECK_EQ(r.pop(3, slots, &got, false, in(20ms)), Status::kTimeout);  // 5 ready, 3 + 3 needed: none taken
  CHECK_EQ(r.size(), 5);
  CHECK_EQ(r.pop(2, slots, &got, false, in(1000ms)), Status::kOk);
  CHECK_EQ(got, 2);
  for (std::uint32_t i = 0; i < got; ++i) r.release(slots[i]);
  CHECK_EQ(r.size(), 3);
  // After close the hold-back ends: the last 3 drain, then the ring ends.
  r.close();
  CHECK_EQ(drain_values(r).size(), 3);
  CHECK_EQ(r.size(), 0);
  const Counters c = r.counters();
  CHECK_EQ(c.puts, 6);
  CHECK_EQ(c.gets, 6);
}

// n <= capacity < n + min_after_dequeue: the batch cannot form while open (the
// ring never holds n + k), so it waits for close, and a cancelled one takes nothing.
TEST(a_batch_beyond_the_hold_back_waits_for_close) {
  auto m = shuffled_ring(8, 3, 23);
  Ring& r = m->ring();
  for (int i = 0; i < 8; ++i) put_value(r, i);  // full
  std::uint32_t slots[8], got = 99;
  CHECK_EQ(r.pop(9, slots, &got), Status::kTooLarge);
  CHECK_EQ(r.pop(8, slots, &got, false, in(20ms)), Status::kTimeout);
  CHECK_EQ(got, 0);
  CHECK_EQ(r.size(), 8);

  std::atomic<bool> abandon{false};
  Status abandoned{};
  std::uint32_t abandoned_slots[6], abandoned_got = 99;
  Background cancelled([&] { abandoned = r.pop(6, abandoned_slots, &abandoned_got, false, no_deadline(), &abandon); });
  wait_parked(r.header()->ready_q);
  abandon = true;
  r.wake_all();
  CHECK(cancelled.join_within(5s));
  CHECK_EQ(abandoned, Status::kAbandoned);
  CHECK_EQ(abandoned_got, 0);
  CHECK_EQ(r.size(), 8);

  Status result{};
  Background consumer([&] { result = r.pop(8, slots, &got, false, in(60000ms)); });
  wait_parked(r.header()->ready_q);
  CHECK(r.close());
  CHECK(consumer.join_within(60s));
  CHECK_EQ(result, Status::kOk);
  CHECK_EQ(got, 8);
  std::vector<int> values;
  for (std::uint32_t i = 0; i < got; ++i) {
    values.push_back(read_value<int>(r, slots[i]));
    r.release(slots[i]);
  }
  std::sort(values.begin(), values.end());
  CHECK_EQ(values, iota_values(8));  // every element exactly once
  CHECK_EQ(r.pop(1, slots, &got), Status::kClosed);
}

TEST(a_consumer_held_back_wakes_when_enough_arrive) {
  auto m = shuffled_ring(8, 4, 9);
  Ring& r = m->ring();
  for (int i = 0; i < 4; ++i) put_value(r, i);
  std::uint32_t slots[2], got = 0;
  Status result{};
  const auto woke = wake_latency([&] { result = r.pop(2, slots, &got, false, in(10000ms)); },
                                 parked_on(r.header()->ready_q), [&] {
                                   put_value(r, 4);
                                   wait_reparked(r.header()->ready_q);  // 5 are not enough: it waits on
                                   put_value(r, 5);  // 6 = 4 kept + 2 taken
                                 });
  CHECK_EQ(result, Status::kOk);
  CHECK_EQ(got, 2);
  CHECK_LE(woke, 1s);
  CHECK_EQ(r.size(), 4);
  for (std::uint32_t i = 0; i < got; ++i) r.release(slots[i]);
}

TEST(after_close_a_batch_is_all_or_nothing) {
  auto m = shuffled_ring(8, 2, 11);
  Ring& r = m->ring();
  for (int i = 0; i < 3; ++i) put_value(r, i);
  r.close();
  std::uint32_t slots[4], got = 99;
  CHECK_EQ(r.pop(4, slots, &got), Status::kClosed);  // the elements stay
  CHECK_EQ(got, 0);
  CHECK_EQ(r.size(), 3);
  CHECK_EQ(r.pop(4, slots, &got, true), Status::kOk);  // or come as a smaller final batch
  CHECK_EQ(got, 3);
  std::vector<int> values;
  for (std::uint32_t i = 0; i < got; ++i) {
    values.push_back(read_value<int>(r, slots[i]));
    r.release(slots[i]);
  }
  std::sort(values.begin(), values.end());
  CHECK_EQ(values, iota_values(3));
  CHECK_EQ(r.pop(1, slots, &got, true), Status::kClosed);
}

TEST(a_put_waiting_at_close_still_arrives_and_drains) {
  auto m = shuffled_ring(2, 1, 13);
  Ring& r = m->ring();
  put_value(r, 1);
  put_value(r, 2);
  Status result{};
  Background producer([&] { result = try_put_value(r, 3); });
  wait_parked(r.header()->free_q);
  CHECK(r.close());
  std::vector<int> values = drain_values(r);
  CHECK(producer.join_within(5s));
  CHECK_EQ(result, Status::kOk);
  std::sort(values.begin(), values.end());
  CHECK_EQ(values, (std::vector<int>{1, 2, 3}));
}

TEST(cancel_drops_the_pool_too) {
  auto m = shuffled_ring(8, 2, 17);
  Ring& r = m->ring();
  for (int i = 0; i < 5; ++i) put_value(r, i);
  std::uint32_t slots[2], got;
  CHECK_EQ(r.pop(1, slots, &got), Status::kOk);  // moves the ready elements into the pool
  r.release(slots[0]);
  CHECK_EQ(r.header()->pool.size.load(), 4);
  CHECK(r.close(true));
  CHECK_EQ(r.size(), 0);
  CHECK_EQ(r.pop(1, slots, &got), Status::kCancelled);
  // Every slot is back in the free queue.
  const IndexQueueState& free_q = r.header()->free_q;
  CHECK_EQ(free_q.tail.load() - free_q.head.load(), 8);
}

TEST(a_blocked_shuffled_consumer_wakes_on_every_end) {
  for (int end = 0; end < 4; ++end) {
    auto m = shuffled_ring(4, 2, 19);
    Ring& r = m->ring();
    put_value(r, 1);
    std::atomic<bool> abandon{false};
    Status result{};
    const auto woke = wake_latency(
        [&] {
          std::uint32_t slots[2], got;
          result = r.pop(2, slots, &got, false, no_deadline(), &abandon);
        },
        parked_on(r.header()->ready_q),
        [&] {
          if (end == 0) r.close();
          if (end == 1) r.close(true);
          if (end == 2) r.fail("x", 1);
          if (end == 3) {
            abandon = true;
            r.wake_all();
          }
        });
    const Status want[] = {Status::kClosed, Status::kCancelled, Status::kFailed, Status::kAbandoned};
    CHECK_EQ(result, want[end]);
    CHECK_LE(woke, 1s);
  }
}

// N producers x M consumers through a small shuffled ring with a hold-back:
// every element exactly once, by exact sums.
TEST(stress_exactly_once) {
  auto m = shuffled_ring(16, 5, 23, kItemAndTail);
  Ring& r = m->ring();
  // Up to 16 - 5 elements could be asked for at once; 8 is plenty.
  const std::uint64_t got = exactly_once(r, 3, 3, stress_items(200000) / 2, 8, /*fifo=*/false);
  const Counters counters = r.counters();
  CHECK_EQ(counters.gets, got);
  CHECK_EQ(counters.size, 0);
  std::uint64_t samples = 0;
  for (std::uint64_t bin : counters.fill_hist) samples += bin;
  CHECK_GE(samples, 1);
}

TEST(forked_producers_through_a_shared_shuffled_ring) {
  constexpr std::uint32_t kProducers = 2;
  constexpr std::uint32_t kPer = 5000;
  auto m = shuffled_ring(8, 3, 29, kItemAndTail, /*shared=*/true);
  Ring& r = m->ring();
  CHECK(r.shuffled());
  const std::vector<pid_t> kids = forked_producers(*m, kProducers, kPer);
  std::uint64_t got_sum = 0, want_sum = 0;
  std::uint32_t left = kProducers * kPer;
  std::uint32_t out_of_order = 0;
  std::vector<std::int64_t> last(kProducers, -1);
  while (left > 3) {  // the last 3 are held back until close
    std::uint32_t slot, got;
    CHECK_EQ(r.pop(1, &slot, &got, false, in(20000ms)), Status::kOk);
    const Item item = read_item(r, slot);
    CHECK_EQ(damage(r, slot), "");
    if (std::int64_t(item.seq) < last[item.producer]) ++out_of_order;
    last[item.producer] = std::max<std::int64_t>(last[item.producer], item.seq);
    got_sum += item.check;
    r.release(slot);
    --left;
  }
  for (pid_t k : kids) wait_ok(k);
  r.close();
  std::uint32_t slots[3], got;
  CHECK_EQ(r.pop(3, slots, &got, false, in(1000ms)), Status::kOk);
  for (std::uint32_t i = 0; i < got; ++i) {
    got_sum += read_item(r, slots[i]).check;
    r.release(slots[i]);
  }
  for (std::uint32_t p = 0; p < kProducers; ++p) {
    for (std::uint32_t s = 0; s < kPer; ++s) want_sum += mix(p, s);
  }
  CHECK_EQ(got_sum, want_sum);
  CHECK_GT(out_of_order, 0);  // mixed across what the children put
}

TEST(fill_histogram_counts_what_consumers_find) {
  auto m = private_ring(10);
  Ring& r = m->ring();
  r.record_fill();  // empty
  for (int i = 0; i < 5; ++i) put_value(r, i);
  r.record_fill();  // half
  for (int i = 0; i < 5; ++i) put_value(r, i);
  r.record_fill();  // full
  r.record_fill();
  const Counters c = r.counters();
  const std::vector<std::uint64_t> bins(c.fill_hist, c.fill_hist + kFillBins);
  CHECK_EQ(bins, (std::vector<std::uint64_t>{1, 0, 0, 0, 0, 1, 0, 0, 0, 2}));
}

TEST(blocked_time_counts_the_stretch_not_each_waiter) {
  auto m = private_ring(1);
  Ring& r = m->ring();
  put_value(r, 0);
  // Two producers parked on a full ring for the same ~150 ms.
  std::vector<std::unique_ptr<Background>> producers;
  for (int p = 0; p < 2; ++p) {
    producers.push_back(std::make_unique<Background>([&] {
      std::uint32_t s;
      CHECK_EQ(acquire(r, &s, in(10000ms)), Status::kOk);
      r.commit(s);
    }));
  }
  wait_for([&] { return r.header()->free_q.parked.load() == 2; });
  std::this_thread::sleep_for(150ms);
  const Counters during = r.counters();
  CHECK_GE(during.put_blocked_ns, 100'000'000u);  // the stretch under way counts
  std::uint32_t slot, got;
  for (int i = 0; i < 3; ++i) {
    CHECK_EQ(r.pop(1, &slot, &got, false, in(10000ms)), Status::kOk);
    r.release(slot);
  }
  for (auto& p : producers) CHECK(p->join_within(5s));
  const Counters after = r.counters();
  CHECK_GE(after.put_blocked_ns, 100'000'000u);
  // Both waited about as long: the sum is about twice the stretch.
  CHECK_LT(after.put_blocked_ns, after.put_wait_ns);
  CHECK_EQ(r.header()->free_q.parked.load(), 0);
}

int main() { return run_tests(); }
