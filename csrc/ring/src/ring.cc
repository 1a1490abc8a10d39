// The ring's put and pop paths (acquire, commit or abort; pop, release) and
// its ending (close, cancel, fail). The index queues they move slot indices
// through are index_queue.h; the shuffled pop is shuffle_pool.cc.
#include "pyfastq/ring.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>

#include "index_queue.h"
#include "park.h"

namespace pyfastq {

using namespace detail;

namespace {

// A producer parked on a full ring asks to be woken once kRefillShare of the
// capacity is free, not at the first free slot: woken per slot, a producer
// keeping pace with its consumer costs that consumer a futex wake and itself
// a trip through the scheduler per element (and, for a Python producer, a
// GIL handoff). Woken per refill, it fills the share in one burst. It still
// takes a single free slot at its next look, within kRefillPark.
constexpr std::uint32_t kRefillShare = 4;  // a quarter of the capacity
constexpr auto kRefillPark = std::chrono::milliseconds(1);

}  // namespace

const char* status_name(Status s) {
  switch (s) {
    case Status::kOk: return "ok";
    case Status::kTimeout: return "timeout";
    case Status::kClosed: return "closed";
    case Status::kCancelled: return "cancelled";
    case Status::kFailed: return "failed";
    case Status::kAbandoned: return "abandoned";
    case Status::kTooLarge: return "too large";
  }
  return "unknown";
}

bool Ring::try_acquire(std::uint32_t* slot, Status* why_not) noexcept {
  inflight().fetch_add(1, std::memory_order_seq_cst);
  const bool open = state() == State::kOpen;
  if (open && pop_n(header_->free_q, free_cells(), header_->capacity, 1, 1, slot) == 1) {
    took(*slot);
    return true;
  }
  inflight().fetch_sub(1, std::memory_order_seq_cst);
  notify_all(header_->ready_q);  // a consumer may be waiting for the last producer to leave
  if (why_not) *why_not = open ? Status::kTimeout : status_of(state());
  return false;
}

bool Ring::begin_put() noexcept {
  // Counted before the state is read: a consumer that sees the ring closed
  // and nothing in flight knows that no put can still begin.
  inflight().fetch_add(1, std::memory_order_seq_cst);
  if (state() == State::kOpen) return true;
  end_put();
  return false;
}

void Ring::end_put() noexcept {
  inflight().fetch_sub(1, std::memory_order_seq_cst);
  if (state() != State::kOpen) notify_all(header_->ready_q);  // a consumer may wait for the last put to end
}

Status Ring::acquire_begun(std::uint32_t n, std::uint32_t* slots, std::uint32_t* got, bool allow_smaller,
                           Deadline deadline, const std::atomic<bool>* abandon) noexcept {
  *got = 0;
  if (n > header_->capacity) return Status::kTooLarge;
  if (n == 0) return Status::kOk;
  auto try_once = [&](Status* out) {
    if (ended_badly(header_->state)) {
      *out = status_of(state());
      return Try::kDone;
    }
    *got = pop_n(header_->free_q, free_cells(), header_->capacity, n, allow_smaller ? 1 : n, slots);
    if (*got != 0) {
      *out = Status::kOk;
      return Try::kDone;
    }
    return Try::kPending;
  };
  Status st = Status::kTimeout;
  const std::uint32_t need = allow_smaller ? 1 : n;
  const std::uint32_t refill = std::max(need, header_->capacity / kRefillShare);
  // One try before anything else: the common case, at no clock read and no write to the queue's shared line.
  // No spin while the ring holds a refill's worth of elements ready for its consumers: a producer answering
  // a few microseconds late then costs them nothing, while its spin would take a core from them.
  auto ready = [&] {  // head first: read the other way, a pop in between could make head pass tail
    const std::uint64_t head = header_->ready_q.head.load(std::memory_order_acquire);
    return header_->ready_q.tail.load(std::memory_order_acquire) - head;
  };
  if (try_once(&st) == Try::kPending &&
      (ready() >= refill || !spin_first(header_->free_q, deadline, abandon, try_once, &st))) {
    // Woken once a refill's worth is free (kRefillShare), looking again every kRefillPark meanwhile.
    st = wait_until(
        header_->free_q, deadline, abandon, try_once,
        [&] { return header_->free_q.head.load(std::memory_order_seq_cst) + refill; },
        refill > need ? std::chrono::duration_cast<Clock::duration>(kRefillPark) : Clock::duration(kMaxPark));
  }
  // One in-flight count per slot held: commit and abort each give one back.
  if (st == Status::kOk) {
    inflight().fetch_add(*got, std::memory_order_seq_cst);
    for (std::uint32_t i = 0; i < *got; ++i) took(slots[i]);
  }
  return st;
}

// A slot just taken from the free queue: no position until the producer
// tags it, and held by this view's writer. A writer killed before this lost
// the slot (the ring has one fewer), never an element.
void Ring::took(std::uint32_t slot) noexcept {
  tags()[slot] = kNoPosition;
  if (writer_ != 0) owners()[slot].store(writer_, std::memory_order_release);
}

void Ring::commit(std::uint32_t slot) noexcept {
  // Not its writer's before the push: a writer killed between the two loses
  // the slot, where the other order would let reclaim_writer free a slot
  // that is also ready.
  if (writer_ != 0) owners()[slot].store(0, std::memory_order_release);
  push(header_->ready_q, ready_cells(), header_->capacity, slot, header_->state);
  // Counted the instant after the push, before the wake's system call: a
  // writer killed in between leaves its element counted uncommitted, and it
  // is made again (see set_writer).
  if (commits_ != nullptr) commits_->fetch_add(1, std::memory_order_seq_cst);
  notify(header_->ready_q);
  inflight().fetch_sub(1, std::memory_order_seq_cst);
  if (state() != State::kOpen) notify_all(header_->ready_q);
}

void Ring::abort(std::uint32_t slot) noexcept {
  if (writer_ != 0) owners()[slot].store(0, std::memory_order_release);
  push_and_notify(header_->free_q, free_cells(), header_->capacity, slot, header_->state);
  inflight().fetch_sub(1, std::memory_order_seq_cst);
  if (state() != State::kOpen) notify_all(header_->ready_q);
}

std::uint32_t Ring::inflight_total() const noexcept {
  std::uint32_t total = header_->inflight.load(std::memory_order_seq_cst);
  for (const auto& n : header_->track.inflight) total += n.load(std::memory_order_seq_cst);
  return total;
}

Status Ring::pop(std::uint32_t n, std::uint32_t* slots, std::uint32_t* got, bool allow_smaller, Deadline deadline,
                 const std::atomic<bool>* abandon) noexcept {
  *got = 0;
  if (shuffled()) return pop_shuffled(n, slots, got, allow_smaller, deadline, abandon);
  if (n > header_->capacity) return Status::kTooLarge;
  if (n == 0) return Status::kOk;
  auto try_once = [&](Status* out) {
    const State s = state();
    if (s == State::kCancelled || s == State::kFailed) {
      *out = status_of(s);
      return Try::kDone;
    }
    *got = pop_n(header_->ready_q, ready_cells(), header_->capacity, n, n, slots);
    if (*got != 0) {
      record_taken(slots, *got);
      *out = Status::kOk;
      return Try::kDone;
    }
    // Closed, and no put under way nor slot being filled: nothing more will come.
    if (s == State::kClosed && inflight_total() == 0) {
      *got = pop_n(header_->ready_q, ready_cells(), header_->capacity, n, allow_smaller ? 1 : n, slots);
      record_taken(slots, *got);
      *out = *got != 0 ? Status::kOk : Status::kClosed;
      return Try::kDone;
    }
    return Try::kPending;
  };
  Status st = Status::kTimeout;
  // One try before anything else: the common case, at no clock read and no write to the queue's shared line.
  if (try_once(&st) == Try::kDone || spin_first(header_->ready_q, deadline, abandon, try_once, &st)) return st;
  return wait_until(header_->ready_q, n, deadline, abandon, try_once);
}

void Ring::release(std::uint32_t slot) noexcept {
  push_and_notify(header_->free_q, free_cells(), header_->capacity, slot, header_->state);
}

void Ring::release_many(const std::uint32_t* slots, std::uint32_t n) noexcept {
  if (n == 0) return;
  for (std::uint32_t i = 0; i < n; ++i) push(header_->free_q, free_cells(), header_->capacity, slots[i], header_->state);
  // One notify for the batch: a producer parked for a slot is woken once, not n times.
  notify(header_->free_q);
}

bool Ring::end_with(State target) noexcept {
  auto cur = header_->state.load(std::memory_order_acquire);
  for (;;) {
    // State only moves forward: open -> closed -> cancelled|failed.
    if (cur == std::uint32_t(State::kCancelled) || cur == std::uint32_t(State::kFailed)) return false;
    if (cur == std::uint32_t(target)) return false;
    if (target == State::kClosed && cur != std::uint32_t(State::kOpen)) return false;
    if (header_->state.compare_exchange_weak(cur, std::uint32_t(target), std::memory_order_seq_cst)) break;
  }
  if (target == State::kCancelled) drain_to_free();
  wake_all();
  return true;
}

void Ring::drain_to_free() noexcept {
  std::uint32_t slot;
  while (pop_n(header_->ready_q, ready_cells(), header_->capacity, 1, 1, &slot) == 1) release(slot);
  drain_pool();
}

bool Ring::close(bool cancel) noexcept { return end_with(cancel ? State::kCancelled : State::kClosed); }

bool Ring::fail(const char* message, std::size_t length) noexcept {
  std::uint32_t expected = 0;
  if (!header_->fail_claim.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) return false;
  if (state() == State::kCancelled || state() == State::kFailed) return false;
  length = std::min(length, kFailMessageBytes - 1);
  std::memcpy(header_->fail_message, message, length);
  header_->fail_message[length] = '\0';
  header_->fail_length.store(static_cast<std::uint32_t>(length), std::memory_order_release);
  return end_with(State::kFailed);
}

std::string Ring::fail_message() const {
  if (state() != State::kFailed) return {};
  const std::uint32_t n = header_->fail_length.load(std::memory_order_acquire);
  return std::string(header_->fail_message, n);
}

void Ring::wake_all() noexcept {
  for (IndexQueueState* q : {&header_->free_q, &header_->ready_q}) {
    q->epoch.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(&q->epoch);
  }
  header_->turns.epoch.fetch_add(1, std::memory_order_seq_cst);
  futex_wake_all(&header_->turns.epoch);
}

}  // namespace pyfastq
