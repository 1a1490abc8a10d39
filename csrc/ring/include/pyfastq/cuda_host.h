// Page-locking host memory for CUDA without depending on CUDA.
//
// pyfastq has no compile-time CUDA dependency: the CUDA runtime (libcudart)
// is opened with dlopen the first time memory is to be pinned, and where it
// cannot be opened, or has no device, nothing is pinned and nothing else
// changes. Pinned ("page-locked", registered) memory is what a GPU's DMA
// engine can read directly, so a host-to-device copy from it needs no staging
// copy and runs asynchronously.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "pyfastq/api.h"

namespace pyfastq {

// any thread, before the first pin: extra paths of libcudart to try after
// $PYFASTQ_CUDART and the copies the dynamic loader finds by name (a pip
// install of TF's CUDA libraries keeps them in site-packages, off its path).
PYFASTQ_API void set_cudart_candidates(const std::vector<std::string>& paths);

// any thread, before the first pin: the major version of the CUDA runtime TF
// was built with ("12"; "" for none). Given one, only that version's runtime
// is used (libcudart.so.<major>): the one TF loaded, or else the same one TF
// will load; a runtime of another version beside TF's would be a second one in
// the process. Without one, the newest runtime found is used.
PYFASTQ_API void set_cudart_version(const std::string& major);

// any thread: cudaHostRegister(base, bytes, portable). True if the memory is
// now pinned; false, with the reason in *why (if given), where there is no
// CUDA runtime, no device, or CUDA refused.
PYFASTQ_API bool cuda_host_register(void* base, std::size_t bytes, std::string* why = nullptr) noexcept;

// any thread: cudaHostUnregister(base) of memory that cuda_host_register pinned.
// Must run before that memory is unmapped.
PYFASTQ_API void cuda_host_unregister(void* base) noexcept;

// any thread: the libcudart that was opened, or why none was ("" before the first try).
PYFASTQ_API std::string cudart_description();

}  // namespace pyfastq
