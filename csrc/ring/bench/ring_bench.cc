// The ring alone, in the terms rigtorp/SPSCQueue publishes: throughput in
// operations per ms (8-byte elements, 1 producer x 1 consumer and 4 x 4) and
// round-trip latency in ns (ping-pong of one element between two rings);
// then the same 1 x 1 throughput through a shuffled ring (random picks,
// min_after_dequeue kept back), against the FIFO figure above it.
//
//   cmake -S csrc/ring -B build/ring && cmake --build build/ring && build/ring/bench/ring_bench
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "acquire.h"
#include "pyfastq/ring_memory.h"

using namespace pyfastq;
using ring_test::acquire;
using Ns = std::chrono::nanoseconds;

namespace {

constexpr std::uint32_t kCapacity = 1024;

// Every wait here has no deadline on an open ring: anything but kOk is a bug.
void must(Status st) {
  if (st != Status::kOk) {
    std::fprintf(stderr, "ring_bench: unexpected ring status %s\n", status_name(st));
    std::abort();
  }
}

double throughput_ops_per_ms(int producers, int consumers, std::uint64_t per_producer, std::uint32_t batch,
                             const RingOptions& options = {}) {
  auto m = RingMemory::create(kCapacity, {sizeof(std::uint64_t)}, false, options);
  Ring& r = m->ring();
  std::atomic<int> ready{0}, producers_left{producers};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&] {
      ready.fetch_add(1);
      while (!go.load()) {
      }
      for (std::uint64_t i = 0; i < per_producer; ++i) {
        std::uint32_t slot;
        must(acquire(r, &slot));
        std::memcpy(r.slot_data(slot), &i, sizeof i);
        r.commit(slot);
      }
      if (producers_left.fetch_sub(1) == 1) r.close();
    });
  }
  for (int c = 0; c < consumers; ++c) {
    threads.emplace_back([&] {
      std::vector<std::uint32_t> slots(batch);
      std::uint32_t got;
      std::uint64_t sink = 0;
      ready.fetch_add(1);
      while (!go.load()) {
      }
      while (r.pop(batch, slots.data(), &got, true) == Status::kOk) {
        for (std::uint32_t i = 0; i < got; ++i) {
          std::uint64_t v;
          std::memcpy(&v, r.slot_data(slots[i]), sizeof v);
          sink += v;
          r.release(slots[i]);
        }
      }
      if (sink == 42) std::puts("");  // keep the reads
    });
  }
  while (ready.load() != producers + consumers) {
  }
  const auto t0 = std::chrono::steady_clock::now();
  go = true;
  for (auto& t : threads) t.join();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(per_producer) * producers / ms;
}

double round_trip_ns(std::uint64_t trips) {
  auto a = RingMemory::create(kCapacity, {sizeof(std::uint64_t)});
  auto b = RingMemory::create(kCapacity, {sizeof(std::uint64_t)});
  auto bounce = [](Ring& from, Ring& to) {
    std::uint32_t s, got;
    must(from.pop(1, &s, &got));
    std::uint64_t v;
    std::memcpy(&v, from.slot_data(s), sizeof v);
    from.release(s);
    must(acquire(to, &s));
    std::memcpy(to.slot_data(s), &v, sizeof v);
    to.commit(s);
  };
  std::thread echo([&] {
    for (std::uint64_t i = 0; i < trips; ++i) bounce(a->ring(), b->ring());
  });
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < trips; ++i) {
    std::uint32_t s;
    must(acquire(a->ring(), &s));
    std::memcpy(a->ring().slot_data(s), &i, sizeof i);
    a->ring().commit(s);
    std::uint32_t got;
    must(b->ring().pop(1, &s, &got));
    b->ring().release(s);
  }
  const auto ns = std::chrono::duration_cast<Ns>(std::chrono::steady_clock::now() - t0).count();
  echo.join();
  return static_cast<double>(ns) / static_cast<double>(trips);
}

}  // namespace

int main() {
  std::printf("pyfastq ring, %u slots of 8 bytes, %u hardware threads\n", kCapacity, std::thread::hardware_concurrency());
  std::printf("| threads | pop batch | ops/ms |\n|---|---|---|\n");
  for (std::uint32_t batch : {1u, 128u}) {
    std::printf("| 1 x 1 | %u | %.0f |\n", batch, throughput_ops_per_ms(1, 1, 4000000, batch));
    std::fflush(stdout);
  }
  std::printf("| 4 x 4 | 1 | %.0f |\n", throughput_ops_per_ms(4, 4, 500000, 1));
  std::printf("\nround trip (1 x 1 ping-pong): %.0f ns\n", round_trip_ns(200000));
  std::printf("\n| 1 x 1, pop batch | FIFO ops/ms | shuffled, min_after_dequeue %u: ops/ms |\n|---|---|---|\n",
              kCapacity / 2);
  RingOptions shuffled;
  shuffled.shuffle = true;
  shuffled.min_after_dequeue = kCapacity / 2;
  for (std::uint32_t batch : {1u, 128u}) {
    const double fifo = throughput_ops_per_ms(1, 1, 4000000, batch);
    std::printf("| %u | %.0f | %.0f |\n", batch, fifo, throughput_ops_per_ms(1, 1, 4000000, batch, shuffled));
    std::fflush(stdout);
  }
  return 0;
}
