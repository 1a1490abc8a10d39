// pyfastq._core: the producers' side of the ring. This file defines the
// module; each concern registers its own part of it:
//   ring_binding  Ring and Reservation (put, put_many, reserve, ...)
//   fast_put      Queue.put as a builtin function
//   claims        restartable workers' claims table, the shared counter
//   interrupts    Ctrl-C for consumers (SIGINT chaining)
//   errors        the C++ exceptions and their one translator
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "claims.h"
#include "errors.h"
#include "interrupts.h"
#include "pyfastq/cuda_host.h"
#include "pyfastq/ring.h"
#include "ring_binding.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  using namespace pyfastq;
  m.doc() = "pyfastq's ring, producers' side (private: use pyfastq.Queue)";
  // _core and _ops.so must share one ring library, of the version their headers describe.
  if (ring_library_version() != kRingVersion) {
    throw py::import_error("pyfastq's ring library is version " + std::to_string(ring_library_version()) +
                           ", but _core was built for version " + std::to_string(kRingVersion) +
                           ": a stale libpyfastq_ring.so; reinstall pyfastq");
  }
  register_errors();
  m.attr("MAX_ORDERED_WORKERS") = kMaxTurnWorkers;
  m.attr("FILL_BINS") = kFillBins;
  register_interrupts(m);
  m.def("set_cudart_candidates", &set_cudart_candidates, py::arg("paths"),
        "Paths of libcudart to try, after $PYFASTQ_CUDART and the loader's own search, when a ring is first pinned");
  m.def("set_cudart_version", &set_cudart_version, py::arg("major"),
        "The CUDA major version TF was built with: only that runtime is used for pinning (\"\": any)");
  m.def("cudart", &cudart_description, "The CUDA runtime used for pinning, or why there is none (empty before the first pin)");
  register_claims(m);
  register_ring(m);
}
