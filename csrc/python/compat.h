// Every use of a pybind11 private (py::detail) API in pyfastq._core, here and
// nowhere else, so that a new pybind11 is checked in one place.
//
// Checked on pybind11 3.1 (3.1.0): npy_api::get(), its PyArray_Check_,
// PyArray_EquivTypes_ and NPY_ARRAY_C_CONTIGUOUS_, and array_proxy() with
// PyArray_Proxy's data, nd, dimensions, descr and flags fields.
#pragma once

#include <Python.h>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

// To move to another pybind11: re-check in its include/pybind11/numpy.h
// that everything listed above exists with the same meaning (the proxy's
// fields mirror NumPy's PyArrayObject), then add the version here.
static_assert(PYBIND11_VERSION_MAJOR == 3 && PYBIND11_VERSION_MINOR == 1,
              "pyfastq/csrc/python/compat.h uses pybind11's private numpy API, checked on pybind11 3.1 only: "
              "re-check npy_api and array_proxy in this pybind11's numpy.h, then list its version in compat.h");

namespace pyfastq::compat {

// What the fast put reads of an exact array.
struct ArrayView {
  const void* data;
  int ndim;
  const pybind11::ssize_t* shape;
};

// Whether `obj` is a C-contiguous numpy array of a dtype equivalent to
// `dtype` (a numpy dtype object); if so, *out views it. Without pybind11's
// public py::array, whose construction costs more than the rest of a small put.
inline bool exact_array(PyObject* obj, PyObject* dtype, ArrayView* out) {
  namespace detail = pybind11::detail;
  const auto& api = detail::npy_api::get();
  if (!api.PyArray_Check_(obj)) return false;
  const auto* a = detail::array_proxy(obj);
  if (!(a->flags & detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_)) return false;
  if (a->descr != dtype && !api.PyArray_EquivTypes_(a->descr, dtype)) return false;
  *out = ArrayView{a->data, a->nd, a->dimensions};
  return true;
}

}  // namespace pyfastq::compat
