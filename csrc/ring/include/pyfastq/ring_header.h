// The block a pyfastq ring lives in: its header, its index queues' state,
// the shuffle pool, the turnstile and the position tracking, all addressed by
// offsets so the same block works in process memory and in POSIX shared memory.
// Ring (pyfastq/ring.h) is the API; this is what its memory holds.
//
// Layout of the block (all offsets from the block's start, 64-byte aligned):
//
//   RingHeader | free cells [capacity] | ready cells [capacity] | pool cells [capacity] |
//   tags [capacity] | owners [capacity] | taken bits [kTakenBits] | slots [capacity]
//
// Every slot index lives in exactly one place at a time: the free queue, a
// producer (between acquire and commit/abort), the ready queue, or a consumer
// (between pop and release). Both queues therefore hold at most `capacity`
// indices and a push never waits. They are Vyukov bounded MPMC queues (one
// sequence number per cell), so the fast path is a CAS and two stores.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace pyfastq {

// The block's layout and the library's ABI: bumped on any change to either.
// Rings of another version are refused (attach), and so are libraries
// (ring_library_version) of another version than the modules' headers.
inline constexpr std::uint32_t kRingVersion = 7;

inline constexpr std::size_t kCacheLineSize = 64;
inline constexpr std::size_t kSlotAlignment = 64;  // TF wants 64-byte aligned tensor data
inline constexpr std::uint32_t kMaxComponents = 128;
inline constexpr std::size_t kFailMessageBytes = 16384;
inline constexpr std::uint32_t kMaxTurnWorkers = 256;
inline constexpr std::uint64_t kNoTurn = ~std::uint64_t{0};  // every ordered producer has finished
inline constexpr std::uint32_t kFillBins = 10;  // the fill-level histogram's bins: tenths of capacity
// Writers that Ring::set_writer can name (1 .. kMaxWriters - 1; 0 is "no writer of its own").
inline constexpr std::uint32_t kMaxWriters = 256;
// What a slot's tag holds when its element reads no position of a run.
inline constexpr std::uint64_t kNoPosition = ~std::uint64_t{0};
// The taken bits: position p's is bit p % kTakenBits. Tracking holds positions
// up to kTakenWindow (half of them) above the watermark, so that the bit of a
// position the watermark has just passed, cleared a moment after it moves,
// is never read as that of a position in the window (see Ring::mark_bit).
inline constexpr std::uint64_t kTakenBits = std::uint64_t{1} << 21;
inline constexpr std::uint64_t kTakenWindow = kTakenBits / 2;
// What layout() and bytes_needed() return for a size that 64 bits cannot hold:
// no allocation can give that many bytes, so it fails as any too-large one does.
inline constexpr std::uint64_t kTooManyBytes = ~std::uint64_t{0};

// One component of an element: where it sits inside a slot.
struct Component {
  std::uint64_t offset;  // from the slot's start, kSlotAlignment aligned
  std::uint64_t nbytes;
};

// A cell of an index queue. The sequence number tells whose turn the cell is.
struct IndexCell {
  std::atomic<std::uint64_t> seq;
  std::uint32_t value;
};

// Head and tail of one Vyukov queue, each on its own cache line, plus the
// futex word that waiters of the queue's consumers park on.
struct alignas(kCacheLineSize) IndexQueueState {
  // Align to cache line size to avoid false sharing between pushers and poppers
  alignas(kCacheLineSize) std::atomic<std::uint64_t> tail;  // next push position
  alignas(kCacheLineSize) std::atomic<std::uint64_t> head;  // next pop position
  alignas(kCacheLineSize) std::atomic<std::uint32_t> epoch;  // futex word: bumped after each push
  std::atomic<std::uint32_t> waiters;                         // parked (or about to park) poppers
  // Smallest tail a parked popper needs before it can succeed: a push wakes
  // them only from there on, so a consumer waiting for a batch of n does not
  // cost the producer n wake-up syscalls.
  std::atomic<std::uint64_t> wake_at;
  std::atomic<std::uint64_t> wait_ns;                         // total time poppers spent parked
  // Time at least one popper was parked (wait_ns sums over poppers): with
  // eight producers blocked, it says how long producing stalled, not 8x that.
  std::atomic<std::uint32_t> parked;        // poppers parked now, for blocked_ns
  std::atomic<std::uint64_t> parked_since;  // Clock ns when parked last left 0
  std::atomic<std::uint64_t> blocked_ns;
  // Poppers spinning before they park (at most one: see Ring::acquire_begun).
  std::atomic<std::uint32_t> spinners;
};

// A shuffled ring's pool: the slot indices consumers pick from. Everything
// but `size` and `gets` is touched only under `lock`.
struct alignas(kCacheLineSize) ShufflePool {
  alignas(kCacheLineSize) std::atomic<std::uint32_t> lock;  // futex word: 0 free, 1 held, 2 held and waited for
  std::uint32_t enabled;
  std::uint32_t min_after_dequeue;
  std::atomic<std::uint32_t> size;  // indices in the pool (read without the lock by size())
  std::atomic<std::uint64_t> gets;  // elements picked, all time
  std::uint64_t rng[4];             // xoshiro256** state
};

// Round-robin commit order for ordered producers (see Ring::begin_turns).
struct alignas(kCacheLineSize) Turnstile {
  alignas(kCacheLineSize) std::atomic<std::uint64_t> turn;  // the ticket that may commit now
  alignas(kCacheLineSize) std::atomic<std::uint32_t> epoch;  // futex word: bumped when the turn moves
  std::atomic<std::uint32_t> waiters;
  std::uint32_t workers;  // P; 0 while no ordered producer runs
  // Worker i has made this many elements and will make no more (kNoTurn: still producing).
  std::atomic<std::uint64_t> finished_at[kMaxTurnWorkers];
};

// What consumers have taken, by position of a run (see Ring::begin_tracking),
// and what each named writer holds, so that a dead writer's share can be
// given back (Ring::reclaim_writer).
struct alignas(kCacheLineSize) Tracking {
  alignas(kCacheLineSize) std::atomic<std::uint64_t> watermark;  // every position below it was taken
  std::atomic<std::uint32_t> enabled;
  std::atomic<std::uint32_t> overflow;  // a position came kTakenWindow or more above the watermark
  // Per named writer: its puts under way plus the slots it holds (RingHeader::inflight for the others).
  alignas(kCacheLineSize) std::atomic<std::uint32_t> inflight[kMaxWriters];
};

struct RingHeader {
  // kMagic once the ring is built: create() stores it last (release) and
  // attach() loads it first (acquire), so a ring seen is a ring whole.
  std::atomic<std::uint64_t> magic;
  std::uint32_t version;
  std::uint32_t capacity;
  std::uint64_t slot_bytes;   // stride between slots
  std::uint64_t total_bytes;  // of the whole block
  std::uint64_t free_cells_offset;
  std::uint64_t ready_cells_offset;
  std::uint64_t pool_cells_offset;
  std::uint64_t tags_offset;    // per slot: the position its element reads (kNoPosition: none)
  std::uint64_t owners_offset;  // per slot: the named writer holding it (0: none or unnamed)
  std::uint64_t taken_offset;   // kTakenBits bits: positions taken above the watermark, by position % kTakenBits
  std::uint64_t slots_offset;
  std::uint32_t num_components;
  Component components[kMaxComponents];

  IndexQueueState free_q;   // producers pop free slots, consumers push them back
  IndexQueueState ready_q;  // producers push filled slots, consumers pop them
  ShufflePool pool;         // a shuffled ring's consumers: what they pick from
  // How full consumers found the ring as they came for data (record_fill):
  // bin i counts size/capacity in [i/kFillBins, (i+1)/kFillBins), the last bin holding full.
  alignas(kCacheLineSize) std::atomic<std::uint64_t> fill_hist[kFillBins];

  alignas(kCacheLineSize) std::atomic<std::uint32_t> state;
  // Puts under way (begun, not ended) plus slots held between acquire and
  // commit/abort: a closed ring is drained only when none are left, so a put
  // that began before close still arrives.
  std::atomic<std::uint32_t> inflight;
  std::atomic<std::uint32_t> fail_claim;   // first fail() wins and writes the message
  std::atomic<std::uint32_t> fail_length;  // published after the message is written
  char fail_message[kFailMessageBytes];

  Turnstile turns;
  Tracking track;
};

static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "ring needs lock-free 64-bit atomics");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "ring needs lock-free 32-bit atomics");
static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t), "futex words must be plain 32 bits");
static_assert(alignof(IndexQueueState) == kCacheLineSize, "indices must sit on their own cache lines");

}  // namespace pyfastq
