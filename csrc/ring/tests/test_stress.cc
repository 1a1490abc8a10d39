// N producers x M consumers through a small ring: every element arrives
// exactly once, each producer's elements in order, checked by exact sums.
//
// PYFASTQ_STRESS_ITEMS sets the elements per producer (default 200000; the
// sanitizer builds in CI use fewer).
#include <algorithm>
#include <atomic>
#include <random>
#include <thread>
#include <vector>
#include <cstdint>
#include <cstdio>

#include "check.h"
#include "ring_helpers.h"

using namespace pyfastq;
using namespace ring_test;

namespace {

void stress(int producers, int consumers, std::uint32_t capacity) {
  auto m = private_ring(capacity, kItemAndTail);
  const std::uint64_t got = exactly_once(m->ring(), producers, consumers, stress_items(200000),
                                         std::min<std::uint32_t>(8, capacity), /*fifo=*/true);
  std::printf("  %dx%d capacity %u: %llu elements exactly once\n", producers, consumers, capacity,
              static_cast<unsigned long long>(got));
}

// Producers tag elements with positions in a scrambled order (each block of 64
// reversed) and consumers take them in batches on several threads: the
// consumers' marks move the taken watermark over every position exactly when
// all below it are taken, whichever thread marks which (ThreadSanitizer checks
// the marking's races).
void tracked(int producers, int consumers, std::uint32_t capacity) {
  auto m = private_ring(capacity, kItemAndTail);
  Ring& r = m->ring();
  const std::uint64_t n = std::max<std::uint64_t>(64, stress_items(200000) / 64 * 64);
  r.begin_tracking(0);
  std::atomic<std::uint64_t> next{0};
  std::atomic<int> producers_left{producers};
  std::vector<std::uint8_t> seen(n, 0);
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      for (std::uint64_t k; (k = next.fetch_add(1)) < n;) {
        const std::uint64_t position = (k & ~std::uint64_t{63}) | (63 - (k & 63));
        std::uint32_t slot;
        CHECK_EQ(acquire(r, &slot), Status::kOk);
        fill_element(r, slot, static_cast<std::uint32_t>(p), static_cast<std::uint32_t>(position));
        r.set_tag(slot, position);
        r.commit(slot);
      }
      if (producers_left.fetch_sub(1) == 1) r.close();
    });
  }
  for (int c = 0; c < consumers; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937 rng(c);
      std::uint32_t slots[8], got;
      for (;;) {
        const Status st = r.pop(1 + rng() % 8, slots, &got, /*allow_smaller=*/true);
        if (st == Status::kClosed) break;
        CHECK_EQ(st, Status::kOk);
        for (std::uint32_t i = 0; i < got; ++i) {
          const std::uint64_t position = read_item(r, slots[i]).seq;
          seen[position] += 1;  // each position is taken by one consumer
          // Taken is seen at once: the position's bit, or (read after it) the watermark past it.
          CHECK(r.taken(position) || r.taken_watermark() > position);
        }
        r.release_many(slots, got);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (std::uint64_t p = 0; p < n; ++p) CHECK_EQ(seen[p], 1);
  CHECK_EQ(r.taken_watermark(), n);
  CHECK(!r.tracking_overflowed());
  for (std::uint64_t p = n; p < n + 4096; ++p) CHECK(!r.taken(p));
  std::printf("  %dx%d capacity %u: %llu positions taken, watermark at the end\n", producers, consumers, capacity,
              static_cast<unsigned long long>(n));
}

}  // namespace

TEST(one_by_one) { stress(1, 1, 16); }
TEST(four_by_one) { stress(4, 1, 16); }
TEST(one_by_four) { stress(1, 4, 16); }
TEST(four_by_four) { stress(4, 4, 8); }
TEST(tiny_ring_many_threads) { stress(3, 3, 1); }
TEST(tracked_positions_four_by_four) { tracked(4, 4, 16); }
TEST(tracked_positions_one_by_three) { tracked(1, 3, 8); }

int main() { return run_tests(); }
