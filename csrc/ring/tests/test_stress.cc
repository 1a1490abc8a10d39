// N producers x M consumers through a small ring: every element arrives
// exactly once, each producer's elements in order, checked by exact sums.
//
// PYFASTQ_STRESS_ITEMS sets the elements per producer (default 200000; the
// sanitizer builds in CI use fewer).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "check.h"
#include "ring_helpers.h"

using namespace pyfastq;
using namespace ring_test;

namespace {

std::uint32_t items_per_producer() {
  const char* env = std::getenv("PYFASTQ_STRESS_ITEMS");
  return env ? static_cast<std::uint32_t>(std::strtoul(env, nullptr, 10)) : 200000;
}

void stress(int producers, int consumers, std::uint32_t capacity) {
  const std::uint32_t per = items_per_producer();
  auto m = private_ring(capacity, kItemAndTail);
  Ring& r = m->ring();
  Barrier barrier(producers + consumers);
  std::atomic<int> producers_left{producers};
  std::vector<std::uint64_t> sum(consumers, 0), count(consumers, 0);
  std::vector<std::vector<std::uint8_t>> seen(producers, std::vector<std::uint8_t>(per, 0));

  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      barrier.wait();
      for (std::uint32_t s = 0; s < per; ++s) {
        std::uint32_t slot;
        CHECK_EQ(r.acquire(&slot), Status::kOk);
        fill_element(r, slot, static_cast<std::uint32_t>(p), s);
        r.commit(slot);
      }
      if (producers_left.fetch_sub(1) == 1) r.close();
    });
  }
  for (int c = 0; c < consumers; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937 rng(c);
      std::vector<std::int64_t> last(producers, -1);
      std::uint32_t slots[8], got;
      barrier.wait();
      for (;;) {
        const std::uint32_t n = 1 + rng() % std::min<std::uint32_t>(8, capacity);
        const Status st = r.pop(n, slots, &got, /*allow_smaller=*/true);
        if (st == Status::kClosed) break;
        CHECK_EQ(st, Status::kOk);
        CHECK_GE(got, 1);
        CHECK_LE(got, n);
        for (std::uint32_t i = 0; i < got; ++i) {
          const Item item = read_item(r, slots[i]);
          CHECK_EQ(damage(r, slots[i]), "");
          CHECK_LT(item.producer, producers);
          CHECK_LT(item.seq, per);
          // One consumer sees each producer's elements in increasing order.
          CHECK_GT(item.seq, last[item.producer]);
          last[item.producer] = item.seq;
          seen[item.producer][item.seq] += 1;  // each (p, s) is written by exactly one consumer
          sum[c] += item.check;
          ++count[c];
          if (c % 2 == 0) r.release(slots[i]);
        }
        if (c % 2 == 1) r.release_many(slots, got);  // half the consumers give their batch back at once
      }
    });
  }
  for (auto& t : threads) t.join();

  std::uint64_t want_sum = 0, got_sum = 0, got_count = 0;
  for (int p = 0; p < producers; ++p) {
    for (std::uint32_t s = 0; s < per; ++s) want_sum += mix(p, s);
  }
  for (int c = 0; c < consumers; ++c) {
    got_sum += sum[c];
    got_count += count[c];
  }
  CHECK_EQ(got_count, std::uint64_t(producers) * per);
  CHECK_EQ(got_sum, want_sum);
  for (int p = 0; p < producers; ++p) {
    for (std::uint32_t s = 0; s < per; ++s) CHECK_EQ(seen[p][s], 1);
  }
  CHECK_EQ(r.size(), 0);
  std::printf("  %dx%d capacity %u: %llu elements exactly once\n", producers, consumers, capacity,
              static_cast<unsigned long long>(got_count));
}

}  // namespace

TEST(one_by_one) { stress(1, 1, 16); }
TEST(four_by_one) { stress(4, 1, 16); }
TEST(one_by_four) { stress(1, 4, 16); }
TEST(four_by_four) { stress(4, 4, 8); }
TEST(tiny_ring_many_threads) { stress(3, 3, 1); }

int main() { return run_tests(); }
