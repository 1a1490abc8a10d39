// Owning a ring's memory, and finding a ring by id.
//
// The pybind11 module (pyfastq._core) creates rings; the TF op library
// (pyfastq/_ops.so) finds them by id. Both link this one shared library, so
// there is one registry and one ring object per queue in the process.
//
// A shared ring lives in POSIX shared memory: created under an unguessable
// name with mode 0600 and unlinked at once, so no process dying at any moment
// can leave a segment behind. Other processes map it through its descriptor,
// passed to them as multiprocessing passes descriptors (SCM_RIGHTS or
// inheritance).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "pyfastq/ring.h"

namespace pyfastq {

// What RingMemory::create throws when the block cannot be had: a std::bad_alloc
// (so callers that catch that still do) whose what() says how many bytes the
// ring needs and why it could not get them, which a bare bad_alloc does not.
class PYFASTQ_API RingAllocError : public std::bad_alloc {
 public:
  // any thread: `bytes` is Ring::bytes_needed (kTooManyBytes if it overflows).
  RingAllocError(std::string message, std::uint64_t bytes);
  const char* what() const noexcept override;
  std::uint64_t bytes() const noexcept { return bytes_; }

 private:
  std::string message_;
  std::uint64_t bytes_;
};

class PYFASTQ_API RingMemory : public std::enable_shared_from_this<RingMemory> {
 public:
  // any thread: a new ring, registered under a fresh id: in process-private
  // memory, or with `shared` in shared memory that attach() can map in other
  // processes. Throws std::invalid_argument on bad sizes or options,
  // RingAllocError when the memory cannot be allocated, and std::system_error
  // when a shared ring does not fit in /dev/shm.
  static std::shared_ptr<RingMemory> create(std::uint32_t capacity, const std::vector<std::uint64_t>& component_bytes,
                                            bool shared = false, const RingOptions& options = {});
  // any thread: maps the shared ring behind `fd` (a descriptor of another
  // RingMemory's fd(), in any process); takes a duplicate, the caller keeps
  // `fd`. Throws std::runtime_error if it holds no ring.
  static std::shared_ptr<RingMemory> attach(int fd);

  // owner only: runs as the last shared_ptr goes; unregisters, unpins, unmaps, closes fd().
  ~RingMemory();
  RingMemory(const RingMemory&) = delete;
  RingMemory& operator=(const RingMemory&) = delete;

  // any thread: the ring; each of its methods says who may call it.
  Ring& ring() noexcept { return ring_; }
  // any thread: what find_ring() finds this ring by, in this process.
  std::uint64_t id() const noexcept { return id_; }
  // any thread: the size of the mapping.
  std::size_t bytes() const noexcept { return bytes_; }
  // any thread: the shared-memory descriptor (close-on-exec), or -1 for a private ring.
  int fd() const noexcept { return fd_; }

  // any thread: page-locks the whole block for CUDA (cuda_host.h), in this
  // process's mapping, the first time it is asked; later calls return the
  // first one's answer. True if the block is pinned; if not, *why says why.
  // A forked child's copy of a ring its parent pinned is not pinned: CUDA does
  // not carry over a fork, and the pinning stays the parent's to undo.
  bool pin(std::string* why = nullptr);
  // any thread: whether pin() pinned the block, in this process.
  bool pinned() const noexcept;

 private:
  RingMemory(void* base, std::size_t bytes, int fd);
  // The deleter of every RingMemory's shared_ptr: deletes here, or on a thread
  // of its own under a TeardownElsewhere.
  static void destroy(RingMemory* mem) noexcept;
  void register_self();
  void* base_;
  std::size_t bytes_;
  int fd_;
  Ring ring_;
  std::uint64_t id_ = 0;
  std::once_flag pin_once_;
  std::atomic<bool> pinned_{false};
  unsigned pinned_forks_ = 0;  // the fork count (see pin) when pinned: written once, before pinned_
  std::string pin_error_;      // written once, under pin_once_
};

// any thread: while one lives on a thread, a ring whose last owner lets go
// there is torn down (unpinned, unmapped) on a thread of its own instead. For
// threads that must not stall: TF's GPU event-manager thread runs every GPU
// completion of the process, and cudaHostUnregister of a large ring takes long.
class PYFASTQ_API TeardownElsewhere {
 public:
  TeardownElsewhere() noexcept;
  ~TeardownElsewhere();
  TeardownElsewhere(const TeardownElsewhere&) = delete;
  TeardownElsewhere& operator=(const TeardownElsewhere&) = delete;
};

// any thread: the ring registered under `id`, or nullptr once its owners have all let go.
PYFASTQ_API std::shared_ptr<RingMemory> find_ring(std::uint64_t id);

}  // namespace pyfastq
