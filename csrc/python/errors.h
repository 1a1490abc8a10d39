// The errors pyfastq._core raises, as C++ exceptions: the module's code
// throws these, and one translator (registered once, at import) raises each
// as its Python exception. pybind11's own exceptions (py::value_error, ...)
// and py::error_already_set pass through as pybind11 raises them.
#pragma once

#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>

#include <pybind11/pybind11.h>

namespace pyfastq {

// pyfastq.QueueClosed: a put the ring refused. `enqueued`: rows of a put_many that went in before.
class QueueClosedError : public std::runtime_error {
 public:
  QueueClosedError(const std::string& message, std::uint64_t enqueued)
      : std::runtime_error(message), enqueued_(enqueued) {}
  std::uint64_t enqueued() const noexcept { return enqueued_; }

 private:
  std::uint64_t enqueued_;
};

// TimeoutError: the deadline passed; nothing was enqueued.
class TimeoutError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// MemoryError with a message saying what could not be had.
class OutOfMemoryError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// OSError(errno, message): a system call failed.
class SystemCallError : public std::runtime_error {
 public:
  SystemCallError(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

// At import: looks pyfastq._errors up once and registers the translator.
void register_errors();

// For code outside pybind11's dispatch (the fast put builtin): sets the
// Python error for the exception `p` as a pybind11-bound call would raise it.
void set_python_error(std::exception_ptr p) noexcept;

}  // namespace pyfastq
