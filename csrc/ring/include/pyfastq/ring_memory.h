// Owning a ring's memory, and finding a ring by id.
//
// The pybind11 module (pyfastq._core) creates rings; the TF op library
// (pyfastq/_ops.so) finds them by id. Both link this one shared library, so
// there is one registry and one ring object per queue in the process.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pyfastq/ring.h"

namespace pyfastq {

class PYFASTQ_API RingMemory {
 public:
  // A new ring in process-private memory, registered under a fresh id.
  static std::shared_ptr<RingMemory> create(std::uint32_t capacity, const std::vector<std::uint64_t>& component_bytes);

  ~RingMemory();
  RingMemory(const RingMemory&) = delete;
  RingMemory& operator=(const RingMemory&) = delete;

  Ring& ring() noexcept { return ring_; }
  std::uint64_t id() const noexcept { return id_; }
  std::size_t bytes() const noexcept { return bytes_; }

 private:
  RingMemory(void* base, std::size_t bytes);
  void* base_;
  std::size_t bytes_;
  Ring ring_;
  std::uint64_t id_ = 0;
};

// The ring registered under `id`, or nullptr once its owners have all let go.
PYFASTQ_API std::shared_ptr<RingMemory> find_ring(std::uint64_t id);

// Version string of this library, so the two modules can check they load the same one.
PYFASTQ_API const char* ring_library_version();

}  // namespace pyfastq
