// Queue.put as a builtin function.
#pragma once

#include <string>

#include <pybind11/pybind11.h>

namespace pyfastq {

class PyRing;

// Queue.put as a builtin function: put(element, timeout=None) runs
// put_exact (ring_binding.h), and for anything it does not take calls `slow` (the
// Python put, which converts or raises the precise error). A builtin, and not
// a pybind11 method behind a Python function, because at a few million puts a
// second the call itself is most of the cost. The tagged variant,
// put(element, timeout, tag) with all three positional, is a random-access
// source's worker's put: the element reads position `tag` of the run.
//
// `ring_object` is the Python Ring whose C++ object is `ring`; the builtin
// keeps it alive.
pybind11::object make_fast_put(pybind11::object ring_object, PyRing* ring, pybind11::object slow, std::string doc,
                               bool tagged);

}  // namespace pyfastq
