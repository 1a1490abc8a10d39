// The ring's counters: size, puts and gets, time parked, the fill histogram.
#include <algorithm>
#include <atomic>
#include <cstdint>

#include "park.h"
#include "pyfastq/ring.h"

namespace pyfastq {
namespace {

// blocked_ns, with the stretch under way now (a popper parked right now counts).
std::uint64_t blocked_ns(const IndexQueueState& q) noexcept {
  std::uint64_t total = q.blocked_ns.load(std::memory_order_seq_cst);
  if (q.parked.load(std::memory_order_seq_cst) != 0) {
    const std::uint64_t began = q.parked_since.load(std::memory_order_seq_cst);
    const std::uint64_t now = detail::clock_ns();
    if (began != 0 && now > began) total += now - began;
  }
  return total;
}

}  // namespace

void Ring::record_fill() noexcept {
  const std::uint64_t cap = header_->capacity;
  const std::uint64_t bin = std::min<std::uint64_t>(kFillBins - 1, size() * kFillBins / cap);
  header_->fill_hist[bin].fetch_add(1, std::memory_order_relaxed);
}

std::uint64_t Ring::size() const noexcept {
  const std::uint64_t tail = header_->ready_q.tail.load(std::memory_order_acquire);
  const std::uint64_t head = header_->ready_q.head.load(std::memory_order_acquire);
  const std::uint64_t ready = tail > head ? tail - head : 0;
  return ready + header_->pool.size.load(std::memory_order_acquire);
}

Counters Ring::counters() const noexcept {
  Counters c;
  c.puts = header_->ready_q.tail.load(std::memory_order_relaxed);
  c.gets = shuffled() ? header_->pool.gets.load(std::memory_order_relaxed)
                      : header_->ready_q.head.load(std::memory_order_relaxed);
  c.size = size();
  c.put_wait_ns = header_->free_q.wait_ns.load(std::memory_order_relaxed);
  c.get_wait_ns = header_->ready_q.wait_ns.load(std::memory_order_relaxed);
  c.put_waiters = header_->free_q.waiters.load(std::memory_order_relaxed);
  c.get_waiters = header_->ready_q.waiters.load(std::memory_order_relaxed);
  c.put_blocked_ns = blocked_ns(header_->free_q);
  c.get_blocked_ns = blocked_ns(header_->ready_q);
  for (std::uint32_t i = 0; i < kFillBins; ++i) c.fill_hist[i] = header_->fill_hist[i].load(std::memory_order_relaxed);
  return c;
}

}  // namespace pyfastq
