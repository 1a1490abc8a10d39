// pyfastq._core's Ctrl-C handling for consumers.
#pragma once

#include <pybind11/pybind11.h>

namespace pyfastq {

// Adds chain_sigint, the Interrupt enum and the consumer-interrupt calls to the module.
void register_interrupts(pybind11::module_& m);

}  // namespace pyfastq
