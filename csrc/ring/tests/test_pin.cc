// Pinning a ring through a CUDA runtime opened at run time (cuda_host.h), with
// the stand-in runtime fake_cudart.so: pinned once however many threads ask,
// unpinned before the memory is unmapped (on another thread under a
// TeardownElsewhere; never by a forked child), a refusal leaving the ring unpinned.
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "pyfastq/cuda_host.h"
#include "ring_helpers.h"

using namespace pyfastq;
using namespace ring_test;

namespace {

template <typename T>
T* fake(const char* name) {
  static void* handle = dlopen(PYFASTQ_FAKE_CUDART, RTLD_NOW | RTLD_LOCAL);
  CHECK(handle != nullptr);
  auto* p = static_cast<T*>(dlsym(handle, name));
  CHECK(p != nullptr);
  return p;
}

long this_thread_id() { return static_cast<long>(syscall(SYS_gettid)); }

}  // namespace

TEST(pinned_once_by_racing_threads_and_unpinned_before_unmap) {
  auto& registers = *fake<std::atomic<int>>("fake_registers");
  auto& unregisters = *fake<std::atomic<int>>("fake_unregisters");
  const int before = registers.load();
  {
    auto m = private_ring(8, {4096});
    CHECK(!m->pinned());
    std::atomic<int> go{0}, pinned{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        while (go.load() == 0) {
        }
        if (m->pin()) pinned.fetch_add(1);
      });
    }
    go.store(1);
    for (auto& t : threads) t.join();
    CHECK_EQ(pinned.load(), 4);
    CHECK(m->pinned());
    CHECK_EQ(registers.load(), before + 1);
    CHECK_EQ(unregisters.load(), before);
  }
  CHECK_EQ(unregisters.load(), before + 1);  // fake_cudart aborts if the range was unmapped first
  CHECK_EQ(fake<std::atomic<long>>("fake_unregister_thread")->load(), this_thread_id());
  CHECK_EQ(cudart_description(), std::string(PYFASTQ_FAKE_CUDART));
}

TEST(a_forked_child_leaves_its_parents_pinning_alone) {
  auto& unregisters = *fake<std::atomic<int>>("fake_unregisters");
  const int before = unregisters.load();
  auto m = private_ring(8, {4096});
  CHECK(m->pin());
  const pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {  // CHECK aborts: the parent sees a signal
    CHECK(!m->pinned());
    std::string why;
    CHECK(!m->pin(&why));
    CHECK_EQ(why, std::string("pinned by the process this one was forked from: CUDA does not carry over a fork"));
    m.reset();  // the child's copy of the ring goes, and must not unregister the parent's pinning
    CHECK_EQ(unregisters.load(), before);
    _exit(0);
  }
  int status = 0;
  CHECK_EQ(waitpid(child, &status, 0), child);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(m->pinned());
  m.reset();
  CHECK_EQ(unregisters.load(), before + 1);
}

TEST(a_ring_let_go_under_teardown_elsewhere_is_unpinned_on_another_thread) {
  auto& unregisters = *fake<std::atomic<int>>("fake_unregisters");
  auto& unregister_thread = *fake<std::atomic<long>>("fake_unregister_thread");
  const int before = unregisters.load();
  auto m = private_ring(8, {4096});
  CHECK(m->pin());
  {
    TeardownElsewhere elsewhere;
    m.reset();  // the last owner: the teardown leaves this thread
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (unregisters.load() == before && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CHECK_EQ(unregisters.load(), before + 1);
  CHECK(unregister_thread.load() != this_thread_id());
}

TEST(a_refused_pin_is_kept_and_says_why) {
  auto& refuse = *fake<std::atomic<int>>("fake_refuse");
  auto& unregisters = *fake<std::atomic<int>>("fake_unregisters");
  refuse.store(1);
  const int before = unregisters.load();
  {
    auto m = private_ring(2, {64});
    std::string why;
    CHECK(!m->pin(&why));
    CHECK_EQ(why, std::string("cudaHostRegister failed: fake error (2)"));
    refuse.store(0);
    CHECK(!m->pin());  // the first answer stands
    CHECK(!m->pinned());
  }
  CHECK_EQ(unregisters.load(), before);  // nothing was pinned, nothing unpinned
}

int main() {
  setenv("PYFASTQ_CUDART", PYFASTQ_FAKE_CUDART, 1);  // before the first pin: the runtime is opened once
  return run_tests();
}
