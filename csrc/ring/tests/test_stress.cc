// N producers x M consumers through a small ring: every element arrives
// exactly once, each producer's elements in order, checked by exact sums.
//
// PYFASTQ_STRESS_ITEMS sets the elements per producer (default 200000; the
// sanitizer builds in CI use fewer).
#include <algorithm>
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

}  // namespace

TEST(one_by_one) { stress(1, 1, 16); }
TEST(four_by_one) { stress(4, 1, 16); }
TEST(one_by_four) { stress(1, 4, 16); }
TEST(four_by_four) { stress(4, 4, 8); }
TEST(tiny_ring_many_threads) { stress(3, 3, 1); }

int main() { return run_tests(); }
