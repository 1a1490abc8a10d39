// Ctrl-C for consumers: the SIGINT handler chained in front of Python's, and
// the consumer-interrupt flag it raises (pyfastq/interrupt.h).
#include "interrupts.h"

#include <signal.h>

#include "pyfastq/interrupt.h"

namespace py = pybind11;

namespace pyfastq {
namespace {

// SIGINT: raise the consumer-interrupt flag, then run Python's own C handler,
// which trips the KeyboardInterrupt. In that order, Python's handler (which
// lowers the flag when it delivers) always runs after the flag was raised.
struct sigaction g_next_sigint;

void on_sigint(int signum) {
  raise_consumer_interrupt();
  if (g_next_sigint.sa_handler != SIG_DFL && g_next_sigint.sa_handler != SIG_IGN) g_next_sigint.sa_handler(signum);
}

// Chains on_sigint in front of the installed handler; false if that is not a
// plain handler (SIG_DFL, SIG_IGN or an SA_SIGINFO one: left alone).
bool chain_sigint() {
  struct sigaction current {};
  if (sigaction(SIGINT, nullptr, &current) != 0) return false;
  if (current.sa_handler == on_sigint) return true;
  if ((current.sa_flags & SA_SIGINFO) || current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN) return false;
  g_next_sigint = current;
  struct sigaction ours = current;
  ours.sa_handler = on_sigint;
  return sigaction(SIGINT, &ours, nullptr) == 0;
}

}  // namespace

void register_interrupts(py::module_& m) {
  m.def("chain_sigint", &chain_sigint,
        "Puts a C handler in front of the current SIGINT handler that raises the consumer-interrupt flag first");
  m.def("take_consumer_interrupt", &take_consumer_interrupt,
        "For a consumer waiting in Python: true while Ctrl-C is pending (or taken by another consumer); marks it taken");
  py::enum_<Interrupt>(m, "Interrupt", "The consumer-interrupt flag (Ctrl-C while a dequeue waits)")
      .value("NONE", Interrupt::kNone)
      .value("PENDING", Interrupt::kPending, "Ctrl-C came; no consumer has taken it")
      .value("TAKEN", Interrupt::kTaken, "a waiting consumer took it and ends with CancelledError");
  m.def("consumer_interrupt", &consumer_interrupt);
  m.def("clear_consumer_interrupt", &clear_consumer_interrupt);
}

}  // namespace pyfastq
