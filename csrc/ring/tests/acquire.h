// A whole put's acquire in one call, for the tests and the microbenchmark:
// begin_put(), acquire_begun(), end_put(), as pyfastq._core runs them.
#pragma once

#include <atomic>
#include <cstdint>

#include "pyfastq/ring.h"

namespace ring_test {

// Waits for n free slots and takes them at once (as Ring::acquire_begun),
// in a put of its own: refused (the ring's end) unless the ring is open.
inline pyfastq::Status acquire_many(pyfastq::Ring& r, std::uint32_t n, std::uint32_t* slots, std::uint32_t* got,
                                    bool allow_smaller = false, pyfastq::Deadline deadline = pyfastq::no_deadline(),
                                    const std::atomic<bool>* abandon = nullptr) {
  *got = 0;
  if (n > r.capacity()) return pyfastq::Status::kTooLarge;
  if (n == 0) return pyfastq::Status::kOk;
  if (!r.begin_put()) return pyfastq::status_of(r.state());
  const pyfastq::Status st = r.acquire_begun(n, slots, got, allow_smaller, deadline, abandon);
  r.end_put();
  return st;
}

// acquire_many of one slot.
inline pyfastq::Status acquire(pyfastq::Ring& r, std::uint32_t* slot, pyfastq::Deadline deadline = pyfastq::no_deadline(),
                               const std::atomic<bool>* abandon = nullptr) {
  std::uint32_t got;
  return acquire_many(r, 1, slot, &got, false, deadline, abandon);
}

}  // namespace ring_test
