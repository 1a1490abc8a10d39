// What the ring's tests share: elements that check themselves, rings to put
// them through, deadlines, threads and forked children that start together,
// and waiting for a caller to park or to be woken.
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "acquire.h"
#include "check.h"
#include "pyfastq/ring_memory.h"

namespace ring_test {

using pyfastq::Clock;
using pyfastq::Deadline;
using pyfastq::IndexQueueState;
using pyfastq::Ring;
using pyfastq::RingMemory;
using pyfastq::Status;

// ---- elements ----

// Derived from producer and seq, so a torn or stale slot does not match them.
inline std::uint64_t mix(std::uint32_t producer, std::uint32_t seq) {
  return (std::uint64_t(producer) << 32 | seq) * 0x9E3779B97F4A7C15ull;
}

// Producer `producer`'s element number `seq`.
struct Item {
  std::uint32_t producer;
  std::uint32_t seq;
  std::uint64_t check;
};

inline Item item_of(std::uint32_t producer, std::uint32_t seq) { return {producer, seq, mix(producer, seq)}; }

inline bool operator==(const Item& a, const Item& b) {
  return a.producer == b.producer && a.seq == b.seq && a.check == b.check;
}
inline bool operator!=(const Item& a, const Item& b) { return !(a == b); }
inline std::ostream& operator<<(std::ostream& os, const Item& item) {
  os << "(producer " << item.producer << ", seq " << item.seq;
  if (item.check != mix(item.producer, item.seq)) os << ", torn: check " << item.check;
  return os << ")";
}

// ---- rings ----

// Two components, an Item and an odd-sized tail: the second component's
// offset is exercised, and a slot torn between the two is caught.
inline const std::vector<std::uint64_t> kItemAndTail = {sizeof(Item), 3};

inline std::shared_ptr<RingMemory> private_ring(std::uint32_t capacity, std::vector<std::uint64_t> bytes = {sizeof(Item)}) {
  return RingMemory::create(capacity, bytes);
}
inline std::shared_ptr<RingMemory> shared_ring(std::uint32_t capacity, std::vector<std::uint64_t> bytes = {sizeof(Item)}) {
  return RingMemory::create(capacity, bytes, /*shared=*/true);
}

inline Deadline in(std::chrono::milliseconds ms) { return Clock::now() + ms; }

// CLOCK_MONOTONIC is one clock for the whole machine, so a time stamp taken in
// one process can be compared with now() in another.
inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

// Puts `value` as one element, in the slot's first component, if acquire
// gives a slot before `deadline`: acquire's answer.
template <class T>
Status try_put_value(Ring& r, const T& value, Deadline deadline = pyfastq::no_deadline()) {
  std::uint32_t slot;
  const Status st = acquire(r, &slot, deadline);
  if (st != Status::kOk) return st;
  std::memcpy(r.slot_data(slot), &value, sizeof value);
  r.commit(slot);
  return st;
}

// try_put_value that must succeed. A ring that stays full for 20 s fails the
// test instead of running into the ctest timeout.
template <class T>
void put_value(Ring& r, const T& value) {
  CHECK_EQ(try_put_value(r, value, in(std::chrono::milliseconds(20000))), Status::kOk);
}

template <class T>
T read_value(const Ring& r, std::uint32_t slot) {
  T value;
  std::memcpy(&value, r.slot_data(slot), sizeof value);
  return value;
}

inline void put_item(Ring& r, std::uint32_t producer, std::uint32_t seq) { put_value(r, item_of(producer, seq)); }
inline Item read_item(const Ring& r, std::uint32_t slot) { return read_value<Item>(r, slot); }

// Fills `slot` of a kItemAndTail ring: the Item, and its seq's low byte in every tail byte.
inline void fill_element(Ring& r, std::uint32_t slot, std::uint32_t producer, std::uint32_t seq) {
  const Item item = item_of(producer, seq);
  std::memcpy(r.slot_data(slot), &item, sizeof item);
  std::memset(r.slot_data(slot) + r.component(1).offset, static_cast<int>(seq & 0xff), r.component(1).nbytes);
}

// What is wrong with the element in `slot` of a kItemAndTail ring: empty when
// its check and its tail match its producer and seq.
inline std::string damage(const Ring& r, std::uint32_t slot) {
  const Item item = read_item(r, slot);
  if (item.check != mix(item.producer, item.seq)) return "torn item";
  const std::uint8_t* tail = r.slot_data(slot) + r.component(1).offset;
  for (std::uint64_t i = 0; i < r.component(1).nbytes; ++i) {
    if (tail[i] != (item.seq & 0xff)) return "tail byte " + std::to_string(i) + " does not match the item";
  }
  return {};
}

// ---- threads ----

// Starts every thread at once, so the threads really contend.
class Barrier {
 public:
  explicit Barrier(int n) : left_(n) {}
  // any of the n threads, once each.
  void wait() {
    left_.fetch_sub(1);
    while (left_.load() > 0) std::this_thread::yield();
  }

 private:
  std::atomic<int> left_;
};

// Runs `f` on a thread of its own, so that the test can wait for it with a
// time limit: a call that hangs then fails the test where it hangs, not in
// the ctest timeout.
class Background {
 public:
  explicit Background(std::function<void()> f)
      : thread_([this, f = std::move(f)] {
          f();
          done_.store(true);
        }) {}
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  ~Background() {
    if (thread_.joinable()) thread_.join();
  }

  // the test's thread: whether `f` has returned.
  bool done() const { return done_.load(); }
  // the test's thread: true once `f` has returned (what it wrote is then
  // visible), waiting up to `limit`. False leaves `f` running: fail the test.
  bool join_within(Clock::duration limit) {
    const auto give_up = Clock::now() + limit;
    while (!done() && Clock::now() < give_up) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (!done()) return false;
    thread_.join();
    return true;
  }

 private:
  std::atomic<bool> done_{false};  // before thread_: set by the thread it starts
  std::thread thread_;
};

// Whether `f`, run on a thread of its own, returns within `limit`.
inline bool returns_within(Clock::duration limit, std::function<void()> f) {
  Background call(std::move(f));
  return call.join_within(limit);
}

// Polls `cond` (something another thread or process changes) for up to 5 s.
inline void wait_for(const std::function<bool()>& cond) {
  const auto give_up = in(std::chrono::milliseconds(5000));
  while (!cond()) {
    CHECK_LT(Clock::now(), give_up);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// Waits (up to 5 s) until a caller is parked, or about to park, on the queue `q`.
inline void wait_parked(const IndexQueueState& q) {
  wait_for([&] { return q.waiters.load() > 0; });
}

// Waits (up to 5 s) until a popper of `q` that was parked has looked at the
// ring again since this call began, and parked again: one of its parks ended
// after the call began (wait_ns grew; a park ends at a wake or at its 200 ms
// re-check), and it is counted as waiting once more. Whatever the caller did
// before the call, the popper has seen it and still waits.
inline void wait_reparked(const IndexQueueState& q) {
  const std::uint64_t before = q.wait_ns.load();
  wait_for([&] { return q.wait_ns.load() > before; });
  wait_parked(q);
}

// Whether a caller is parked, or about to park, on `q`: for wake_latency.
inline std::function<bool()> parked_on(const IndexQueueState& q) {
  return [&q] { return q.waiters.load() > 0; };
}

// Runs `wait` on a thread of its own until `waiting()` says it waits (the
// ring's count of parked callers, say; up to 5 s), and checks that it has not
// returned. Then runs `end`, which must end the wait, and returns how long
// after `end` began `wait` returned (what it wrote is then visible). A wait
// still running 5 s after `end` fails the test.
inline Clock::duration wake_latency(std::function<void()> wait, const std::function<bool()>& waiting,
                                    const std::function<void()>& end) {
  Background waiter(std::move(wait));
  wait_for([&] { return waiting() || waiter.done(); });
  CHECK(!waiter.done());
  const auto t0 = Clock::now();
  end();
  CHECK(waiter.join_within(std::chrono::seconds(5)));
  return Clock::now() - t0;
}

// ---- processes ----

// The Barrier of processes: each forked child blocks reading a pipe until the
// parent, having forked them all, closes the write end.
class Gate {
 public:
  Gate() { CHECK_EQ(pipe(fds_), 0); }
  // each child, once.
  void child_wait() {
    close(fds_[1]);  // or the pipe never reads as closed
    char c;
    CHECK_EQ(read(fds_[0], &c, 1), 0);
    close(fds_[0]);
  }
  // the parent, once every child is forked.
  void open() {
    close(fds_[0]);
    close(fds_[1]);
  }

 private:
  int fds_[2];
};

// Runs `child` in a forked process that leaves by _exit(0): no destructors, no
// atexit, since the parent's rings and test harness are not the child's to
// tear down. A failing CHECK aborts the child, which wait_ok reports.
inline pid_t spawn(const std::function<void()>& child) {
  std::fflush(stdout);  // else the child flushes the parent's buffered lines a second time
  std::fflush(stderr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  CHECK_GE(pid, 0);
  if (pid == 0) {
    // A parent that aborts on a failed CHECK takes its children with it
    // instead of leaving them parked on a ring nobody will ever touch again.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    child();
    _exit(0);
  }
  return pid;
}

// PYFASTQ_STRESS_ITEMS: elements per producer of the stress tests, or `fallback`.
// A value that is not a positive number fails the test: a typo must not make the stress test a no-op.
inline std::uint32_t stress_items(std::uint32_t fallback) {
  const char* env = std::getenv("PYFASTQ_STRESS_ITEMS");
  if (env == nullptr) return fallback;
  char* end = nullptr;
  const unsigned long items = std::strtoul(env, &end, 10);
  CHECK(end != env && *end == '\0' && items > 0 && items <= 100000000);
  return static_cast<std::uint32_t>(items);
}

// N producers x M consumers through `r` (a kItemAndTail ring), all started
// behind a barrier: producers put `per` elements each and the last one
// closes; consumers pop batches of 1 to max_batch (allow_smaller), count each
// dequeue in the fill histogram, and give slots back one by one (even
// consumers) or a batch at once (odd ones). Every element must arrive exactly
// once and undamaged, checked by exact sums; with `fifo`, each consumer must
// also see each producer's elements in order. Returns the elements taken.
inline std::uint64_t exactly_once(Ring& r, int producers, int consumers, std::uint32_t per, std::uint32_t max_batch,
                                  bool fifo) {
  Barrier barrier(producers + consumers);
  std::atomic<int> producers_left{producers};
  std::vector<std::uint64_t> sum(consumers, 0), count(consumers, 0);
  std::vector<std::vector<std::uint8_t>> seen(producers, std::vector<std::uint8_t>(per, 0));
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      barrier.wait();
      for (std::uint32_t s = 0; s < per; ++s) {
        std::uint32_t slot;
        CHECK_EQ(acquire(r, &slot), Status::kOk);
        fill_element(r, slot, static_cast<std::uint32_t>(p), s);
        r.commit(slot);
      }
      if (producers_left.fetch_sub(1) == 1) r.close();
    });
  }
  for (int c = 0; c < consumers; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937 rng(c);
      std::vector<std::int64_t> last(producers, -1);
      std::vector<std::uint32_t> slots(max_batch);
      std::uint32_t got;
      barrier.wait();
      for (;;) {
        const std::uint32_t n = 1 + rng() % max_batch;
        r.record_fill();
        const Status st = r.pop(n, slots.data(), &got, /*allow_smaller=*/true);
        if (st == Status::kClosed) break;
        CHECK_EQ(st, Status::kOk);
        CHECK_GE(got, 1);
        CHECK_LE(got, n);
        for (std::uint32_t i = 0; i < got; ++i) {
          const Item item = read_item(r, slots[i]);
          CHECK_EQ(damage(r, slots[i]), "");
          CHECK_LT(item.producer, static_cast<std::uint32_t>(producers));
          CHECK_LT(item.seq, per);
          if (fifo) {
            CHECK_GT(item.seq, last[item.producer]);
            last[item.producer] = item.seq;
          }
          seen[item.producer][item.seq] += 1;  // each (p, s) is written by exactly one consumer
          sum[c] += item.check;
          ++count[c];
          if (c % 2 == 0) r.release(slots[i]);
        }
        if (c % 2 == 1) r.release_many(slots.data(), got);
      }
    });
  }
  for (auto& t : threads) t.join();

  std::uint64_t want_sum = 0, got_sum = 0, got_count = 0;
  for (int p = 0; p < producers; ++p) {
    for (std::uint32_t s = 0; s < per; ++s) {
      want_sum += mix(static_cast<std::uint32_t>(p), s);
      CHECK_EQ(seen[p][s], 1);
    }
  }
  for (int c = 0; c < consumers; ++c) {
    got_sum += sum[c];
    got_count += count[c];
  }
  CHECK_EQ(got_count, std::uint64_t(producers) * per);
  CHECK_EQ(got_sum, want_sum);
  CHECK_EQ(r.size(), 0);
  return got_count;
}

// Forks `producers` children that attach to `m` (a shared kItemAndTail ring)
// and, once all are forked, put `per` elements each (fill_element): their
// pids, for wait_ok. Each child first checks it sees the ring as the parent does.
inline std::vector<pid_t> forked_producers(RingMemory& m, std::uint32_t producers, std::uint32_t per) {
  Gate gate;
  std::vector<pid_t> kids;
  for (std::uint32_t p = 0; p < producers; ++p) {
    kids.push_back(spawn([&, p] {
      // fork keeps a close-on-exec descriptor; only exec would drop it.
      auto mine = RingMemory::attach(m.fd());
      Ring& cr = mine->ring();
      CHECK_EQ(cr.shuffled(), m.ring().shuffled());
      gate.child_wait();
      for (std::uint32_t s = 0; s < per; ++s) {
        std::uint32_t slot;
        CHECK_EQ(acquire(cr, &slot, in(std::chrono::milliseconds(20000))), Status::kOk);
        fill_element(cr, slot, p, s);
        cr.commit(slot);
      }
    }));
  }
  gate.open();
  return kids;
}

// How a child ended, as a shell would say it.
inline std::string exit_status(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  return "signal " + std::to_string(WTERMSIG(status));
}

inline void wait_ok(pid_t pid) {
  int status = 0;
  CHECK_EQ(waitpid(pid, &status, 0), pid);
  CHECK_EQ(exit_status(status), "exit 0");
}

}  // namespace ring_test
