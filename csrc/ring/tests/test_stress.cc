// N producers x M consumers through a small ring: every element arrives
// exactly once, each producer's elements in order, checked by exact sums.
//
// PYFASTQ_STRESS_ITEMS sets the elements per producer (default 200000; the
// sanitizer builds in CI use fewer).
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "check.h"
#include "pyfastq/ring_memory.h"

using namespace pyfastq;

namespace {

struct Item {
  std::uint32_t producer;
  std::uint32_t seq;
  std::uint64_t check;  // derived from the two, so a torn slot is caught
};

std::uint64_t mix(std::uint32_t p, std::uint32_t s) { return (std::uint64_t(p) << 32 | s) * 0x9E3779B97F4A7C15ull; }

std::uint32_t items_per_producer() {
  const char* env = std::getenv("PYFASTQ_STRESS_ITEMS");
  return env ? static_cast<std::uint32_t>(std::strtoul(env, nullptr, 10)) : 200000;
}

void stress(int producers, int consumers, std::uint32_t capacity) {
  const std::uint32_t per = items_per_producer();
  auto m = RingMemory::create(capacity, {sizeof(Item), 3});  // a second, odd-sized component
  Ring& r = m->ring();
  Barrier barrier(producers + consumers);
  std::atomic<int> producers_left{producers};
  std::vector<std::uint64_t> sum(consumers, 0), count(consumers, 0);
  std::vector<std::vector<std::uint8_t>> seen(producers, std::vector<std::uint8_t>(per, 0));
  std::atomic<bool> order_ok{true}, torn{false};

  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      barrier.wait();
      for (std::uint32_t s = 0; s < per; ++s) {
        std::uint32_t slot;
        CHECK_EQ(r.acquire(&slot), Status::kOk);
        Item item{static_cast<std::uint32_t>(p), s, mix(p, s)};
        std::memcpy(r.slot_data(slot), &item, sizeof item);
        std::memset(r.slot_data(slot) + r.component(1).offset, static_cast<int>(s & 0xff), 3);
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
          Item item;
          std::memcpy(&item, r.slot_data(slots[i]), sizeof item);
          const std::uint8_t* tail = r.slot_data(slots[i]) + r.component(1).offset;
          if (item.producer >= static_cast<std::uint32_t>(producers) || item.seq >= per ||
              item.check != mix(item.producer, item.seq) || tail[0] != (item.seq & 0xff) || tail[2] != (item.seq & 0xff)) {
            torn = true;
          } else {
            // One consumer sees each producer's elements in increasing order.
            if (static_cast<std::int64_t>(item.seq) <= last[item.producer]) order_ok = false;
            last[item.producer] = item.seq;
            seen[item.producer][item.seq] += 1;  // each (p, s) is written by exactly one consumer
          }
          sum[c] += item.check;
          ++count[c];
          r.release(slots[i]);
        }
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
  CHECK(!torn);
  CHECK(order_ok);
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
