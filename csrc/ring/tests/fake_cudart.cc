// A stand-in for the CUDA runtime's host-registration calls, for test_pin: it
// counts the calls, notes the thread of the last unregister, and checks that
// what is unregistered was registered and is still mapped.
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

extern "C" {
__attribute__((visibility("default"))) std::atomic<int> fake_registers{0};
__attribute__((visibility("default"))) std::atomic<int> fake_unregisters{0};
__attribute__((visibility("default"))) std::atomic<int> fake_refuse{0};  // nonzero: cudaHostRegister fails
__attribute__((visibility("default"))) std::atomic<void*> fake_registered{nullptr};
__attribute__((visibility("default"))) std::atomic<long> fake_unregister_thread{0};  // its kernel thread id

__attribute__((visibility("default"))) int cudaHostRegister(void* p, std::size_t, unsigned int flags) {
  if (flags != 1) std::abort();  // pyfastq asks for cudaHostRegisterPortable
  if (fake_refuse.load()) return 2;  // cudaErrorMemoryAllocation
  fake_registers.fetch_add(1);
  fake_registered.store(p);
  return 0;
}

__attribute__((visibility("default"))) int cudaHostUnregister(void* p) {
  if (p != fake_registered.load()) std::abort();
  void* page = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t(4095));
  if (msync(page, 4096, MS_ASYNC) != 0) std::abort();  // unmapped already
  fake_unregister_thread.store(static_cast<long>(syscall(SYS_gettid)));
  fake_unregisters.fetch_add(1);
  return 0;
}

__attribute__((visibility("default"))) int cudaGetLastError() { return 0; }
__attribute__((visibility("default"))) const char* cudaGetErrorString(int) { return "fake error"; }
}
