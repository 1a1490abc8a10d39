// Queue.put as a builtin function (see make_fast_put): Python's argument
// handling done by hand, then put_exact, else the Python put.
#include "fast_put.h"

#include <exception>
#include <optional>
#include <string>
#include <utility>

#include "errors.h"
#include "ring_binding.h"

namespace py = pybind11;

namespace pyfastq {
namespace {

struct FastPut {
  PyMethodDef def;
  std::string doc;
  PyObject* ring_object;  // a reference: keeps the ring alive
  PyRing* ring;
  PyObject* slow;  // a reference
  bool tagged;
};

// put_exact with its C++ exceptions raised as Python's: 1 put, 0 not taken
// (the caller hands it to `slow`), -1 an error is set. Only std::exceptions
// are caught: a thread's forced unwind at interpreter exit goes on through.
int put_exact_or_raise(PyRing* ring, PyObject* element, PyObject* timeout, std::optional<std::uint64_t> tag) {
  try {
    return put_exact(ring, element, timeout, tag) ? 1 : 0;
  } catch (const std::exception&) {
    set_python_error(std::current_exception());
  }
  return -1;
}

PyObject* tagged_put_call(FastPut* fp, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  if (nargs != 3 || (kwnames != nullptr && PyTuple_GET_SIZE(kwnames) != 0)) {
    PyErr_Format(PyExc_TypeError, "tagged put() takes 3 positional arguments: element, timeout, tag (%zd given)",
                 nargs);
    return nullptr;
  }
  const unsigned long long tag = PyLong_AsUnsignedLongLong(args[2]);
  if (tag == static_cast<unsigned long long>(-1) && PyErr_Occurred()) return nullptr;
  const int put = put_exact_or_raise(fp->ring, args[0], args[1], static_cast<std::uint64_t>(tag));
  if (put != 0) return put > 0 ? Py_NewRef(Py_None) : nullptr;
  return PyObject_Vectorcall(fp->slow, args, 3, nullptr);
}

PyObject* fast_put_call(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  auto* fp = static_cast<FastPut*>(PyCapsule_GetPointer(self, nullptr));
  if (fp->tagged) return tagged_put_call(fp, args, nargs, kwnames);
  PyObject* element = nargs >= 1 ? args[0] : nullptr;
  PyObject* timeout = nargs >= 2 ? args[1] : nullptr;
  const Py_ssize_t keywords = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
  if (nargs > 2) {
    PyErr_Format(PyExc_TypeError, "put() takes at most 2 arguments (%zd given)", nargs);
    return nullptr;
  }
  for (Py_ssize_t i = 0; i < keywords; ++i) {
    PyObject* key = PyTuple_GET_ITEM(kwnames, i);
    PyObject** into = PyUnicode_CompareWithASCIIString(key, "timeout") == 0   ? &timeout
                      : PyUnicode_CompareWithASCIIString(key, "element") == 0 ? &element
                                                                               : nullptr;
    if (into == nullptr || *into != nullptr) {
      PyErr_Format(PyExc_TypeError, into == nullptr ? "put() got an unexpected keyword argument '%U'"
                                                    : "put() got multiple values for argument '%U'", key);
      return nullptr;
    }
    *into = args[nargs + i];
  }
  if (element == nullptr) {
    PyErr_SetString(PyExc_TypeError, "put() missing 1 required positional argument: 'element'");
    return nullptr;
  }
  if (timeout == nullptr) timeout = Py_None;
  const int put = put_exact_or_raise(fp->ring, element, timeout, std::nullopt);
  if (put != 0) return put > 0 ? Py_NewRef(Py_None) : nullptr;
  PyObject* call[] = {element, timeout};
  return PyObject_Vectorcall(fp->slow, call, 2, nullptr);
}

}  // namespace

py::object make_fast_put(py::object ring_object, PyRing* ring, py::object slow, std::string doc, bool tagged) {
  auto* fp = new FastPut{};
  fp->tagged = tagged;
  fp->doc = (tagged ? "put(element, timeout, tag)\n--\n\n" : "put(element, timeout=None)\n--\n\n") + doc;
  fp->def = PyMethodDef{"put", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&fast_put_call)),
                        METH_FASTCALL | METH_KEYWORDS, fp->doc.c_str()};
  fp->ring = ring;
  fp->ring_object = ring_object.release().ptr();
  fp->slow = slow.release().ptr();
  PyObject* capsule = PyCapsule_New(fp, nullptr, [](PyObject* c) {
    auto* p = static_cast<FastPut*>(PyCapsule_GetPointer(c, nullptr));
    Py_DECREF(p->ring_object);
    Py_DECREF(p->slow);
    delete p;
  });
  if (capsule == nullptr) {
    Py_DECREF(fp->ring_object);
    Py_DECREF(fp->slow);
    delete fp;
    throw py::error_already_set();
  }
  PyObject* fn = PyCFunction_NewEx(&fp->def, capsule, nullptr);
  Py_DECREF(capsule);  // the function holds it
  if (fn == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(fn);
}

}  // namespace pyfastq
