// The claims table of restartable worker processes, and the atomic counter
// their sampler claims positions with: blocks of uint64s in shared memory.
#include "claims.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>

#include "gil.h"

namespace py = pybind11;

namespace pyfastq {
namespace {

// The claims table of restartable worker processes (a block of uint64s in
// shared memory): word 0 the next unclaimed position, word 1 a lock (0 free,
// else the holder's entry + 1), then per entry kEntryWords words. A worker
// claims under the lock and records its claim and, as it goes, which
// position it is at and how many slots it had committed when it began it
// (two records and a selector, so that one store switches them): whenever
// it dies, the trainer reads exactly which positions and rows it had
// committed, and hands the rest to its replacement.
constexpr std::size_t kClaimsHeaderWords = 8;
constexpr std::size_t kEntryWords = 8;
enum EntryWord : std::size_t { kStart, kEnd, kWhich, kPos0, kBase0, kPos1, kBase1, kCommits };

std::atomic<std::uint64_t>* table_words(const py::buffer& table, std::size_t entry) {
  const py::buffer_info info = table.request(true);
  const std::size_t need = (kClaimsHeaderWords + (entry + 1) * kEntryWords) * 8;
  if (static_cast<std::size_t>(info.size * info.itemsize) < need || reinterpret_cast<std::uintptr_t>(info.ptr) % 8) {
    throw py::value_error("claims table too small for entry " + std::to_string(entry));
  }
  return static_cast<std::atomic<std::uint64_t>*>(info.ptr);
}

std::atomic<std::uint64_t>* entry_words(std::atomic<std::uint64_t>* t, std::size_t entry) {
  return t + kClaimsHeaderWords + entry * kEntryWords;
}

// Points the entry's record at `position`, with the slots committed so far as its base: the idle record
// is written, then the selector switches to it.
void set_record(std::atomic<std::uint64_t>* e, std::uint64_t position) {
  const std::uint64_t idle = 1 - e[kWhich].load(std::memory_order_seq_cst);
  e[kPos0 + 2 * idle].store(position, std::memory_order_seq_cst);
  e[kBase0 + 2 * idle].store(e[kCommits].load(std::memory_order_seq_cst), std::memory_order_seq_cst);
  e[kWhich].store(idle, std::memory_order_seq_cst);
}

py::tuple claim(const py::buffer& table, std::size_t entry, std::uint64_t n, std::int64_t total) {
  std::atomic<std::uint64_t>* t = table_words(table, entry);
  std::atomic<std::uint64_t>* e = entry_words(t, entry);
  std::uint64_t start, end;
  {
    ReleaseGil nogil;  // a holder killed inside waits for the trainer's claims_handover
    for (std::uint64_t free = 0; !t[1].compare_exchange_weak(free, entry + 1, std::memory_order_acquire); free = 0) {
      sched_yield();
    }
    start = t[0].load(std::memory_order_seq_cst);
    end = total < 0 ? start + n : std::min<std::uint64_t>(start + n, std::max<std::uint64_t>(start, total));
    if (end > start) {
      // The entry first, then the counter: a claim is made once the counter moved (see claims_handover).
      e[kStart].store(start, std::memory_order_seq_cst);
      e[kEnd].store(end, std::memory_order_seq_cst);
      set_record(e, start);
      t[0].store(end, std::memory_order_seq_cst);
    }
    t[1].store(0, std::memory_order_release);
  }
  return py::make_tuple(start, end);
}

void claims_advance(const py::buffer& table, std::size_t entry, std::uint64_t position) {
  set_record(entry_words(table_words(table, entry), entry), position);
}

py::tuple claims_handover(const py::buffer& table, std::size_t entry) {
  std::atomic<std::uint64_t>* t = table_words(table, entry);
  std::atomic<std::uint64_t>* e = entry_words(t, entry);
  if (t[1].load(std::memory_order_seq_cst) == entry + 1) {
    // Killed inside claim(): the counter moves only after the entry is written, so a counter still at
    // the entry's start means that claim was never made (and the worker's previous one was finished).
    if (t[0].load(std::memory_order_seq_cst) == e[kStart].load(std::memory_order_seq_cst)) {
      e[kEnd].store(e[kStart].load());
      set_record(e, e[kStart].load());
    }
    t[1].store(0, std::memory_order_release);
  }
  const std::uint64_t which = e[kWhich].load(std::memory_order_seq_cst);
  const std::uint64_t position = e[kPos0 + 2 * which].load(std::memory_order_seq_cst);
  const std::uint64_t done = e[kCommits].load(std::memory_order_seq_cst) - e[kBase0 + 2 * which].load();
  const std::uint64_t end = std::max(position, e[kEnd].load(std::memory_order_seq_cst));
  // The replacement starts from this entry: at `position`, with `done` rows of it committed.
  e[kStart].store(position);
  e[kEnd].store(end);
  e[kCommits].store(done);
  e[kPos0 + 2 * which].store(position);
  e[kBase0 + 2 * which].store(0);
  return py::make_tuple(position, end, done);
}

}  // namespace

void register_claims(py::module_& m) {
  m.def(
      "fetch_add",
      [](py::buffer counter, std::uint64_t n) {
        // Processes that map the same block claim disjoint ranges with it (a sampler's positions).
        const py::buffer_info info = counter.request(true);
        if (info.size * info.itemsize < 8 || reinterpret_cast<std::uintptr_t>(info.ptr) % 8 != 0) {
          throw py::value_error("fetch_add needs a writable, 8-byte aligned buffer of at least 8 bytes");
        }
        return __atomic_fetch_add(static_cast<std::uint64_t*>(info.ptr), n, __ATOMIC_SEQ_CST);
      },
      py::arg("counter"), py::arg("n"),
      "Atomically adds n to the uint64 at the start of counter (shared memory); returns the value before");
  m.def("claim", &claim, py::arg("table"), py::arg("entry"), py::arg("n"), py::arg("total"),
        "Claims up to n positions below total for the claims table's entry; returns (start, end)");
  m.def("claims_advance", &claims_advance, py::arg("table"), py::arg("entry"), py::arg("position"),
        "The entry's worker begins position `position`: its rows committed so far are the base");
  m.def("claims_handover", &claims_handover, py::arg("table"), py::arg("entry"),
        "Once the entry's worker is dead: its claim's remainder stays in the entry for a replacement; "
        "returns (position, end, rows of position done)");
}

}  // namespace pyfastq
