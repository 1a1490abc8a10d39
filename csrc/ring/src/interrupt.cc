#include "pyfastq/interrupt.h"

#include <atomic>

namespace pyfastq {
namespace {

std::atomic<std::uint32_t> g_interrupt{0};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "raised from a signal handler");

}  // namespace

void raise_consumer_interrupt() noexcept {
  g_interrupt.store(static_cast<std::uint32_t>(Interrupt::kPending), std::memory_order_release);
}

bool take_consumer_interrupt() noexcept {
  auto expected = static_cast<std::uint32_t>(Interrupt::kPending);
  if (g_interrupt.compare_exchange_strong(expected, static_cast<std::uint32_t>(Interrupt::kTaken),
                                          std::memory_order_acq_rel)) {
    return true;
  }
  return expected != static_cast<std::uint32_t>(Interrupt::kNone);
}

Interrupt consumer_interrupt() noexcept { return Interrupt(g_interrupt.load(std::memory_order_acquire)); }

void clear_consumer_interrupt() noexcept { g_interrupt.store(0, std::memory_order_release); }

}  // namespace pyfastq
