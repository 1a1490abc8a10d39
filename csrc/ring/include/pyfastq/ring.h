// pyfastq ring: a bounded multi-producer multi-consumer queue of fixed-size
// element slots, laid out by offsets in one block of memory so the same ring
// works in process memory and in POSIX shared memory.
//
// Plain C++17: no Python, no TensorFlow. What the block holds, and how it is
// laid out, is pyfastq/ring_header.h; this is the API.
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
#include "pyfastq/ring_header.h"

namespace pyfastq {

// any thread: kRingVersion as the loaded library was built with. The modules
// that link it compare it with their own, so a stale library is refused, not misread.
PYFASTQ_API std::uint32_t ring_library_version() noexcept;

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

// How a ring hands out its elements; fixed by create().
struct RingOptions {
  bool shuffle = false;                 // a uniformly random ready element per pick, not the oldest
  std::uint32_t min_after_dequeue = 0;  // shuffle: while open, a pop never leaves fewer behind (< capacity)
  std::uint64_t seed = 0;               // shuffle: seeds the picks, so one interleaving gives one order
};

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

  // A put is begin_put(), one or more acquire_begun() calls (between them the
  // caller checks for signals, say), then end_put().

  // producer side: a put begins once, so that a close() between two of its
  // acquire_begun() calls does not refuse it. False, and nothing begun, if
  // the ring is not open. Every true is matched by one end_put().
  [[nodiscard]] bool begin_put() noexcept;
  // producer side, in a put begun: waits for n free slots and takes them at
  // once, holding none while it waits; with allow_smaller, takes as many as
  // are free (at least one). `*got` is the number taken, each the producer's
  // until commit or abort. Waits through close; ends on cancel, fail, the
  // deadline or the abandon flag. n > capacity is kTooLarge.
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
  void drain_pool() noexcept;
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
