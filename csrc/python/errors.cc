#include "errors.h"

#include <new>

namespace py = pybind11;

namespace pyfastq {
namespace {

// pyfastq._errors.QueueClosed, looked up at import. A reference kept for the
// life of the process: a static py::object would be released after the
// interpreter is gone.
PyObject* g_queue_closed = nullptr;

// Raises `p` as its Python exception if it is one of errors.h's; rethrows it otherwise.
void translate(std::exception_ptr p) {
  try {
    std::rethrow_exception(p);
  } catch (const QueueClosedError& e) {
    py::object error = py::reinterpret_borrow<py::object>(g_queue_closed)(e.what(), py::arg("enqueued") = e.enqueued());
    PyErr_SetObject(g_queue_closed, error.ptr());
  } catch (const TimeoutError& e) {
    PyErr_SetString(PyExc_TimeoutError, e.what());
  } catch (const OutOfMemoryError& e) {
    PyErr_SetString(PyExc_MemoryError, e.what());
  } catch (const SystemCallError& e) {
    PyErr_SetObject(PyExc_OSError, py::make_tuple(e.code(), e.what()).ptr());
  }
}

}  // namespace

void register_errors() {
  g_queue_closed = py::object(py::module_::import("pyfastq._errors").attr("QueueClosed")).release().ptr();
  // Local: only this module throws these types.
  py::register_local_exception_translator([](std::exception_ptr p) {
    if (p) translate(p);
  });
}

void set_python_error(std::exception_ptr p) noexcept {
  try {
    try {
      translate(p);
    } catch (py::error_already_set& e) {
      e.restore();
    } catch (py::builtin_exception& e) {
      e.set_error();
    } catch (const std::bad_alloc&) {
      PyErr_NoMemory();
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  } catch (...) {
    // Making the Python exception failed (e.g. no memory for it): say so rather than let it escape.
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "pyfastq._core: an error could not be raised");
  }
}

}  // namespace pyfastq
