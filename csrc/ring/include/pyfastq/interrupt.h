// Ctrl-C for consumers. A signal only reaches Python code when the main
// thread returns to it, which it does not while it waits in a dequeue op.
// pyfastq._core raises this flag from a C signal handler chained in front of
// Python's (async-signal-safe: one atomic store). A consumer op parked in a
// wait re-checks it every few tens of milliseconds and, while it is raised,
// takes it and ends with CancelledError, so the main thread gets back to
// Python; Python's handler then sees it taken (the CancelledError carries the
// interrupt) or not (it raises KeyboardInterrupt), and lowers it.
//
// One flag per process, in the ring library, so the module that raises it
// and the op library that takes it share it.
#pragma once

#include <cstdint>

#include "pyfastq/api.h"

namespace pyfastq {

enum class Interrupt : std::uint32_t { kNone = 0, kPending = 1, kTaken = 2 };

// any thread, and signal handlers: async-signal-safe.
PYFASTQ_API void raise_consumer_interrupt() noexcept;
// consumer side: true while an interrupt is pending or taken; marks it taken.
PYFASTQ_API bool take_consumer_interrupt() noexcept;
// any thread.
PYFASTQ_API Interrupt consumer_interrupt() noexcept;
// any thread: Python's SIGINT handling lowers the flag once it has delivered the interrupt.
PYFASTQ_API void clear_consumer_interrupt() noexcept;

}  // namespace pyfastq
