#include "pyfastq/cuda_host.h"

#include <dlfcn.h>

#include <cstdlib>
#include <iterator>
#include <mutex>

namespace pyfastq {
namespace {

// The CUDA runtime's calls we use, with its ABI: cudaError_t is an int-sized enum, 0 is cudaSuccess.
using HostRegisterFn = int (*)(void*, std::size_t, unsigned int);
using HostUnregisterFn = int (*)(void*);
using GetLastErrorFn = int (*)();
using GetErrorStringFn = const char* (*)(int);
constexpr unsigned int kCudaHostRegisterPortable = 1;  // pinned for every CUDA context, not just the current one

struct Cudart {
  std::once_flag loaded;
  std::mutex mu;  // guards candidates, version and description
  std::vector<std::string> candidates;
  std::string version;
  std::string description;
  HostRegisterFn host_register = nullptr;
  HostUnregisterFn host_unregister = nullptr;
  GetLastErrorFn get_last_error = nullptr;
  GetErrorStringFn get_error_string = nullptr;
};

Cudart& cudart() {
  static Cudart* c = new Cudart;  // never destroyed: rings may be unpinned during teardown
  return *c;
}

// The sonames of the CUDA runtimes TF has been built with, newest first.
const char* const kSonames[] = {"libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so"};

bool bind(Cudart& c, void* handle, const std::string& what) {
  auto reg = reinterpret_cast<HostRegisterFn>(dlsym(handle, "cudaHostRegister"));
  auto unreg = reinterpret_cast<HostUnregisterFn>(dlsym(handle, "cudaHostUnregister"));
  auto last = reinterpret_cast<GetLastErrorFn>(dlsym(handle, "cudaGetLastError"));
  auto str = reinterpret_cast<GetErrorStringFn>(dlsym(handle, "cudaGetErrorString"));
  if (reg == nullptr || unreg == nullptr || last == nullptr || str == nullptr) return false;
  c.host_register = reg;
  c.host_unregister = unreg;
  c.get_last_error = last;
  c.get_error_string = str;
  std::lock_guard<std::mutex> lock(c.mu);
  c.description = what;
  return true;
}

// Opens libcudart once, never closes it: a pinned ring must be unpinned by the library that pinned it.
void load(Cudart& c) {
  const char* env = std::getenv("PYFASTQ_CUDART");
  if (env != nullptr && *env != '\0') {
    const std::string path = env;
    if (path == "0") {
      std::lock_guard<std::mutex> lock(c.mu);
      c.description = "pinning disabled (PYFASTQ_CUDART=0)";
      return;
    }
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr || !bind(c, h, path)) {
      const char* err = dlerror();
      std::lock_guard<std::mutex> lock(c.mu);
      c.description = "PYFASTQ_CUDART=" + path + " is not a CUDA runtime" + (err ? std::string(": ") + err : "");
    }
    return;
  }
  std::vector<std::string> candidates;
  std::string version;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    candidates = c.candidates;
    version = c.version;
  }
  // TF's version alone when it is known, else every version, newest first.
  std::vector<std::string> sonames;
  if (!version.empty()) {
    const std::string soname = "libcudart.so." + version;
    sonames.push_back(soname);
    std::vector<std::string> own;
    for (const std::string& path : candidates) {
      const std::size_t slash = path.rfind('/');
      if (path.compare(slash == std::string::npos ? 0 : slash + 1, std::string::npos, soname) == 0) own.push_back(path);
    }
    candidates = std::move(own);
  } else {
    sonames.assign(std::begin(kSonames), std::end(kSonames));
  }
  // The runtime TF already loaded, if it did: one runtime in the process.
  for (const std::string& name : sonames) {
    if (void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD)) {
      if (bind(c, h, name + " (already loaded)")) return;
    }
  }
  candidates.insert(candidates.end(), sonames.begin(), sonames.end());
  for (const std::string& path : candidates) {
    if (void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      if (bind(c, h, path)) return;
    }
  }
  std::lock_guard<std::mutex> lock(c.mu);
  c.description = version.empty() ? "no CUDA runtime (libcudart) found"
                                   : "no CUDA runtime libcudart.so." + version + " (TensorFlow's version) found";
}

}  // namespace

void set_cudart_candidates(const std::vector<std::string>& paths) {
  Cudart& c = cudart();
  std::lock_guard<std::mutex> lock(c.mu);
  c.candidates = paths;
}

void set_cudart_version(const std::string& major) {
  Cudart& c = cudart();
  std::lock_guard<std::mutex> lock(c.mu);
  c.version = major;
}

bool cuda_host_register(void* base, std::size_t bytes, std::string* why) noexcept {
  try {
    Cudart& c = cudart();
    std::call_once(c.loaded, load, std::ref(c));
    if (c.host_register == nullptr) {
      if (why != nullptr) *why = cudart_description();
      return false;
    }
    const int err = c.host_register(base, bytes, kCudaHostRegisterPortable);
    if (err == 0) return true;
    // A failed runtime call leaves its error as this thread's "last error"; TF's
    // kernel-launch checks read it, so it must not outlive this call.
    c.get_last_error();
    if (why != nullptr) {
      const char* s = c.get_error_string(err);
      *why = "cudaHostRegister failed: " + std::string(s != nullptr ? s : "unknown error") + " (" +
             std::to_string(err) + ")";
    }
    return false;
  } catch (...) {  // std::system_error from call_once, bad_alloc: not pinned, and no exception out of noexcept
    if (why != nullptr) *why = "could not load the CUDA runtime";
    return false;
  }
}

void cuda_host_unregister(void* base) noexcept {
  Cudart& c = cudart();
  if (c.host_unregister == nullptr) return;  // only registered memory comes here, so the runtime is loaded
  if (c.host_unregister(base) != 0) c.get_last_error();
}

std::string cudart_description() {
  Cudart& c = cudart();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.description;
}

}  // namespace pyfastq
