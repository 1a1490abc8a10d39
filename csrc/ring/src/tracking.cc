// What consumers have taken, by position of a run (a checkpoint's source),
// and what each named writer holds, so that a dead writer's share can be
// given back.
#include <atomic>
#include <cstdint>

#include "index_queue.h"
#include "pyfastq/ring.h"

namespace pyfastq {

using namespace detail;

void Ring::begin_tracking(std::uint64_t watermark) noexcept {
  Tracking& t = header_->track;
  for (std::uint64_t i = 0; i < kTakenBits / 64; ++i) taken_words()[i].store(0, std::memory_order_relaxed);
  t.overflow.store(0, std::memory_order_relaxed);
  t.watermark.store(watermark, std::memory_order_relaxed);
  t.enabled.store(1, std::memory_order_seq_cst);
}

void Ring::mark_taken(std::uint64_t position) noexcept { mark_bit(position); }

bool Ring::taken(std::uint64_t position) const noexcept {
  const std::uint64_t b = position % kTakenBits;
  return (taken_words()[b / 64].load(std::memory_order_seq_cst) >> (b % 64)) & 1;
}

// Consumer side, as it takes slots: their positions are taken. Costs one
// load for a ring that does not track.
void Ring::record_taken(const std::uint32_t* slots, std::uint32_t n) noexcept {
  if (header_->track.enabled.load(std::memory_order_relaxed) == 0) return;
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::uint64_t p = tags()[slots[i]];
    if (p != kNoPosition) mark_bit(p);
  }
}

// Sets position's bit, then moves the watermark over every set bit at it.
// Whoever's compare-exchange moves the watermark from `at` clears at's bit,
// after the move: a reader never sees at's bit clear while the watermark is
// still at `at` (taken_state would miss it), and the bit left set for that
// moment belongs to position at + kTakenBits, which is outside the window
// while the watermark is above `at` - kTakenWindow. A consumer that set a
// bit just above the watermark finds either the watermark moved (and moves
// it further) or its bit seen by the mover: both sides store, then load,
// seq_cst.
void Ring::mark_bit(std::uint64_t position) noexcept {
  Tracking& t = header_->track;
  const std::uint64_t w = t.watermark.load(std::memory_order_seq_cst);
  if (position < w) return;
  if (position - w >= kTakenWindow) {
    t.overflow.store(1, std::memory_order_release);
    return;
  }
  const std::uint64_t b = position % kTakenBits;
  taken_words()[b / 64].fetch_or(std::uint64_t{1} << (b % 64), std::memory_order_seq_cst);
  for (;;) {
    std::uint64_t at = t.watermark.load(std::memory_order_seq_cst);
    const std::uint64_t bit = at % kTakenBits;
    const std::uint64_t mask = std::uint64_t{1} << (bit % 64);
    if ((taken_words()[bit / 64].load(std::memory_order_seq_cst) & mask) == 0) return;
    if (t.watermark.compare_exchange_strong(at, at + 1, std::memory_order_seq_cst)) {
      taken_words()[bit / 64].fetch_and(~mask, std::memory_order_seq_cst);
    }
  }
}

bool Ring::set_writer(std::uint32_t writer, std::atomic<std::uint64_t>* commits) noexcept {
  if (writer >= kMaxWriters) return false;
  writer_ = writer;
  commits_ = commits;
  return true;
}

std::uint32_t Ring::reclaim_writer(std::uint32_t writer) noexcept {
  if (writer == 0 || writer >= kMaxWriters) return 0;
  std::uint32_t given = 0;
  for (std::uint32_t s = 0; s < header_->capacity; ++s) {
    std::uint32_t held = writer;
    if (owners()[s].compare_exchange_strong(held, 0, std::memory_order_acq_rel)) {
      push(header_->free_q, free_cells(), header_->capacity, s, header_->state);
      ++given;
    }
  }
  header_->track.inflight[writer].store(0, std::memory_order_seq_cst);
  notify(header_->free_q);
  notify_all(header_->ready_q);  // consumers of a closed ring may wait for that writer no more
  return given;
}

}  // namespace pyfastq
