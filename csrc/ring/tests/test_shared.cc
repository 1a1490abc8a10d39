// Shared-memory rings across processes, and what the owner of a ring can
// still do when a process dies holding part of it.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "ring_helpers.h"

using namespace pyfastq;
using namespace ring_test;
using namespace std::chrono_literals;

namespace {

void send_fd(int sock, int fd) {
  char byte = 'f';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  CHECK_EQ(sendmsg(sock, &msg, 0), 1);
}

int recv_fd(int sock) {
  char byte;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  CHECK_EQ(recvmsg(sock, &msg, MSG_CMSG_CLOEXEC), 1);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  CHECK_NE(c, nullptr);
  CHECK_EQ(c->cmsg_type, SCM_RIGHTS);
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

int open_fds() {
  DIR* d = opendir("/proc/self/fd");
  CHECK_NE(d, nullptr);
  int n = 0;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

std::vector<std::string> shm_entries(const std::string& prefix) {
  std::vector<std::string> out;
  DIR* d = opendir("/dev/shm");
  CHECK_NE(d, nullptr);
  while (dirent* e = readdir(d)) {
    if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0) out.push_back(e->d_name);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

bool attach_throws(int fd) {
  try {
    RingMemory::attach(fd);
  } catch (const std::runtime_error&) {
    return true;
  }
  return false;
}

// A descriptor of a fresh memfd holding `bytes` (zeros unless `data` is given).
int memfd_of(std::size_t bytes, const void* data = nullptr) {
  const int fd = memfd_create("not-a-ring", MFD_CLOEXEC);
  CHECK_GE(fd, 0);
  CHECK_EQ(ftruncate(fd, static_cast<off_t>(bytes)), 0);
  if (data != nullptr) CHECK_EQ(pwrite(fd, data, bytes, 0), static_cast<ssize_t>(bytes));
  return fd;
}

// What a process killed inside pop_n leaves behind: the head moved past a cell
// whose sequence number never got its "taken" mark.
void claim_without_marking(IndexQueueState& q) { q.head.fetch_add(1); }

}  // namespace

// ---- shared memory ----

TEST(shared_ring_is_an_unlinked_0600_cloexec_descriptor) {
  auto priv = private_ring(4);
  CHECK_EQ(priv->fd(), -1);

  const std::vector<std::string> before = shm_entries("pyfastq-");  // leftovers of others are not ours to judge
  auto m = shared_ring(4);
  const int fd = m->fd();
  CHECK_GE(fd, 0);
  struct stat st;
  CHECK_EQ(fstat(fd, &st), 0);
  CHECK(S_ISREG(st.st_mode));
  CHECK_EQ(st.st_mode & 0777, 0600u);  // no other user may map the ring
  CHECK_EQ(static_cast<std::size_t>(st.st_size), m->bytes());
  // A program a worker exec's must not inherit the ring by accident.
  CHECK_NE(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);

  // The name is gone as soon as create returns, so no process dying at any
  // moment can leave a segment behind: the kernel calls the descriptor's file
  // deleted, and /dev/shm holds nothing under that name, nor any new pyfastq name.
  char target[4096];
  const ssize_t n = readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), target, sizeof target - 1);
  CHECK_GT(n, 0);
  const std::string link(target, static_cast<std::size_t>(n));
  const std::string deleted = " (deleted)";
  CHECK_NE(link.find("/pyfastq-"), std::string::npos);
  CHECK_GT(link.size(), deleted.size());
  CHECK_EQ(link.compare(link.size() - deleted.size(), deleted.size(), deleted), 0);
  struct stat named;
  CHECK_EQ(stat(link.substr(0, link.size() - deleted.size()).c_str(), &named), -1);
  CHECK_EQ(errno, ENOENT);
  CHECK_EQ(shm_entries("pyfastq-"), before);
}

TEST(attach_in_process_sees_the_same_ring) {
  auto a = shared_ring(4);
  auto b = RingMemory::attach(a->fd());
  CHECK_GE(b->fd(), 0);  // its own duplicate, so the caller may close theirs
  CHECK_NE(b->fd(), a->fd());
  CHECK_NE(fcntl(b->fd(), F_GETFD) & FD_CLOEXEC, 0);
  CHECK_NE(b->id(), a->id());
  CHECK_EQ(find_ring(b->id()), b);
  CHECK_EQ(b->bytes(), a->bytes());
  // A second mapping of the same pages, not a copy.
  CHECK_NE(b->ring().header(), a->ring().header());
  CHECK_EQ(b->ring().capacity(), 4);
  CHECK_EQ(b->ring().slot_bytes(), a->ring().slot_bytes());
  CHECK_EQ(b->ring().num_components(), 1);
  CHECK_EQ(b->ring().component(0).nbytes, sizeof(Item));

  std::uint32_t slot, got;
  put_item(a->ring(), 1, 2);
  CHECK_EQ(b->ring().pop(1, &slot, &got, false, in(1000ms)), Status::kOk);
  CHECK_EQ(read_item(b->ring(), slot), item_of(1, 2));
  b->ring().release(slot);
  put_item(b->ring(), 3, 4);
  CHECK_EQ(a->ring().pop(1, &slot, &got, false, in(1000ms)), Status::kOk);
  CHECK_EQ(read_item(a->ring(), slot), item_of(3, 4));
  a->ring().release(slot);

  // The creator letting go (its descriptor closed, its view unmapped) leaves
  // the attached view working: the memory lives while anything maps it.
  a.reset();
  Ring& r = b->ring();
  for (std::uint32_t s = 0; s < 20; ++s) {  // several laps of the 4 slots
    put_item(r, 5, s);
    CHECK_EQ(r.pop(1, &slot, &got, false, in(1000ms)), Status::kOk);
    CHECK_EQ(read_item(r, slot), item_of(5, s));
    r.release(slot);
  }
}

TEST(attach_refuses_what_is_not_a_ring) {
  auto real = shared_ring(4);
  const std::size_t total = real->ring().header()->total_bytes;
  std::vector<std::uint8_t> image(total);
  std::memcpy(image.data(), real->ring().header(), total);
  const int before = open_fds();

  const int zeros = memfd_of(1 << 20);
  CHECK(attach_throws(zeros));  // big enough, but no magic
  close(zeros);

  char path[] = "/tmp/pyfastq-test-XXXXXX";
  const int file = mkstemp(path);
  CHECK_GE(file, 0);
  unlink(path);
  CHECK_EQ(ftruncate(file, 1 << 16), 0);
  CHECK(attach_throws(file));  // a plain file of zeros
  close(file);

  const int tiny = memfd_of(16);
  CHECK(attach_throws(tiny));  // smaller than a header: refused before anything is read
  close(tiny);

  const int truncated = memfd_of(total - 64, image.data());
  CHECK(attach_throws(truncated));  // a real header, but its slots would lie past the end
  close(truncated);

  reinterpret_cast<RingHeader*>(image.data())->version += 1;
  const int other_version = memfd_of(total, image.data());
  CHECK(attach_throws(other_version));
  close(other_version);

  int p[2];
  CHECK_EQ(pipe(p), 0);
  CHECK(attach_throws(p[0]));  // not a regular file
  close(p[0]);
  close(p[1]);

  const int read_only = open(("/proc/self/fd/" + std::to_string(real->fd())).c_str(), O_RDONLY | O_CLOEXEC);
  CHECK_GE(read_only, 0);
  CHECK(attach_throws(read_only));  // the ring itself, but it cannot be mapped for writing
  close(read_only);

  CHECK(attach_throws(-1));
  // Every refusal closed the duplicate it took and unmapped what it mapped.
  CHECK_EQ(open_fds(), before);
}

// ---- across processes ----

TEST(parked_waiters_wake_across_processes) {
  int sv[2];
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  // Forked before the ring exists: the child maps only what it is sent, as a
  // multiprocessing worker receives a descriptor over a socket.
  const pid_t kid = spawn([&] {
    close(sv[0]);
    const int fd = recv_fd(sv[1]);
    auto mine = RingMemory::attach(fd);
    close(fd);
    Ring& cr = mine->ring();
    // Put only once the parent is parked on the futex: then only a wake, not
    // its spin, delivers the element sooner than its 200 ms re-check.
    wait_parked(cr.header()->ready_q);
    std::uint32_t slot;
    CHECK_EQ(acquire(cr, &slot, in(5000ms)), Status::kOk);
    const std::int64_t stamp = now_ns();
    std::memcpy(cr.slot_data(slot), &stamp, sizeof stamp);
    cr.commit(slot);
    // The ring holds one slot and the parent keeps it: this acquire parks
    // here until the parent's release wakes it. Its element says when.
    CHECK_EQ(acquire(cr, &slot, in(5000ms)), Status::kOk);
    const std::int64_t woke = now_ns();
    std::memcpy(cr.slot_data(slot), &woke, sizeof woke);
    cr.commit(slot);
  });
  close(sv[1]);
  auto m = shared_ring(1, {sizeof(std::int64_t)});
  send_fd(sv[0], m->fd());
  close(sv[0]);
  Ring& r = m->ring();

  std::uint32_t slot, got;
  const auto t0 = Clock::now();
  CHECK_EQ(r.pop(1, &slot, &got, false, in(10000ms)), Status::kOk);
  std::int64_t stamp;
  std::memcpy(&stamp, r.slot_data(slot), sizeof stamp);
  const std::chrono::nanoseconds latency(now_ns() - stamp);
  CHECK_LT(Clock::now() - t0, 5s);
  CHECK_GT(r.counters().get_wait_ns, 0);  // it did park
  CHECK_LE(latency, 100ms);  // after the other process's commit

  wait_parked(r.header()->free_q);
  const std::int64_t released = now_ns();
  r.release(slot);
  CHECK_EQ(r.pop(1, &slot, &got, false, in(10000ms)), Status::kOk);
  std::int64_t woke;
  std::memcpy(&woke, r.slot_data(slot), sizeof woke);
  r.release(slot);
  CHECK_GT(r.counters().put_wait_ns, 0);  // the child's producer parked, counted in the shared header
  const std::chrono::nanoseconds woke_after(woke - released);  // the other process's release
  CHECK_GE(woke_after, 0ms);
  CHECK_LE(woke_after, 100ms);
  wait_ok(kid);
}

TEST(forked_producers_through_one_shared_ring) {
  constexpr std::uint32_t kProducers = 3;
  constexpr std::uint32_t kPer = 20000;
  // A small ring, so producers park waiting for the parent's releases as
  // often as the parent parks waiting for their commits.
  auto m = shared_ring(8, kItemAndTail);
  Ring& r = m->ring();
  const std::vector<pid_t> kids = forked_producers(*m, kProducers, kPer);

  std::mt19937 rng(7);
  std::vector<std::uint32_t> next(kProducers, 0);
  std::uint64_t got_sum = 0, want_sum = 0;
  std::uint32_t left = kProducers * kPer;
  while (left > 0) {
    const std::uint32_t n = std::min<std::uint32_t>(left, 1 + rng() % 4);
    std::uint32_t slots[4], got;
    CHECK_EQ(r.pop(n, slots, &got, false, in(20000ms)), Status::kOk);
    CHECK_EQ(got, n);
    for (std::uint32_t i = 0; i < got; ++i) {
      const Item item = read_item(r, slots[i]);
      CHECK_EQ(damage(r, slots[i]), "");
      CHECK_LT(item.producer, kProducers);
      // One consumer sees each producer's elements exactly in the order it put them.
      CHECK_EQ(item.seq, next[item.producer]);
      ++next[item.producer];
      got_sum += item.check;
      r.release(slots[i]);
    }
    left -= got;
  }
  for (pid_t k : kids) wait_ok(k);
  for (std::uint32_t p = 0; p < kProducers; ++p) {
    CHECK_EQ(next[p], kPer);
    for (std::uint32_t s = 0; s < kPer; ++s) want_sum += mix(p, s);
  }
  CHECK_EQ(got_sum, want_sum);
  // Every acquire in the children was matched by a commit: nothing is left
  // in flight, so a closed ring reads as drained at once.
  r.close();
  std::uint32_t slot, got;
  CHECK_EQ(r.pop(1, &slot, &got, false, in(1000ms)), Status::kClosed);
  const Counters c = r.counters();
  CHECK_EQ(c.puts, kProducers * kPer);
  CHECK_EQ(c.gets, kProducers * kPer);
  CHECK_EQ(c.size, 0);
}

TEST(a_producer_killed_holding_a_slot_is_failed_not_waited_for) {
  auto m = shared_ring(5);
  Ring& r = m->ring();
  int ready[2];
  CHECK_EQ(pipe(ready), 0);
  const pid_t kid = spawn([&] {
    close(ready[0]);
    auto mine = RingMemory::attach(m->fd());
    Ring& cr = mine->ring();
    put_item(cr, 0, 0);
    put_item(cr, 0, 1);
    std::uint32_t held;
    CHECK_EQ(acquire(cr, &held, in(5000ms)), Status::kOk);
    CHECK_EQ(write(ready[1], "x", 1), 1);
    for (;;) pause();
  });
  close(ready[1]);
  char c;
  CHECK_EQ(read(ready[0], &c, 1), 1);
  close(ready[0]);

  std::uint32_t popped[2], got;
  CHECK_EQ(r.pop(2, popped, &got, false, in(5000ms)), Status::kOk);
  CHECK_EQ(got, 2);
  CHECK_EQ(read_item(r, popped[0]), item_of(0, 0));
  CHECK_EQ(read_item(r, popped[1]), item_of(0, 1));
  std::uint32_t mine[2];
  CHECK_EQ(acquire(r, &mine[0], in(1000ms)), Status::kOk);
  CHECK_EQ(acquire(r, &mine[1], in(1000ms)), Status::kOk);

  CHECK_EQ(kill(kid, SIGKILL), 0);
  int status;
  CHECK_EQ(waitpid(kid, &status, 0), kid);
  CHECK(WIFSIGNALED(status));
  CHECK_EQ(WTERMSIG(status), SIGKILL);

  // The child is gone; threads are safe to start again.
  Status result{};
  Background consumer([&] {
    std::uint32_t s, g;
    result = r.pop(1, &s, &g);
  });
  r.abort(mine[0]);
  r.close();
  wait_reparked(r.header()->ready_q);  // it has seen the close, and waits on
  // Closed, yet the dead child's acquire still counts as in flight (as does
  // the parent's own mine[1]): close alone would have the consumer wait
  // forever for a put that cannot come. That is what fail() is for.
  CHECK(!consumer.done());
  const std::string msg = "producer process 1234 died";
  CHECK(r.fail(msg.data(), msg.size()));
  CHECK(consumer.join_within(1s));
  CHECK_EQ(result, Status::kFailed);
  CHECK_EQ(r.fail_message(), msg);

  // What the parent still holds goes back without waiting on anyone.
  CHECK(returns_within(2s, [&] {
    r.release(popped[0]);
    r.release(popped[1]);
    r.abort(mine[1]);
  }));
  std::uint32_t s;
  CHECK_EQ(acquire(r, &s, in(1000ms)), Status::kFailed);
  CHECK_EQ(r.pop(1, &s, &got, false, in(1000ms)), Status::kFailed);
}

TEST(a_named_writer_killed_holding_a_slot_is_reclaimed_and_the_ring_goes_on) {
  auto m = shared_ring(3);
  Ring& r = m->ring();
  int ready[2];
  CHECK_EQ(pipe(ready), 0);
  const pid_t kid = spawn([&] {
    close(ready[0]);
    auto mine = RingMemory::attach(m->fd());
    Ring& cr = mine->ring();
    std::atomic<std::uint64_t> commits{0};
    CHECK(cr.set_writer(7, &commits));
    put_item(cr, 0, 0);
    std::uint32_t held[2], got;
    CHECK(cr.begin_put());  // a put under way, as one waiting for room would be
    CHECK_EQ(cr.acquire_begun(2, held, &got, false, in(5000ms)), Status::kOk);
    CHECK_EQ(got, 2);
    CHECK_EQ(write(ready[1], "x", 1), 1);
    for (;;) pause();
  });
  close(ready[1]);
  char c;
  CHECK_EQ(read(ready[0], &c, 1), 1);
  close(ready[0]);
  CHECK_EQ(kill(kid, SIGKILL), 0);
  int status;
  CHECK_EQ(waitpid(kid, &status, 0), kid);

  // Its two slots come back, and its puts under way end: once closed, the ring drains and ends.
  CHECK_EQ(r.reclaim_writer(7), 2);
  CHECK_EQ(r.reclaim_writer(7), 0);
  std::uint32_t s[3], got;
  CHECK_EQ(acquire_many(r, 2, s, &got, false, in(1000ms)), Status::kOk);
  r.abort(s[0]);
  r.abort(s[1]);
  CHECK(r.close());
  CHECK_EQ(r.pop(1, s, &got, false, in(1000ms)), Status::kOk);
  CHECK_EQ(read_item(r, s[0]), item_of(0, 0));
  r.release(s[0]);
  CHECK_EQ(r.pop(1, s, &got, false, in(1000ms)), Status::kClosed);
}

TEST(consumers_record_the_positions_they_take) {
  auto m = private_ring(8);
  Ring& r = m->ring();
  r.begin_tracking(10);
  r.mark_taken(12);
  std::atomic<std::uint64_t> commits{0};
  CHECK(r.set_writer(0, &commits));
  auto put_at = [&](std::uint64_t position) {
    std::uint32_t s;
    CHECK_EQ(acquire(r, &s, in(1000ms)), Status::kOk);
    r.set_tag(s, position);
    r.commit(s);
  };
  put_at(13);
  put_at(10);
  put_at(15);
  put_item(r, 0, 0);  // untagged: reads no position
  CHECK_EQ(commits.load(), 4);
  std::uint32_t s[4], got;
  CHECK_EQ(r.pop(2, s, &got, false, in(1000ms)), Status::kOk);
  r.release_many(s, got);
  CHECK_EQ(r.taken_watermark(), 11);  // 10 taken; 11 not yet
  CHECK(r.taken(12) && r.taken(13) && !r.taken(14));
  put_at(11);
  CHECK_EQ(r.pop(3, s, &got, false, in(1000ms)), Status::kOk);
  r.release_many(s, got);
  CHECK_EQ(r.taken_watermark(), 14);  // 11, 12, 13
  CHECK(r.taken(15) && !r.tracking_overflowed());
  put_at(14 + pyfastq::kTakenBits);
  CHECK_EQ(r.pop(1, s, &got, false, in(1000ms)), Status::kOk);
  CHECK(r.tracking_overflowed());
}

TEST(the_taken_watermark_is_exact_under_concurrent_consumers) {
  constexpr std::uint64_t kN = 20000;
  auto m = private_ring(64);
  Ring& r = m->ring();
  r.begin_tracking(0);
  Background producer([&] {
    std::mt19937 rng(1);
    std::vector<std::uint64_t> order(kN);
    for (std::uint64_t i = 0; i < kN; ++i) order[i] = i;
    // Near order, as workers claiming small chunks make it: shuffled within windows of 32.
    for (std::uint64_t i = 0; i + 32 <= kN; i += 32) std::shuffle(order.begin() + i, order.begin() + i + 32, rng);
    for (auto p : order) {
      std::uint32_t s;
      CHECK_EQ(acquire(r, &s), Status::kOk);
      r.set_tag(s, p);
      r.commit(s);
    }
    r.close();
  });
  std::vector<std::thread> consumers;
  for (int c = 0; c < 3; ++c) {
    consumers.emplace_back([&] {
      std::uint32_t s[5], got;
      while (r.pop(5, s, &got, true) == Status::kOk) r.release_many(s, got);
    });
  }
  for (auto& t : consumers) t.join();
  CHECK(producer.join_within(std::chrono::seconds(60)));
  CHECK_EQ(r.taken_watermark(), kN);
  CHECK(!r.tracking_overflowed());
}

// The dead-popper cases below make the state a process killed mid-pop leaves
// by hand (there is no instant to SIGKILL it at reliably); a private ring
// has the same layout.

TEST(a_push_behind_a_dead_popper_gives_up_once_the_ring_fails) {
  auto m = private_ring(2);
  Ring& r = m->ring();
  // A producer killed inside acquire, having claimed free cell 0 (slot 0).
  r.header()->inflight.fetch_add(1);
  claim_without_marking(r.header()->free_q);
  std::uint32_t s;
  CHECK_EQ(acquire(r, &s, in(1000ms)), Status::kOk);
  CHECK_EQ(s, 1);

  // Giving slot 1 back pushes it into free cell 0, still unmarked. While the
  // ring is open the popper may be alive and a few instructions from marking
  // the cell, so the push waits for it; once the ring fails, it gives up.
  // Such a push spins and yields, counted nowhere; but it cannot complete
  // while the cell is unmarked, so once it has begun it is stalled.
  std::atomic<bool> began{false};
  CHECK_LE(wake_latency(
               [&] {
                 began = true;
                 r.abort(s);
               },
               [&] { return began.load(); }, [&] { CHECK(r.fail("dead", 4)); }),
           2s);
  std::uint32_t got;
  CHECK_EQ(r.pop(1, &s, &got), Status::kFailed);
}

TEST(a_commit_behind_a_dead_consumer_gives_up_once_the_ring_fails) {
  auto m = private_ring(2);
  Ring& r = m->ring();
  put_item(r, 0, 0);                              // slot 0 into ready cell 0
  claim_without_marking(r.header()->ready_q);     // a consumer killed inside pop takes it
  put_item(r, 0, 1);                              // slot 1 into ready cell 1
  std::uint32_t s, got;
  CHECK_EQ(r.pop(1, &s, &got, false, in(1000ms)), Status::kOk);
  CHECK_EQ(read_item(r, s), item_of(0, 1));
  r.release(s);
  CHECK_EQ(acquire(r, &s, in(1000ms)), Status::kOk);
  // Into ready cell 0, which the dead consumer never marked: the commit waits
  // for it while the ring is open, and gives up once it fails.
  std::atomic<bool> began{false};  // as above: a commit that has begun is stalled
  CHECK_LE(wake_latency(
               [&] {
                 began = true;
                 r.commit(s);
               },
               [&] { return began.load(); }, [&] { CHECK(r.fail("dead", 4)); }),
           2s);
  CHECK_EQ(r.pop(1, &s, &got), Status::kFailed);
}

TEST(cancel_drains_past_a_dead_producer) {
  auto m = private_ring(3);
  Ring& r = m->ring();
  r.header()->inflight.fetch_add(1);
  claim_without_marking(r.header()->free_q);  // a producer killed inside acquire: free cell 0
  put_item(r, 0, 0);
  put_item(r, 0, 1);
  CHECK_EQ(r.size(), 2);
  // Cancel drops the two ready elements by pushing their slots to the free
  // queue, whose next cell is the dead producer's.
  CHECK(returns_within(2s, [&] { CHECK(r.close(true)); }));
  CHECK_EQ(r.size(), 0);
  std::uint32_t s, got;
  CHECK_EQ(r.pop(1, &s, &got), Status::kCancelled);
}

TEST(consumers_behind_a_dead_committer_end_with_the_failure) {
  auto m = private_ring(4);
  Ring& r = m->ring();
  // A producer killed inside commit: it claimed ready cell 0 but never filled
  // it, and never left flight.
  std::uint32_t lost;
  CHECK_EQ(acquire(r, &lost, in(1000ms)), Status::kOk);
  r.header()->ready_q.tail.fetch_add(1);
  put_item(r, 0, 1);  // lands behind the hole
  std::uint32_t s, got;
  CHECK_EQ(r.pop(1, &s, &got, false, in(30ms)), Status::kTimeout);  // FIFO: nothing passes the hole
  r.close();
  CHECK_EQ(r.pop(1, &s, &got, true, in(30ms)), Status::kTimeout);  // nor does close drain it: the dead put is in flight
  Status result{};
  const auto woke = wake_latency([&] { result = r.pop(1, &s, &got); }, parked_on(r.header()->ready_q),
                                 [&] { CHECK(r.fail("dead", 4)); });
  CHECK_EQ(result, Status::kFailed);
  CHECK_LT(woke, 100ms);
}

// A child forked while another thread holds the ring registry's lock (a TF
// op looking its ring up) must still be able to attach: the lock is held
// across fork() and released on both sides. ThreadSanitizer does not support
// fork() from a multithreaded process, so that build skips this one.
TEST(a_fork_while_rings_are_looked_up_can_attach) {
#if defined(__SANITIZE_THREAD__)
  std::printf("  (skipped under ThreadSanitizer: fork with threads running)\n");
#else
  auto m = shared_ring(4);
  std::atomic<bool> stop{false};
  std::thread looker([&] {
    while (!stop.load(std::memory_order_relaxed)) CHECK_NE(find_ring(m->id()), nullptr);
  });
  for (int i = 0; i < 200; ++i) {
    wait_ok(spawn([&] {
      alarm(5);  // a child that inherited the lock held would hang here: SIGALRM fails it
      auto mine = RingMemory::attach(m->fd());
      CHECK_EQ(mine->ring().capacity(), 4);
    }));
  }
  stop.store(true);
  looker.join();
#endif
}

int main() { return run_tests(); }
