// Letting go of the GIL around waits and large copies.
#pragma once

#include <cstddef>
#include <utility>

#include <pybind11/pybind11.h>

namespace pyfastq {

// Below this many bytes a copy is cheaper than giving up and retaking the GIL.
inline constexpr std::size_t kReleaseGilBytes = 256 * 1024;

// py::gil_scoped_release, but one whose destructor may let an exception out.
// A daemon thread that wants the GIL back while the interpreter finalizes is
// ended by CPython with pthread_exit, which unwinds the thread's stack with a
// forced-unwind exception; through gil_scoped_release's (noexcept) destructor
// that is std::terminate, and the whole process aborts at exit. Here the
// unwind goes on up to CPython's thread start, and only that thread ends.
class ReleaseGil {
 public:
  ReleaseGil() : state_(PyEval_SaveThread()) {}
  ~ReleaseGil() noexcept(false) { PyEval_RestoreThread(state_); }
  ReleaseGil(const ReleaseGil&) = delete;
  ReleaseGil& operator=(const ReleaseGil&) = delete;

 private:
  PyThreadState* state_;
};

// Runs copy(), of `bytes` bytes, without the GIL if it is large: other producers may run meanwhile.
template <typename Copy>
void copy_releasing_gil_if_large(std::size_t bytes, Copy&& copy) {
  if (bytes >= kReleaseGilBytes) {
    ReleaseGil nogil;
    copy();
  } else {
    copy();
  }
}

}  // namespace pyfastq
