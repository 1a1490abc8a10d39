#include "pyfastq/ring.h"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <new>
#include <stdexcept>

namespace pyfastq {
namespace {

constexpr std::uint64_t kMagic = 0x7079666173747131ull;  // "pyfastq1"
constexpr int kSpins = 128;
constexpr int kYields = 4;
// A popper that finds its queue empty spins this long before it parks (see spin_first).
constexpr auto kSpinFirst = std::chrono::microseconds(50);
constexpr int kClockEvery = 16;  // spins between looks at the clock, which costs about as much as a few spins
// A parked waiter re-checks at least this often, so a missed wake (or a
// waker in a process that died) costs latency, never a hang.
constexpr auto kMaxPark = std::chrono::milliseconds(200);
// A producer parked on a full ring asks to be woken once kRefillShare of the
// capacity is free, not at the first free slot: woken per slot, a producer
// keeping pace with its consumer costs that consumer a futex wake and itself
// a trip through the scheduler per element (and, for a Python producer, a
// GIL handoff). Woken per refill, it fills the share in one burst. It still
// takes a single free slot at its next look, within kRefillPark.
constexpr std::uint32_t kRefillShare = 4;  // a quarter of the capacity
constexpr auto kRefillPark = std::chrono::milliseconds(1);

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

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Not FUTEX_PRIVATE: the word may be in shared memory, parked on from
// several processes.
void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected, std::chrono::nanoseconds timeout) {
  timespec ts;
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1000000000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1000000000);
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futex_wake_all(std::atomic<std::uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

constexpr std::uint64_t kNobody = ~std::uint64_t{0};

// Wakes parked poppers if the queue now holds what the neediest of them asked for.
void notify(IndexQueueState& q) noexcept {
  q.epoch.fetch_add(1, std::memory_order_seq_cst);
  if (q.waiters.load(std::memory_order_seq_cst) == 0) return;
  std::uint64_t need = q.wake_at.load(std::memory_order_seq_cst);
  if (q.tail.load(std::memory_order_seq_cst) < need) return;
  // Re-arm before waking: woken poppers that still lack elements register
  // again. If a popper lowered wake_at meanwhile, keep its value.
  q.wake_at.compare_exchange_strong(need, kNobody, std::memory_order_seq_cst);
  futex_wake_all(&q.epoch);
}

// Wakes every parked popper, whatever it needs (state changes, drains).
void notify_all(IndexQueueState& q) noexcept {
  q.epoch.fetch_add(1, std::memory_order_seq_cst);
  if (q.waiters.load(std::memory_order_seq_cst) != 0) futex_wake_all(&q.epoch);
}

// Registers that a popper needs the tail to reach `need` (keeps the smallest).
void want_tail(IndexQueueState& q, std::uint64_t need) noexcept {
  std::uint64_t cur = q.wake_at.load(std::memory_order_seq_cst);
  while (need < cur && !q.wake_at.compare_exchange_weak(cur, need, std::memory_order_seq_cst)) {
  }
}

bool ended_badly(const std::atomic<std::uint32_t>& state) noexcept {
  const auto s = State(state.load(std::memory_order_acquire));
  return s == State::kCancelled || s == State::kFailed;
}

// Vyukov push. The queue can never be full (every slot index is in one place
// at a time), so this only retries while racing other pushers. Parked
// poppers are not told: the caller notifies, once for all it pushes.
void push(IndexQueueState& q, IndexCell* cells, std::uint32_t cap, std::uint32_t value,
          const std::atomic<std::uint32_t>& state) noexcept {
  std::uint64_t pos = q.tail.load(std::memory_order_relaxed);
  IndexCell* cell;
  std::uint32_t stalls = 0;
  for (;;) {
    cell = &cells[pos % cap];
    const std::uint64_t seq = cell->seq.load(std::memory_order_acquire);
    const auto diff = static_cast<std::int64_t>(seq - pos);
    if (diff == 0) {
      if (q.tail.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) break;
    } else if (diff < 0) {
      // The popper of this cell's previous lap has claimed it but not yet
      // marked it free: a few instructions away, unless it was a process
      // killed in between. That fails the ring; then the index is dropped
      // rather than waited for forever.
      if (++stalls < kSpins) {
        cpu_relax();
      } else {
        if (ended_badly(state)) return;
        sched_yield();
      }
      pos = q.tail.load(std::memory_order_relaxed);
    } else {
      pos = q.tail.load(std::memory_order_relaxed);
    }
  }
  cell->value = value;
  cell->seq.store(pos + 1, std::memory_order_release);
}

// push() and the wake it may owe parked poppers.
void push_and_notify(IndexQueueState& q, IndexCell* cells, std::uint32_t cap, std::uint32_t value,
                     const std::atomic<std::uint32_t>& state) noexcept {
  push(q, cells, cap, value, state);
  notify(q);
}

// Pops up to n values, all at once: checks that the next cells are filled,
// then claims them with one CAS. Takes nothing unless at least min_take are
// ready. Returns how many were taken.
std::uint32_t pop_n(IndexQueueState& q, IndexCell* cells, std::uint32_t cap, std::uint32_t n,
                    std::uint32_t min_take, std::uint32_t* out) noexcept {
  std::uint64_t pos = q.head.load(std::memory_order_relaxed);
  for (;;) {
    std::uint32_t ready = 0;
    bool moved = false;
    for (; ready < n; ++ready) {
      const std::uint64_t want = pos + ready + 1;
      const std::uint64_t seq = cells[(pos + ready) % cap].seq.load(std::memory_order_acquire);
      const auto diff = static_cast<std::int64_t>(seq - want);
      if (diff < 0) break;  // not filled yet
      if (diff > 0) {       // already taken: another popper moved head
        moved = true;
        break;
      }
    }
    if (moved) {
      pos = q.head.load(std::memory_order_relaxed);
      continue;
    }
    if (ready < min_take || ready == 0) return 0;
    if (q.head.compare_exchange_weak(pos, pos + ready, std::memory_order_relaxed)) {
      for (std::uint32_t i = 0; i < ready; ++i) {
        IndexCell& cell = cells[(pos + i) % cap];
        out[i] = cell.value;
        cell.seq.store(pos + i + cap, std::memory_order_release);
      }
      return ready;
    }
  }
}

enum class Try { kPending, kDone };

// Spin, then park on the futex word `epoch` until try_once() is done, the
// deadline passes or the abandon flag is raised. announce() runs once the
// waiter is counted in `waiters`, before the last look at the epoch; parked()
// is told when the park began, once it is over.
template <typename F, typename Announce, typename Parked>
Status park_until(std::atomic<std::uint32_t>& epoch, std::atomic<std::uint32_t>& waiters, Deadline deadline,
                  const std::atomic<bool>* abandon, F try_once, Announce announce, Parked parked,
                  Clock::duration max_park = kMaxPark) {
  Status st = Status::kOk;
  // Spin first: a partner that keeps pace answers within it, at no system
  // call. The spin stops at the deadline, so one that has passed makes this a
  // single try, and a short one a spin that never gives the core away.
  const bool timed = deadline != Deadline::max();
  for (int i = 0; i < kSpins; ++i) {
    if (try_once(&st) == Try::kDone) return st;
    if (timed && i % kClockEvery == 0 && Clock::now() >= deadline) return Status::kTimeout;
    cpu_relax();
  }
  for (int i = 0; i < kYields; ++i) {
    if (try_once(&st) == Try::kDone) return st;
    if (timed && Clock::now() >= deadline) return Status::kTimeout;
    sched_yield();
  }
  for (;;) {
    const std::uint32_t seen = epoch.load(std::memory_order_seq_cst);
    if (try_once(&st) == Try::kDone) return st;
    if (abandon != nullptr && abandon->load(std::memory_order_acquire)) return Status::kAbandoned;
    const auto now = Clock::now();
    if (now >= deadline) return Status::kTimeout;
    const auto park = std::min<Clock::duration>(deadline - now, max_park);
    // Announce ourselves, then re-check the epoch: a waker bumps the epoch
    // before reading waiters, so one of us sees the other.
    waiters.fetch_add(1, std::memory_order_seq_cst);
    announce();
    if (epoch.load(std::memory_order_seq_cst) == seen) {
      futex_wait(&epoch, seen, std::chrono::duration_cast<std::chrono::nanoseconds>(park));
    }
    waiters.fetch_sub(1, std::memory_order_seq_cst);
    parked(now);
  }
}

std::uint64_t clock_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
}

// park_until on an index queue, for a popper that needs the queue's tail to
// reach need_tail() (read once it is counted as a waiter). Parked time goes
// to wait_ns (per popper) and blocked_ns (while at least one is parked).
template <typename F, typename Need>
Status wait_until(IndexQueueState& q, Deadline deadline, const std::atomic<bool>* abandon, F try_once,
                  Need need_tail, Clock::duration max_park = kMaxPark) {
  return park_until(
      q.epoch, q.waiters, deadline, abandon, try_once,
      [&] {
        want_tail(q, need_tail());
        if (q.parked.fetch_add(1, std::memory_order_seq_cst) == 0) {
          q.parked_since.store(clock_ns(), std::memory_order_seq_cst);
        }
      },
      [&](Clock::time_point since) {
        q.wait_ns.fetch_add(
            static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - since).count()),
            std::memory_order_relaxed);
        // Read before leaving: once parked drops to 0, the next popper to park restarts the clock.
        const std::uint64_t began = q.parked_since.load(std::memory_order_seq_cst);
        if (q.parked.fetch_sub(1, std::memory_order_seq_cst) == 1) {
          const std::uint64_t now = clock_ns();
          if (now > began) q.blocked_ns.fetch_add(now - began, std::memory_order_relaxed);
        }
      },
      max_park);
}

// park_until on an index queue, for a popper that needs `n` elements.
template <typename F>
Status wait_until(IndexQueueState& q, std::uint32_t n, Deadline deadline, const std::atomic<bool>* abandon,
                  F try_once) {
  return wait_until(q, deadline, abandon, try_once, [&] { return q.head.load(std::memory_order_seq_cst) + n; });
}

// Tries until kSpinFirst has passed (or the deadline, or the abandon flag),
// if no other popper of `q` is spinning. A partner that keeps pace pushes
// every few microseconds, and each push to a parked popper costs the pusher
// a futex wake and the popper a trip through the scheduler: a popper that
// spins across the gap costs nobody but its own core. One spinner per
// queue at a time, so that many producers of a full ring do not all burn a
// core. True if try_once finished (*st).
template <typename F>
bool spin_first(IndexQueueState& q, Deadline deadline, const std::atomic<bool>* abandon, F try_once, Status* st) {
  if (deadline != Deadline::max() && Clock::now() >= deadline) return false;  // a single try: not a spinner
  std::uint32_t none = 0;
  if (!q.spinners.compare_exchange_strong(none, 1, std::memory_order_acquire, std::memory_order_relaxed)) return false;
  const Deadline until = std::min<Deadline>(deadline, Clock::now() + kSpinFirst);
  bool done = false;
  for (int i = 0;; ++i) {
    if (try_once(st) == Try::kDone) {
      done = true;
      break;
    }
    if (abandon != nullptr && abandon->load(std::memory_order_acquire)) break;
    if (i % kClockEvery == 0 && Clock::now() >= until) break;
    cpu_relax();
  }
  q.spinners.store(0, std::memory_order_release);
  return done;
}

// xoshiro256** (Blackman and Vigna): small state that fits in the block,
// fast, and good enough for picking among at most 2^31 slots.
std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }

std::uint64_t next_random(std::uint64_t* s) noexcept {
  const std::uint64_t result = rotl(s[1] * 5, 7) * 9;
  const std::uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

// Expands a 64-bit seed into xoshiro's state (splitmix64, as its authors advise).
void seed_random(std::uint64_t* s, std::uint64_t seed) noexcept {
  for (int i = 0; i < 4; ++i) {
    std::uint64_t z = (seed += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    s[i] = z ^ (z >> 31);
  }
}

// Uniform in [0, m) without modulo bias (Lemire's multiply-and-reject).
std::uint32_t random_below(std::uint64_t* s, std::uint32_t m) noexcept {
  std::uint64_t x = next_random(s) >> 32;
  std::uint64_t product = x * m;
  auto low = static_cast<std::uint32_t>(product);
  if (low < m) {
    const std::uint32_t threshold = static_cast<std::uint32_t>(-m) % m;
    while (low < threshold) {
      x = next_random(s) >> 32;
      product = x * m;
      low = static_cast<std::uint32_t>(product);
    }
  }
  return static_cast<std::uint32_t>(product >> 32);
}

// blocked_ns, with the stretch under way now (a popper parked right now counts).
std::uint64_t blocked_ns(const IndexQueueState& q) noexcept {
  std::uint64_t total = q.blocked_ns.load(std::memory_order_seq_cst);
  if (q.parked.load(std::memory_order_seq_cst) != 0) {
    const std::uint64_t began = q.parked_since.load(std::memory_order_seq_cst);
    const std::uint64_t now = clock_ns();
    if (began != 0 && now > began) total += now - began;
  }
  return total;
}

// A pool lock held at most this long by a live holder; the ring ending is
// the only reason to wait longer (a holder in a process that died).
constexpr auto kDrainLockWait = std::chrono::seconds(1);

}  // namespace

std::uint32_t ring_library_version() noexcept { return kRingVersion; }

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

std::uint64_t Ring::layout(Component* components, std::uint32_t n) {
  std::uint64_t offset = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    components[i].offset = offset;
    offset = align_bytes(add_bytes(offset, components[i].nbytes), kSlotAlignment);
  }
  return std::max<std::uint64_t>(offset, kSlotAlignment);
}

namespace {
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
  h->magic = 0;  // published last
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
  h->flags = 0;
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
  reinterpret_cast<std::atomic<std::uint64_t>*>(&h->magic)->store(kMagic, std::memory_order_release);
  return Ring(base, h);
}

Ring Ring::attach(void* memory, std::size_t memory_bytes) {
  auto* h = static_cast<RingHeader*>(memory);
  if (memory_bytes < sizeof(RingHeader) ||
      reinterpret_cast<std::atomic<std::uint64_t>*>(&h->magic)->load(std::memory_order_acquire) != kMagic) {
    throw std::runtime_error("memory does not hold a pyfastq ring");
  }
  if (h->version != kRingVersion) {
    throw std::runtime_error("pyfastq ring version " + std::to_string(h->version) + ", this build reads " +
                             std::to_string(kRingVersion));
  }
  if (h->total_bytes > memory_bytes) throw std::runtime_error("pyfastq ring is larger than the memory given");
  return Ring(static_cast<std::uint8_t*>(memory), h);
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

Status Ring::acquire(std::uint32_t* slot, Deadline deadline, const std::atomic<bool>* abandon) noexcept {
  std::uint32_t got;
  return acquire_many(1, slot, &got, false, deadline, abandon);
}

Status Ring::acquire_many(std::uint32_t n, std::uint32_t* slots, std::uint32_t* got, bool allow_smaller,
                          Deadline deadline, const std::atomic<bool>* abandon) noexcept {
  *got = 0;
  if (n > header_->capacity) return Status::kTooLarge;
  if (n == 0) return Status::kOk;
  if (!begin_put()) return status_of(state());
  const Status st = acquire_begun(n, slots, got, allow_smaller, deadline, abandon);
  end_put();
  return st;
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

Status Ring::pop_shuffled(std::uint32_t n, std::uint32_t* slots, std::uint32_t* got, bool allow_smaller,
                          Deadline deadline, const std::atomic<bool>* abandon) noexcept {
  ShufflePool& pool = header_->pool;
  const std::uint32_t keep = pool.min_after_dequeue;
  // n + keep > capacity is accepted: such a batch cannot form while open (the ring never holds n + keep),
  // so it waits for close(), after which nothing is held back.
  if (n > header_->capacity) return Status::kTooLarge;
  if (n == 0) return Status::kOk;
  return wait_until(
      header_->ready_q, deadline, abandon,
      [&](Status* out) {
        const State s = state();
        if (s == State::kCancelled || s == State::kFailed) {
          *out = status_of(s);
          return Try::kDone;
        }
        if (!lock_pool(no_deadline(), /*give_up_once_ended=*/true)) {
          *out = status_of(state());
          return Try::kDone;
        }
        absorb_ready();
        const std::uint32_t size = pool.size.load(std::memory_order_relaxed);
        std::uint32_t take = 0;
        Try result = Try::kPending;
        if (s == State::kOpen) {
          if (size >= keep + n) take = n;
        } else if (size >= n) {  // closed: min_after_dequeue no longer holds anything back
          take = n;
        } else if (inflight_total() == 0) {
          // Nothing more will come; what the last puts committed is in the ready queue now.
          absorb_ready();
          const std::uint32_t left = pool.size.load(std::memory_order_relaxed);
          take = left >= n ? n : allow_smaller ? left : 0;
          if (take == 0) {
            *out = Status::kClosed;
            result = Try::kDone;
          }
        }
        if (take != 0) {
          *got = pick(take, slots);
          record_taken(slots, *got);
          *out = Status::kOk;
          result = Try::kDone;
        }
        unlock_pool();
        return result;
      },
      [&] {
        // The tail the ready queue must reach before this pop can go: read
        // under the lock, where the pool's size and the queue's head move together.
        const std::uint64_t head = header_->ready_q.head.load(std::memory_order_seq_cst);
        if (state() != State::kOpen || !lock_pool(Clock::now() + kDrainLockWait, true)) return head + 1;
        const std::uint64_t at = header_->ready_q.head.load(std::memory_order_seq_cst);
        const std::uint64_t have = pool.size.load(std::memory_order_relaxed);
        unlock_pool();
        const std::uint64_t want = std::uint64_t(keep) + n;
        return at + (want > have ? want - have : 1);
      });
}

// Drepper's futex mutex ("Futexes Are Tricky", mutex 2), in the block so it
// works across processes. Gives up at `give_up`, or once the ring has been
// cancelled or has failed if asked: a holder that died cannot hang anyone.
bool Ring::lock_pool(Deadline give_up, bool give_up_once_ended) noexcept {
  std::atomic<std::uint32_t>& word = header_->pool.lock;
  std::uint32_t c = 0;
  for (int i = 0; i < kSpins; ++i) {
    c = 0;
    if (word.compare_exchange_weak(c, 1, std::memory_order_acquire, std::memory_order_relaxed)) return true;
    cpu_relax();
  }
  if (c != 2) c = word.exchange(2, std::memory_order_acquire);
  while (c != 0) {
    if (give_up_once_ended && ended_badly(header_->state)) return false;
    const auto now = Clock::now();
    if (now >= give_up) return false;
    futex_wait(&word, 2,
               std::chrono::duration_cast<std::chrono::nanoseconds>(std::min<Clock::duration>(give_up - now, kMaxPark)));
    c = word.exchange(2, std::memory_order_acquire);
  }
  return true;
}

void Ring::unlock_pool() noexcept {
  if (header_->pool.lock.exchange(0, std::memory_order_release) == 2) futex_wake_all(&header_->pool.lock);
}

// Moves every ready index into the pool. Under the pool lock.
void Ring::absorb_ready() noexcept {
  ShufflePool& pool = header_->pool;
  std::uint32_t size = pool.size.load(std::memory_order_relaxed);
  const std::uint32_t cap = header_->capacity;
  // Every slot index is in one place at a time, so the pool never overflows.
  while (size < cap) {
    const std::uint32_t got = pop_n(header_->ready_q, ready_cells(), cap, cap - size, 1, pool_cells() + size);
    if (got == 0) break;
    size += got;
  }
  pool.size.store(size, std::memory_order_relaxed);
}

// Takes n indices from the pool (which holds at least n), each uniformly at
// random among those left: a partial Fisher-Yates. Under the pool lock.
std::uint32_t Ring::pick(std::uint32_t n, std::uint32_t* slots) noexcept {
  ShufflePool& pool = header_->pool;
  std::uint32_t* cells = pool_cells();
  std::uint32_t size = pool.size.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::uint32_t r = random_below(pool.rng, size);
    slots[i] = cells[r];
    cells[r] = cells[--size];
  }
  pool.size.store(size, std::memory_order_relaxed);
  // Only the lock holder writes it: a plain store, no read-modify-write.
  pool.gets.store(pool.gets.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  return n;
}

void Ring::record_fill() noexcept {
  const std::uint64_t cap = header_->capacity;
  const std::uint64_t bin = std::min<std::uint64_t>(kFillBins - 1, size() * kFillBins / cap);
  header_->fill_hist[bin].fetch_add(1, std::memory_order_relaxed);
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
  // A consumer holds the pool lock for microseconds; one that died holding it leaves the pool as it was.
  if (!shuffled() || !lock_pool(Clock::now() + kDrainLockWait, false)) return;
  ShufflePool& pool = header_->pool;
  const std::uint32_t size = pool.size.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < size; ++i) release(pool_cells()[i]);
  pool.size.store(0, std::memory_order_relaxed);
  unlock_pool();
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

bool Ring::begin_turns(std::uint32_t workers) noexcept { return begin_turns_at(workers, 0); }

bool Ring::begin_turns_at(std::uint32_t workers, std::uint64_t first) noexcept {
  if (workers == 0 || workers > kMaxTurnWorkers || first == kNoTurn) return false;
  Turnstile& t = header_->turns;
  for (std::uint32_t w = 0; w < kMaxTurnWorkers; ++w) t.finished_at[w].store(kNoTurn, std::memory_order_relaxed);
  t.workers = workers;
  t.turn.store(first, std::memory_order_seq_cst);
  return true;
}

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

Status Ring::wait_turn(std::uint64_t ticket, Deadline deadline, const std::atomic<bool>* abandon) noexcept {
  Turnstile& t = header_->turns;
  return park_until(
      t.epoch, t.waiters, deadline, abandon,
      [&](Status* out) {
        if (t.turn.load(std::memory_order_seq_cst) == ticket) {
          *out = Status::kOk;
          return Try::kDone;
        }
        const State s = state();
        if (s == State::kOpen) return Try::kPending;
        *out = status_of(s);
        return Try::kDone;
      },
      [] {}, [](Clock::time_point) {});
}

void Ring::pass_turn(std::uint64_t ticket) noexcept {
  // Only the ticket's producer moves the turn off it, so a plain store will do.
  header_->turns.turn.store(ticket + 1, std::memory_order_seq_cst);
  skip_finished_turns();
}

void Ring::finish_turns(std::uint32_t worker, std::uint64_t count) noexcept {
  if (worker >= header_->turns.workers) return;
  header_->turns.finished_at[worker].store(count, std::memory_order_seq_cst);
  skip_finished_turns();
}

// Moves the turn past tickets of producers that have finished, then wakes the
// waiters. Both the producer passing the turn and a producer finishing call
// it after their own store: with seq_cst on both sides at least one of them
// sees the other's store, and the CAS lets only one of them move the turn.
void Ring::skip_finished_turns() noexcept {
  Turnstile& t = header_->turns;
  const std::uint64_t p = t.workers;
  std::uint64_t cur = t.turn.load(std::memory_order_seq_cst);
  while (cur != kNoTurn && p != 0) {
    std::uint64_t next = cur;
    std::uint64_t checked = 0;
    while (checked < p && t.finished_at[next % p].load(std::memory_order_seq_cst) <= next / p) {
      ++next;
      ++checked;
    }
    if (checked == p) next = kNoTurn;
    if (next == cur) break;
    if (t.turn.compare_exchange_strong(cur, next, std::memory_order_seq_cst)) cur = next;
  }
  t.epoch.fetch_add(1, std::memory_order_seq_cst);
  if (t.waiters.load(std::memory_order_seq_cst) != 0) futex_wake_all(&t.epoch);
}

std::uint64_t Ring::size() const noexcept {
  const std::uint64_t tail = header_->ready_q.tail.load(std::memory_order_acquire);
  const std::uint64_t head = header_->ready_q.head.load(std::memory_order_acquire);
  const std::uint64_t ready = tail > head ? tail - head : 0;
  return ready + header_->pool.size.load(std::memory_order_acquire);
}

Counters Ring::counters() const noexcept {
  Counters c;
  c.puts = header_->ready_q.tail.load(std::memory_order_relaxed);
  c.gets = shuffled() ? header_->pool.gets.load(std::memory_order_relaxed)
                      : header_->ready_q.head.load(std::memory_order_relaxed);
  c.size = size();
  c.put_wait_ns = header_->free_q.wait_ns.load(std::memory_order_relaxed);
  c.get_wait_ns = header_->ready_q.wait_ns.load(std::memory_order_relaxed);
  c.put_waiters = header_->free_q.waiters.load(std::memory_order_relaxed);
  c.get_waiters = header_->ready_q.waiters.load(std::memory_order_relaxed);
  c.put_blocked_ns = blocked_ns(header_->free_q);
  c.get_blocked_ns = blocked_ns(header_->ready_q);
  for (std::uint32_t i = 0; i < kFillBins; ++i) c.fill_hist[i] = header_->fill_hist[i].load(std::memory_order_relaxed);
  return c;
}

}  // namespace pyfastq
