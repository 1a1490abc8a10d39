#include "pyfastq/ring_memory.h"

#include <sys/mman.h>

#include <mutex>
#include <new>
#include <stdexcept>
#include <unordered_map>

namespace pyfastq {
namespace {

struct Registry {
  std::mutex mu;
  std::unordered_map<std::uint64_t, std::weak_ptr<RingMemory>> rings;
  std::uint64_t next_id = 1;
};

Registry& registry() {
  static auto* r = new Registry;  // never destroyed: ops may look up during interpreter teardown
  return *r;
}

// Huge pages where the kernel gives them on request (as numpy asks for its
// large arrays: fewer TLB misses in large copies), and every page faulted in
// now, so the first laps of the ring cost what later ones do.
void prefault(void* base, std::size_t bytes) {
#ifdef MADV_HUGEPAGE
  madvise(base, bytes, MADV_HUGEPAGE);
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older kernels refuse it and we touch each page
#endif
  if (madvise(base, bytes, MADV_POPULATE_WRITE) != 0) {
    auto* p = static_cast<volatile std::uint8_t*>(base);
    for (std::size_t off = 0; off < bytes; off += 4096) p[off] = 0;
  }
}

}  // namespace

RingMemory::RingMemory(void* base, std::size_t bytes) : base_(base), bytes_(bytes) {}

RingMemory::~RingMemory() {
  if (id_ != 0) {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.rings.find(id_);
    // A weak_ptr that has expired is ours; a live one would be another ring.
    if (it != r.rings.end() && it->second.expired()) r.rings.erase(it);
  }
  munmap(base_, bytes_);
}

std::shared_ptr<RingMemory> RingMemory::create(std::uint32_t capacity,
                                               const std::vector<std::uint64_t>& component_bytes) {
  if (component_bytes.empty() || component_bytes.size() > kMaxComponents) {
    throw std::invalid_argument("a ring needs 1 to " + std::to_string(kMaxComponents) + " components");
  }
  std::vector<Component> comps(component_bytes.size());
  for (std::size_t i = 0; i < comps.size(); ++i) comps[i].nbytes = component_bytes[i];
  const std::uint64_t slot_bytes = Ring::layout(comps.data(), static_cast<std::uint32_t>(comps.size()));
  const std::size_t bytes = Ring::bytes_needed(capacity, slot_bytes);
  // mmap: page-aligned, zeroed, and returned to the OS on close.
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) throw std::bad_alloc();
  prefault(base, bytes);
  std::shared_ptr<RingMemory> mem(new RingMemory(base, bytes));
  mem->ring_ = Ring::create(base, bytes, capacity, comps.data(), static_cast<std::uint32_t>(comps.size()));

  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  mem->id_ = r.next_id++;
  r.rings[mem->id_] = mem;
  return mem;
}

std::shared_ptr<RingMemory> find_ring(std::uint64_t id) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.rings.find(id);
  return it == r.rings.end() ? nullptr : it->second.lock();
}

const char* ring_library_version() { return "pyfastq-ring-1"; }

}  // namespace pyfastq
