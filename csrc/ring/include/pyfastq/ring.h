// pyfastq ring: a bounded multi-producer multi-consumer queue of fixed-size
// element slots, laid out by offsets in one block of memory so the same ring
// works in process memory and in POSIX shared memory.
//
// Plain C++17: no Python, no TensorFlow.
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
//
// Waiting is a spin, then a park on a futex word (an epoch counter that is
// bumped on every push); wakes are only issued when someone is parked. The
// first waiter of a queue spins for up to 50 us, the others briefly: a
// partner that keeps pace then never pays for a wake. The
// futex words are not process-private, so producers in other processes that
// map the same block park and wake with the consumer.
//
// Ordered puts: a turnstile in the header lets P producers commit in a fixed
// round-robin (ticket k*P + i is producer i's k-th element), skipping those
// that have finished, while they fill their elements in parallel.
//
// Shuffled rings (TF's RandomShuffleQueue order): producers push to the
// ready queue as before; consumers move what is ready into a pool of slot
// indices and pick from it at random, so elements are mixed without moving
// their data. The pool is the consumers' alone and they take it under a
// short lock: a uniform pick with swap-remove needs it to hold still, and
// consumers are few. The producers' side stays lock-free.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "pyfastq/api.h"

namespace pyfastq {

// The block's layout and the library's ABI: bumped on any change to either.
// Rings of another version are refused (attach), and so are libraries
// (ring_library_version) of another version than the modules' headers.
inline constexpr std::uint32_t kRingVersion = 6;

// any thread: kRingVersion as the loaded library was built with. The modules
// that link it compare it with their own, so a stale library is refused, not misread.
PYFASTQ_API std::uint32_t ring_library_version() noexcept;

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

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
inline Deadline no_deadline() { return Deadline::max(); }

// Queue state; only ever moves away from kOpen, once.
enum class State : std::uint32_t { kOpen = 0, kClosed = 1, kCancelled = 2, kFailed = 3 };

enum class Status {
  kOk,
  kTimeout,    // deadline passed; nothing taken or given
  kClosed,     // producer: no more puts. consumer: closed and too few left
  kCancelled,  // close(cancel=true) was called
  kFailed,     // fail() was called; see fail_message()
  kAbandoned,  // the caller's abandon flag was raised (op cancelled, Ctrl-C)
  kTooLarge,   // more than capacity
};

// any thread.
PYFASTQ_API const char* status_name(Status s);

// What a wait reports on a ring in state `s`: kOk while open, else the end.
constexpr Status status_of(State s) noexcept {
  switch (s) {
    case State::kOpen: return Status::kOk;
    case State::kClosed: return Status::kClosed;
    case State::kCancelled: return Status::kCancelled;
    case State::kFailed: return Status::kFailed;
  }
  return Status::kFailed;
}

// One component of an element: where it sits inside a slot.
struct Component {
  std::uint64_t offset;  // from the slot's start, kSlotAlignment aligned
  std::uint64_t nbytes;
};

// How a ring hands out its elements; fixed by create().
struct RingOptions {
  bool shuffle = false;                 // a uniformly random ready element per pick, not the oldest
  std::uint32_t min_after_dequeue = 0;  // shuffle: while open, a pop never leaves fewer behind (< capacity)
  std::uint64_t seed = 0;               // shuffle: seeds the picks, so one interleaving gives one order
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
  std::uint64_t magic;
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
  std::uint32_t flags;  // reserved for the owner (e.g. shared memory)
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

struct Counters {
  std::uint64_t puts;        // committed elements, all time
  std::uint64_t gets;        // popped elements, all time
  std::uint64_t size;        // ready to pop now
  std::uint64_t put_wait_ns;  // producers parked waiting for a free slot
  std::uint64_t get_wait_ns;  // consumers parked waiting for elements
  std::uint32_t put_waiters;  // producers parked now, waiting for a free slot
  std::uint32_t get_waiters;  // consumers parked now, waiting for elements
  std::uint64_t put_blocked_ns;  // time at least one producer was parked
  std::uint64_t get_blocked_ns;  // time at least one consumer was parked
  std::uint64_t fill_hist[kFillBins];  // see RingHeader::fill_hist
};

// A view of a ring that lives in memory someone else owns. Copyable: it is a
// few pointers; the ring's state is all in the block.
class PYFASTQ_API Ring {
 public:
  // any thread: bytes needed for a ring of `capacity` slots of `slot_bytes`
  // each (the stride layout() returns); kTooManyBytes if that overflows.
  static std::size_t bytes_needed(std::uint32_t capacity, std::uint64_t slot_bytes);
  // any thread: lays out components one after another, each kSlotAlignment
  // aligned; fills their offsets and returns the slot stride (a multiple of
  // kSlotAlignment, at least kSlotAlignment), or kTooManyBytes if that overflows.
  static std::uint64_t layout(Component* components, std::uint32_t n);

  // owner only, before anyone else views `memory`: builds a new open ring in
  // it (bytes_needed() bytes, 64-byte aligned, zeroed or not). Throws
  // std::invalid_argument on bad sizes (kTooManyBytes among them) or options.
  static Ring create(void* memory, std::size_t memory_bytes, std::uint32_t capacity,
                     const Component* components, std::uint32_t num_components, const RingOptions& options = {});
  // any thread: views a ring another Ring::create built in `memory` (e.g. in
  // another process). Throws std::runtime_error if the block does not hold one.
  static Ring attach(void* memory, std::size_t memory_bytes);

  // any thread: a view of no ring (valid() is false) until one is assigned.
  Ring() = default;

  // Closing rule (TF's FIFOQueue's): a put that began while the ring was open
  // completes once room frees, even if close() comes while it waits; only
  // close(cancel=true) and fail() refuse it. A put beginning after close is
  // refused (kClosed). Consumers of a closed ring wait for the puts under way.

  // producer side: waits for a free slot; on kOk `*slot` is the producer's
  // until commit() or abort(). One whole put: begin_put(), acquire_begun(), end_put().
  [[nodiscard]] Status acquire(std::uint32_t* slot, Deadline deadline = no_deadline(),
                               const std::atomic<bool>* abandon = nullptr) noexcept;
  // producer side: waits for n free slots and takes them at once, holding
  // none while it waits; with allow_smaller, takes as many as are free (at
  // least one). `*got` is the number taken, each the producer's until commit
  // or abort. n > capacity is kTooLarge.
  [[nodiscard]] Status acquire_many(std::uint32_t n, std::uint32_t* slots, std::uint32_t* got,
                                    bool allow_smaller = false, Deadline deadline = no_deadline(),
                                    const std::atomic<bool>* abandon = nullptr) noexcept;
  // producer side: a put that waits in several calls (between them the caller
  // checks for signals, say) begins once, so that a close() between two calls
  // does not refuse it. False, and nothing begun, if the ring is not open.
  // Every true is matched by one end_put().
  [[nodiscard]] bool begin_put() noexcept;
  // producer side: acquire_many() for a put already begun: waits through
  // close, ends on cancel, fail, the deadline or the abandon flag.
  [[nodiscard]] Status acquire_begun(std::uint32_t n, std::uint32_t* slots, std::uint32_t* got,
                                     bool allow_smaller = false, Deadline deadline = no_deadline(),
                                     const std::atomic<bool>* abandon = nullptr) noexcept;
  // producer side: the put begun is over (the slots it took stay the
  // producer's until commit or abort).
  void end_put() noexcept;
  // producer side: never waits; a put of its own (refused once the ring is not open).
  [[nodiscard]] bool try_acquire(std::uint32_t* slot, Status* why_not = nullptr) noexcept;
  // producer side: publishes a filled slot to consumers.
  void commit(std::uint32_t slot) noexcept;
  // producer side: gives an unfilled slot back; nothing is enqueued.
  void abort(std::uint32_t slot) noexcept;

  // consumer side: waits for `n` elements and takes them in FIFO order into
  // `slots`, all at once or not at all. After close, with fewer than n left:
  // if allow_smaller and some are left, takes those; otherwise kClosed and the
  // elements stay. `*got` is the number taken. Each slot is the consumer's
  // until release().
  // A shuffled ring picks each of the n uniformly at random among the ready
  // elements (RandomShuffleQueue). While open it waits until n can be taken
  // leaving min_after_dequeue behind, then picks them one by one; after close
  // that hold-back ends and the rest drains in random order. The n are taken
  // at once, so a cancelled pop takes nothing; a batch with
  // n + min_after_dequeue > capacity therefore cannot form while open and
  // waits for close (TF's queue would take its elements one by one).
  // n > capacity is kTooLarge.
  [[nodiscard]] Status pop(std::uint32_t n, std::uint32_t* slots, std::uint32_t* got, bool allow_smaller = false,
             Deadline deadline = no_deadline(), const std::atomic<bool>* abandon = nullptr) noexcept;
  // consumer side: gives a slot whose data is no longer needed back to producers.
  void release(std::uint32_t slot) noexcept;
  // consumer side: release() of n slots, waking parked producers once for all of them.
  void release_many(const std::uint32_t* slots, std::uint32_t n) noexcept;
  // consumer side, once per dequeue as it begins: counts how full it finds
  // the ring in the fill-level histogram (Counters::fill_hist).
  void record_fill() noexcept;

  // any thread: no more puts; waiters wake. cancel drops what is left and
  // consumers get kCancelled. Returns false if the ring was already ended.
  bool close(bool cancel = false) noexcept;
  // any thread: ends the ring with an error message consumers will report.
  bool fail(const char* message, std::size_t length) noexcept;
  // any thread: wakes every parked waiter so it re-checks its abandon flag.
  void wake_all() noexcept;

  // Ordered puts.
  // owner only, before the producers start (never while one runs). Ticket
  // k*workers + i is producer i's k-th element; 1 <= workers <= kMaxTurnWorkers.
  [[nodiscard]] bool begin_turns(std::uint32_t workers) noexcept;
  // owner only, before the producers start: as begin_turns, with the turn at `first`.
  [[nodiscard]] bool begin_turns_at(std::uint32_t workers, std::uint64_t first) noexcept;
  // producer side: waits until `ticket` may commit: kOk when it is its turn
  // (even on an ended ring: the acquire that follows reports the end), else
  // kClosed, kCancelled or kFailed once the ring has ended. The turn is kept
  // while the caller retries, so a put that times out can try again with the
  // same ticket.
  [[nodiscard]] Status wait_turn(std::uint64_t ticket, Deadline deadline = no_deadline(),
                   const std::atomic<bool>* abandon = nullptr) noexcept;
  // producer side: the element of `ticket` is committed; the next ticket's
  // producer may go.
  void pass_turn(std::uint64_t ticket) noexcept;
  // producer side: producer `worker` made `count` elements and makes no more;
  // its later tickets are skipped.
  void finish_turns(std::uint32_t worker, std::uint64_t count) noexcept;
  // any thread: the ticket that may commit now; kNoTurn once every ordered producer has finished.
  std::uint64_t turn() const noexcept { return header_->turns.turn.load(std::memory_order_acquire); }

  // Positions and writers: a Producer reading a random-access source tags
  // each element with its position in the run; consumers record the tags of
  // what they take, so the trainer can say exactly what was taken (a
  // checkpoint), whichever order elements were made and taken in. A writer
  // that names itself (set_writer) has its held slots and puts under way
  // counted apart, so that once it is dead they can be given back.

  // owner only, before the producers start: consumers record the positions
  // they take from now on; every position below `watermark` counts as taken.
  void begin_tracking(std::uint64_t watermark) noexcept;
  // owner only, after begin_tracking and before the producers start: marks
  // `position` (at or above the watermark, below it + kTakenWindow) taken.
  void mark_taken(std::uint64_t position) noexcept;
  // any thread: every position below it was taken.
  std::uint64_t taken_watermark() const noexcept { return header_->track.watermark.load(std::memory_order_seq_cst); }
  // any thread: whether `position` (at or above taken_watermark()) was taken.
  bool taken(std::uint64_t position) const noexcept;
  // any thread: true once a position came kTakenWindow or more above the
  // watermark: what was taken is no longer known exactly.
  bool tracking_overflowed() const noexcept { return header_->track.overflow.load(std::memory_order_acquire) != 0; }
  // the slot's holder, between acquire and commit: the position the element reads.
  void set_tag(std::uint32_t slot, std::uint64_t position) noexcept { tags()[slot] = position; }
  // this view only, before it puts anything: its puts are writer `writer`'s
  // (1 .. kMaxWriters - 1; 0: unnamed); with `commits`, each slot it
  // commits adds one to that word, right after the commit. A writer killed
  // between the two (a few instructions) has one committed element counted
  // as not: whoever goes by the count makes it again.
  [[nodiscard]] bool set_writer(std::uint32_t writer, std::atomic<std::uint64_t>* commits = nullptr) noexcept;
  // any thread, once writer `writer` is dead (never while it runs): the slots
  // it held go back to the free queue and its puts under way end, so neither
  // producers nor the consumers of a closed ring wait for them.
  // Returns the slots given back.
  std::uint32_t reclaim_writer(std::uint32_t writer) noexcept;

  // the slot's holder only: the producer between acquire and commit/abort,
  // the consumer between pop and release.
  std::uint8_t* slot_data(std::uint32_t slot) const noexcept {
    return base_ + header_->slots_offset + std::uint64_t(slot) * header_->slot_bytes;
  }
  // any thread.
  State state() const noexcept { return State(header_->state.load(std::memory_order_acquire)); }
  // any thread: the message of the first fail(); empty unless the ring failed.
  std::string fail_message() const;
  // any thread: the layout, fixed by create().
  std::uint32_t capacity() const noexcept { return header_->capacity; }
  // any thread.
  std::uint64_t slot_bytes() const noexcept { return header_->slot_bytes; }
  // any thread: fixed by create().
  bool shuffled() const noexcept { return header_->pool.enabled != 0; }
  // any thread: fixed by create(); 0 unless shuffled.
  std::uint32_t min_after_dequeue() const noexcept { return header_->pool.min_after_dequeue; }
  // any thread.
  std::uint32_t num_components() const noexcept { return header_->num_components; }
  // any thread.
  const Component& component(std::uint32_t i) const noexcept { return header_->components[i]; }
  // any thread: elements ready to pop now (a shuffled ring's pool included).
  std::uint64_t size() const noexcept;
  // any thread.
  Counters counters() const noexcept;
  // any thread: the block itself, for tests and diagnostics; not part of the ring's API.
  RingHeader* header() const noexcept { return header_; }
  // any thread.
  bool valid() const noexcept { return header_ != nullptr; }

 private:
  Ring(std::uint8_t* base, RingHeader* header) : base_(base), header_(header) {}
  IndexCell* free_cells() const noexcept {
    return reinterpret_cast<IndexCell*>(base_ + header_->free_cells_offset);
  }
  IndexCell* ready_cells() const noexcept {
    return reinterpret_cast<IndexCell*>(base_ + header_->ready_cells_offset);
  }
  std::uint32_t* pool_cells() const noexcept {
    return reinterpret_cast<std::uint32_t*>(base_ + header_->pool_cells_offset);
  }
  Status pop_shuffled(std::uint32_t n, std::uint32_t* slots, std::uint32_t* got, bool allow_smaller,
                      Deadline deadline, const std::atomic<bool>* abandon) noexcept;
  bool lock_pool(Deadline give_up, bool give_up_once_ended) noexcept;
  void unlock_pool() noexcept;
  void absorb_ready() noexcept;
  std::uint32_t pick(std::uint32_t n, std::uint32_t* slots) noexcept;
  bool end_with(State s) noexcept;
  void drain_to_free() noexcept;
  void skip_finished_turns() noexcept;
  std::uint64_t* tags() const noexcept { return reinterpret_cast<std::uint64_t*>(base_ + header_->tags_offset); }
  std::atomic<std::uint32_t>* owners() const noexcept {
    return reinterpret_cast<std::atomic<std::uint32_t>*>(base_ + header_->owners_offset);
  }
  std::atomic<std::uint64_t>* taken_words() const noexcept {
    return reinterpret_cast<std::atomic<std::uint64_t>*>(base_ + header_->taken_offset);
  }
  std::atomic<std::uint32_t>& inflight() const noexcept {
    return writer_ != 0 ? header_->track.inflight[writer_] : header_->inflight;
  }
  std::uint32_t inflight_total() const noexcept;
  void took(std::uint32_t slot) noexcept;
  void record_taken(const std::uint32_t* slots, std::uint32_t n) noexcept;
  void mark_bit(std::uint64_t position) noexcept;

  std::uint8_t* base_ = nullptr;
  RingHeader* header_ = nullptr;
  std::uint32_t writer_ = 0;                       // set_writer's
  std::atomic<std::uint64_t>* commits_ = nullptr;  // set_writer's
};

}  // namespace pyfastq
