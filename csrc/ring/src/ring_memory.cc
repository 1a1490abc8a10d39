#include "pyfastq/ring_memory.h"

#include "pyfastq/cuda_host.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <unordered_map>

namespace pyfastq {
namespace {

struct Registry {
  std::mutex mu;
  std::unordered_map<std::uint64_t, std::weak_ptr<RingMemory>> rings;
  std::uint64_t next_id = 1;
};

Registry* g_registry = nullptr;

Registry& registry() {
  static Registry* r = [] {
    g_registry = new Registry;  // never destroyed: ops may look up during interpreter teardown
    // A fork while another thread holds the lock would leave the child's copy
    // locked for good: hold it across fork(), so both sides get it consistent and free.
    pthread_atfork([] { g_registry->mu.lock(); }, [] { g_registry->mu.unlock(); }, [] { g_registry->mu.unlock(); });
    return g_registry;
  }();
  return *r;
}

// Huge pages where the kernel gives them on request (as numpy asks for its
// large arrays: fewer TLB misses in large copies), and every page faulted in
// now, so the first laps of the ring cost what later ones do. Returns 0, or
// ENOMEM if the kernel has not the memory to populate the block.
int prefault(void* base, std::size_t bytes) {
#ifdef MADV_HUGEPAGE
  madvise(base, bytes, MADV_HUGEPAGE);
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older kernels refuse it and we touch each page
#endif
  if (madvise(base, bytes, MADV_POPULATE_WRITE) == 0) return 0;
  // After ENOMEM, touching every page would summon the OOM killer instead of
  // reporting the failure; any other refusal (an older kernel) falls back to touching.
  if (errno == ENOMEM) return ENOMEM;
  auto* p = static_cast<volatile std::uint8_t*>(base);
  for (std::size_t off = 0; off < bytes; off += 4096) p[off] = 0;
  return 0;
}

// `bytes` with a binary unit, for people: "1.5 GiB".
std::string human_bytes(std::uint64_t bytes) {
  static const char* const kUnits[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double n = static_cast<double>(bytes);
  int unit = 0;
  while (n >= 1024 && unit < 6) {
    n /= 1024;
    ++unit;
  }
  char out[32];
  std::snprintf(out, sizeof out, unit == 0 ? "%.0f %s" : "%.1f %s", n, kUnits[unit]);
  return out;
}

// The ring could not get its memory: says what it needs and why (`err`, an errno; 0 if it is too large to ask for).
[[noreturn]] void throw_alloc_error(std::uint32_t capacity, std::uint64_t slot_bytes, std::uint64_t bytes, int err) {
  std::string message = "a ring of " + std::to_string(capacity) + " slots x ";
  if (bytes == kTooManyBytes) {
    message += slot_bytes == kTooManyBytes ? std::string("more than 2^64 bytes")
                                           : std::to_string(slot_bytes) + " bytes";
    message += " needs more than 2^64 bytes, which no machine can allocate";
  } else {
    message += std::to_string(slot_bytes) + " bytes needs " + std::to_string(bytes) + " bytes (" + human_bytes(bytes) +
               ") and they could not be allocated (" + std::strerror(err) + ")";
  }
  throw RingAllocError(std::move(message), bytes);
}

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

// A POSIX shared memory object of `bytes`, mode 0600, already unlinked: only
// the returned descriptor (and what maps it) keeps it alive.
int anonymous_shm(std::size_t bytes) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    unsigned char random[16];
    if (getrandom(random, sizeof random, 0) != static_cast<ssize_t>(sizeof random)) throw_errno("getrandom");
    std::string name = "/pyfastq-";
    static const char kHex[] = "0123456789abcdef";
    for (unsigned char b : random) {
      name += kHex[b >> 4];
      name += kHex[b & 15];
    }
    const int fd = shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      if (errno == EEXIST) continue;  // 128 random bits taken: try again rather than share
      throw_errno("shm_open");
    }
    shm_unlink(name.c_str());
    // Take the space now: a shared-memory file system that is too small (a
    // container's /dev/shm is often 64 MB) would otherwise fail page by page
    // later, with SIGBUS, in whichever process touched the page.
    const int err = ftruncate(fd, static_cast<off_t>(bytes)) != 0 ? errno : posix_fallocate(fd, 0, static_cast<off_t>(bytes));
    if (err != 0) {
      close(fd);
      std::string message = "a shared ring of " + std::to_string(bytes) + " bytes does not fit in /dev/shm";
      struct statvfs fs;
      if (statvfs("/dev/shm", &fs) == 0) {
        message += " (" + std::to_string(std::uint64_t(fs.f_bavail) * fs.f_frsize) + " bytes free of " +
                   std::to_string(std::uint64_t(fs.f_blocks) * fs.f_frsize) + "; in a container, raise its shm size)";
      }
      throw std::system_error(err, std::generic_category(), message);
    }
    return fd;
  }
  throw std::runtime_error("shm_open: no free name after 8 tries");
}

// How many forks lie between this process and the first pin of its lineage: a
// child's count differs from its parent's, so a ring the parent pinned reads
// as unpinned in the child, which must not unregister it.
std::atomic<unsigned> g_forks{0};

void count_forks() {
  static const int registered = pthread_atfork(nullptr, nullptr, [] { g_forks.fetch_add(1, std::memory_order_relaxed); });
  (void)registered;
}

// How many TeardownElsewhere live on this thread.
thread_local int t_teardown_elsewhere = 0;

}  // namespace

TeardownElsewhere::TeardownElsewhere() noexcept { ++t_teardown_elsewhere; }
TeardownElsewhere::~TeardownElsewhere() { --t_teardown_elsewhere; }

void RingMemory::destroy(RingMemory* mem) noexcept {
  if (t_teardown_elsewhere > 0) {
    try {
      std::thread([mem] { delete mem; }).detach();
      return;
    } catch (const std::system_error&) {  // no thread to be had: torn down here after all
    }
  }
  delete mem;
}

RingAllocError::RingAllocError(std::string message, std::uint64_t bytes)
    : message_(std::move(message)), bytes_(bytes) {}

const char* RingAllocError::what() const noexcept { return message_.c_str(); }

RingMemory::RingMemory(void* base, std::size_t bytes, int fd) : base_(base), bytes_(bytes), fd_(fd) {}

void RingMemory::register_self() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  id_ = r.next_id++;
  r.rings[id_] = weak_from_this();
}

RingMemory::~RingMemory() {
  if (id_ != 0) {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.rings.find(id_);
    // A weak_ptr that has expired is ours; a live one would be another ring.
    if (it != r.rings.end() && it->second.expired()) r.rings.erase(it);
  }
  // Unpinned before it is unmapped: the CUDA runtime keeps the registered range, and would take a
  // later mapping at the same address for pinned memory. Only in the process that pinned it.
  if (pinned()) cuda_host_unregister(base_);
  munmap(base_, bytes_);
  if (fd_ >= 0) close(fd_);
}

bool RingMemory::pin(std::string* why) {
  std::call_once(pin_once_, [this] {
    count_forks();
    std::string error;
    if (cuda_host_register(base_, bytes_, &error)) {
      pinned_forks_ = g_forks.load(std::memory_order_relaxed);
      pinned_.store(true, std::memory_order_release);
    } else {
      pin_error_ = error;
    }
  });
  const bool here = pinned();
  if (why != nullptr) {
    *why = here || !pinned_.load(std::memory_order_acquire)
               ? pin_error_
               : "pinned by the process this one was forked from: CUDA does not carry over a fork";
  }
  return here;
}

bool RingMemory::pinned() const noexcept {
  return pinned_.load(std::memory_order_acquire) && pinned_forks_ == g_forks.load(std::memory_order_relaxed);
}

std::shared_ptr<RingMemory> RingMemory::create(std::uint32_t capacity,
                                               const std::vector<std::uint64_t>& component_bytes, bool shared,
                                               const RingOptions& options) {
  if (component_bytes.empty() || component_bytes.size() > kMaxComponents) {
    throw std::invalid_argument("a ring needs 1 to " + std::to_string(kMaxComponents) + " components");
  }
  std::vector<Component> comps(component_bytes.size());
  for (std::size_t i = 0; i < comps.size(); ++i) comps[i].nbytes = component_bytes[i];
  const std::uint64_t slot_bytes = Ring::layout(comps.data(), static_cast<std::uint32_t>(comps.size()));
  const std::size_t bytes = Ring::bytes_needed(capacity, slot_bytes);
  if (bytes == kTooManyBytes) throw_alloc_error(capacity, slot_bytes, bytes, 0);
  // mmap: page-aligned, zeroed, and returned to the OS on close.
  const int fd = shared ? anonymous_shm(bytes) : -1;
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, shared ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS, fd, 0);
  const int err = base == MAP_FAILED ? errno : prefault(base, bytes);
  if (err != 0) {
    if (base != MAP_FAILED) munmap(base, bytes);
    if (fd >= 0) close(fd);
    throw_alloc_error(capacity, slot_bytes, bytes, err);
  }
  std::shared_ptr<RingMemory> mem(new RingMemory(base, bytes, fd), &RingMemory::destroy);
  mem->ring_ = Ring::create(base, bytes, capacity, comps.data(), static_cast<std::uint32_t>(comps.size()), options);
  mem->register_self();
  return mem;
}

std::shared_ptr<RingMemory> RingMemory::attach(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) throw_errno("fstat of a shared ring's descriptor");
  if (!S_ISREG(st.st_mode) || st.st_size < static_cast<off_t>(sizeof(RingHeader))) {
    throw std::runtime_error("descriptor " + std::to_string(fd) + " is not a pyfastq shared ring");
  }
  const int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) throw_errno("dup of a shared ring's descriptor");
  const auto bytes = static_cast<std::size_t>(st.st_size);
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, own, 0);
  if (base == MAP_FAILED) {
    close(own);
    throw_errno("mmap of a shared ring");
  }
  // Unmaps and closes if attach throws.
  std::shared_ptr<RingMemory> mem(new RingMemory(base, bytes, own), &RingMemory::destroy);
  mem->ring_ = Ring::attach(base, bytes);
  mem->register_self();
  return mem;
}

std::shared_ptr<RingMemory> find_ring(std::uint64_t id) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.rings.find(id);
  return it == r.rings.end() ? nullptr : it->second.lock();
}

}  // namespace pyfastq
