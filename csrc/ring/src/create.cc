// Building a ring in a block (create), viewing one another built (attach),
// and the arithmetic that lays the block out.
#include <algorithm>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>

#include "index_queue.h"
#include "pyfastq/ring.h"
#include "random.h"

namespace pyfastq {
namespace {

using detail::kNobody;
using detail::seed_random;

constexpr std::uint64_t kMagic = 0x7079666173747131ull;  // "pyfastq1"

constexpr std::uint64_t align_up(std::uint64_t n, std::uint64_t a) { return (n + a - 1) / a * a; }

// Size arithmetic that saturates at kTooManyBytes: a wrapped size would lay a
// huge element out in a few bytes and let writes run past the block.
static_assert(sizeof(std::size_t) == sizeof(std::uint64_t), "ring sizes are 64-bit");
constexpr std::uint64_t add_bytes(std::uint64_t a, std::uint64_t b) {
  return a > kTooManyBytes - b ? kTooManyBytes : a + b;
}
std::uint64_t mul_bytes(std::uint64_t a, std::uint64_t b) {
  std::uint64_t product;
  return __builtin_mul_overflow(a, b, &product) ? kTooManyBytes : product;
}
constexpr std::uint64_t align_bytes(std::uint64_t n, std::uint64_t a) {
  return n > kTooManyBytes - (a - 1) ? kTooManyBytes : align_up(n, a);
}

struct Offsets {
  std::uint64_t free_cells, ready_cells, pool_cells, tags, owners, taken, slots, total;
};
Offsets offsets_for(std::uint32_t capacity, std::uint64_t slot_bytes) {
  Offsets o;
  // capacity < 2^32 keeps the index arrays far from overflowing; only the slots can.
  const std::uint64_t cells = align_up(std::uint64_t(capacity) * sizeof(IndexCell), kCacheLineSize);
  o.free_cells = align_up(sizeof(RingHeader), kCacheLineSize);
  o.ready_cells = o.free_cells + cells;
  o.pool_cells = o.ready_cells + cells;
  const std::uint64_t pool = align_up(std::uint64_t(capacity) * sizeof(std::uint32_t), kCacheLineSize);
  o.tags = o.pool_cells + pool;
  o.owners = o.tags + align_up(std::uint64_t(capacity) * sizeof(std::uint64_t), kCacheLineSize);
  o.taken = o.owners + align_up(std::uint64_t(capacity) * sizeof(std::uint32_t), kCacheLineSize);
  // The taken bits are touched only by rings that track positions: their pages cost nothing otherwise.
  o.slots = align_up(o.taken + kTakenBits / 8, 4096);  // page-aligned slots: large copies start on a page
  o.total = add_bytes(o.slots, mul_bytes(capacity, slot_bytes));
  return o;
}

}  // namespace

std::uint32_t ring_library_version() noexcept { return kRingVersion; }

std::uint64_t Ring::layout(Component* components, std::uint32_t n) {
  std::uint64_t offset = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    components[i].offset = offset;
    offset = align_bytes(add_bytes(offset, components[i].nbytes), kSlotAlignment);
  }
  return std::max<std::uint64_t>(offset, kSlotAlignment);
}

std::size_t Ring::bytes_needed(std::uint32_t capacity, std::uint64_t slot_bytes) {
  return offsets_for(capacity, slot_bytes).total;
}

Ring Ring::create(void* memory, std::size_t memory_bytes, std::uint32_t capacity, const Component* components,
                  std::uint32_t num_components, const RingOptions& options) {
  if (capacity == 0) throw std::invalid_argument("ring capacity must be at least 1");
  if (options.min_after_dequeue != 0 && !options.shuffle) {
    throw std::invalid_argument("min_after_dequeue needs a shuffled ring");
  }
  if (options.min_after_dequeue >= capacity) {
    throw std::invalid_argument("min_after_dequeue must be below the capacity");
  }
  if (num_components == 0 || num_components > kMaxComponents) {
    throw std::invalid_argument("ring needs 1 to " + std::to_string(kMaxComponents) + " components");
  }
  if (reinterpret_cast<std::uintptr_t>(memory) % kCacheLineSize != 0) {
    throw std::invalid_argument("ring memory must be 64-byte aligned");
  }
  std::uint64_t slot_bytes = kSlotAlignment;
  for (std::uint32_t i = 0; i < num_components; ++i) {
    const auto& c = components[i];
    if (c.offset % kSlotAlignment != 0) throw std::invalid_argument("component offset not 64-byte aligned");
    slot_bytes = std::max(slot_bytes, align_bytes(add_bytes(c.offset, c.nbytes), kSlotAlignment));
  }
  const Offsets o = offsets_for(capacity, slot_bytes);
  if (o.total == kTooManyBytes) throw std::invalid_argument("ring larger than 64 bits of bytes");
  if (memory_bytes < o.total) throw std::invalid_argument("ring memory too small");

  auto* base = static_cast<std::uint8_t*>(memory);
  auto* h = new (memory) RingHeader;
  h->magic.store(0, std::memory_order_relaxed);  // published last
  h->version = kRingVersion;
  h->capacity = capacity;
  h->slot_bytes = slot_bytes;
  h->total_bytes = o.total;
  h->free_cells_offset = o.free_cells;
  h->ready_cells_offset = o.ready_cells;
  h->pool_cells_offset = o.pool_cells;
  h->tags_offset = o.tags;
  h->owners_offset = o.owners;
  h->taken_offset = o.taken;
  h->slots_offset = o.slots;
  h->num_components = num_components;
  std::copy(components, components + num_components, h->components);
  for (IndexQueueState* q : {&h->free_q, &h->ready_q}) {
    q->tail.store(0, std::memory_order_relaxed);
    q->head.store(0, std::memory_order_relaxed);
    q->epoch.store(0, std::memory_order_relaxed);
    q->waiters.store(0, std::memory_order_relaxed);
    q->wait_ns.store(0, std::memory_order_relaxed);
    q->wake_at.store(kNobody, std::memory_order_relaxed);
    q->parked.store(0, std::memory_order_relaxed);
    q->parked_since.store(0, std::memory_order_relaxed);
    q->blocked_ns.store(0, std::memory_order_relaxed);
    q->spinners.store(0, std::memory_order_relaxed);
  }
  h->pool.lock.store(0, std::memory_order_relaxed);
  h->pool.enabled = options.shuffle ? 1 : 0;
  h->pool.min_after_dequeue = options.min_after_dequeue;
  h->pool.size.store(0, std::memory_order_relaxed);
  h->pool.gets.store(0, std::memory_order_relaxed);
  seed_random(h->pool.rng, options.seed);
  for (auto& bin : h->fill_hist) bin.store(0, std::memory_order_relaxed);
  h->state.store(std::uint32_t(State::kOpen), std::memory_order_relaxed);
  h->inflight.store(0, std::memory_order_relaxed);
  h->fail_claim.store(0, std::memory_order_relaxed);
  h->fail_length.store(0, std::memory_order_relaxed);
  h->fail_message[0] = '\0';
  h->turns.turn.store(0, std::memory_order_relaxed);
  h->turns.epoch.store(0, std::memory_order_relaxed);
  h->turns.waiters.store(0, std::memory_order_relaxed);
  h->turns.workers = 0;
  h->track.watermark.store(0, std::memory_order_relaxed);
  h->track.enabled.store(0, std::memory_order_relaxed);
  h->track.overflow.store(0, std::memory_order_relaxed);
  for (auto& n : h->track.inflight) n.store(0, std::memory_order_relaxed);
  auto* tags = reinterpret_cast<std::uint64_t*>(base + o.tags);
  auto* owners = reinterpret_cast<std::atomic<std::uint32_t>*>(base + o.owners);
  for (std::uint32_t i = 0; i < capacity; ++i) {
    tags[i] = kNoPosition;
    new (&owners[i]) std::atomic<std::uint32_t>(0);
  }

  auto* free_cells = reinterpret_cast<IndexCell*>(base + o.free_cells);
  auto* ready_cells = reinterpret_cast<IndexCell*>(base + o.ready_cells);
  for (std::uint32_t i = 0; i < capacity; ++i) {
    // Every slot starts free: cell i holds slot i, filled for lap 0.
    new (&free_cells[i]) IndexCell;
    free_cells[i].value = i;
    free_cells[i].seq.store(i + 1, std::memory_order_relaxed);
    new (&ready_cells[i]) IndexCell;
    ready_cells[i].value = 0;
    ready_cells[i].seq.store(i, std::memory_order_relaxed);
  }
  h->free_q.tail.store(capacity, std::memory_order_relaxed);
  h->magic.store(kMagic, std::memory_order_release);
  return Ring(base, h);
}

Ring Ring::attach(void* memory, std::size_t memory_bytes) {
  auto* h = static_cast<RingHeader*>(memory);
  if (memory_bytes < sizeof(RingHeader) || h->magic.load(std::memory_order_acquire) != kMagic) {
    throw std::runtime_error("memory does not hold a pyfastq ring");
  }
  if (h->version != kRingVersion) {
    throw std::runtime_error("pyfastq ring version " + std::to_string(h->version) + ", this build reads " +
                             std::to_string(kRingVersion));
  }
  if (h->total_bytes > memory_bytes) throw std::runtime_error("pyfastq ring is larger than the memory given");
  return Ring(static_cast<std::uint8_t*>(memory), h);
}

}  // namespace pyfastq
