// pyfastq._core's claims table (restartable workers) and shared counter.
#pragma once

#include <pybind11/pybind11.h>

namespace pyfastq {

// Adds claim, claims_advance, claims_handover and fetch_add to the module.
void register_claims(pybind11::module_& m);

}  // namespace pyfastq
