// pyfastq._core.Ring (and Reservation): the ring bound for Python's producers.
#pragma once

#include <Python.h>

#include <cstdint>
#include <optional>

#include <pybind11/pybind11.h>

namespace pyfastq {

class PyRing;

// Adds Ring, Reservation and the fill test hook to the module.
void register_ring(pybind11::module_& m);

// One element into a one-component ring, if `element` is an exact array
// (C-contiguous, the spec's dtype and shape): true once put; false, and
// nothing done, for anything else. With a tag, the element reads that
// position of a run. Throws (errors.h) on timeout or a refused put. GIL held.
bool put_exact(PyRing* ring, PyObject* element, PyObject* timeout, std::optional<std::uint64_t> tag);

}  // namespace pyfastq
