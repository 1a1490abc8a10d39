// A minimal test harness: CHECK fails loudly with file and line; TEST registers a case.
#pragma once

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

struct TestCase {
  const char* name;
  std::function<void()> fn;
};
inline std::vector<TestCase>& test_cases() {
  static std::vector<TestCase> cases;
  return cases;
}
struct Register {
  Register(const char* name, std::function<void()> fn) { test_cases().push_back({name, std::move(fn)}); }
};
#define TEST(name)                                 \
  static void name();                              \
  static Register register_##name(#name, name);    \
  static void name()

inline int run_tests() {
  int n = 0;
  for (auto& t : test_cases()) {
    std::printf("[ RUN  ] %s\n", t.name);
    std::fflush(stdout);
    t.fn();
    std::printf("[  OK  ] %s\n", t.name);
    ++n;
  }
  std::printf("%d passed, 0 failed\n", n);
  return 0;
}

// Starts every thread at once, so the threads really contend.
class Barrier {
 public:
  explicit Barrier(int n) : left_(n) {}
  void wait() {
    left_.fetch_sub(1);
    while (left_.load() > 0) std::this_thread::yield();
  }

 private:
  std::atomic<int> left_;
};
