// A minimal test harness: CHECK fails loudly with file and line; CHECK_EQ,
// CHECK_NE, CHECK_LT, CHECK_LE, CHECK_GT and CHECK_GE also print both
// operands' expressions and values; TEST registers a case.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

// Each operand is evaluated once. An operand with a top-level comma (a braced
// initializer) needs parentheses of its own, as in any macro argument.
#define CHECK_EQ(a, b) CHECK_OP_("CHECK_EQ", eq, ==, a, b)
#define CHECK_NE(a, b) CHECK_OP_("CHECK_NE", ne, !=, a, b)
#define CHECK_LT(a, b) CHECK_OP_("CHECK_LT", lt, <, a, b)
#define CHECK_LE(a, b) CHECK_OP_("CHECK_LE", le, <=, a, b)
#define CHECK_GT(a, b) CHECK_OP_("CHECK_GT", gt, >, a, b)
#define CHECK_GE(a, b) CHECK_OP_("CHECK_GE", ge, >=, a, b)

#define CHECK_OP_(macro, compare, op, a, b)                                                                  \
  do {                                                                                                       \
    const auto& check_a_ = (a);                                                                              \
    const auto& check_b_ = (b);                                                                              \
    if (!::check_internal::compare(check_a_, check_b_)) {                                                    \
      ::check_internal::fail_comparison(__FILE__, __LINE__, macro, #a, #op, #b,                              \
                                        ::check_internal::to_string(check_a_),                               \
                                        ::check_internal::to_string(check_b_));                              \
    }                                                                                                        \
  } while (0)

namespace check_internal {

// Integers of mixed signedness compare by value, as C++20's std::cmp_equal
// and std::cmp_less do: CHECK_EQ(count, 4) with an unsigned count is then
// neither a -Wsign-compare error nor a wrong answer for negative operands.
template <class A, class B>
inline constexpr bool kMixedSign = std::is_integral_v<A> && std::is_integral_v<B> && !std::is_same_v<A, bool> &&
                                   !std::is_same_v<B, bool> && std::is_signed_v<A> != std::is_signed_v<B>;

template <class A, class B>
constexpr bool cmp_equal(A a, B b) {
  using U = std::make_unsigned_t<std::common_type_t<A, B>>;
  if constexpr (std::is_signed_v<A>) {
    return a >= 0 && U(a) == U(b);
  } else {
    return b >= 0 && U(a) == U(b);
  }
}

template <class A, class B>
constexpr bool cmp_less(A a, B b) {
  using U = std::make_unsigned_t<std::common_type_t<A, B>>;
  if constexpr (std::is_signed_v<A>) {
    return a < 0 || U(a) < U(b);
  } else {
    return b >= 0 && U(a) < U(b);
  }
}

template <class A, class B>
bool eq(const A& a, const B& b) {
  if constexpr (kMixedSign<A, B>) return cmp_equal(a, b);
  else return a == b;
}
template <class A, class B>
bool ne(const A& a, const B& b) {
  if constexpr (kMixedSign<A, B>) return !cmp_equal(a, b);
  else return a != b;
}
template <class A, class B>
bool lt(const A& a, const B& b) {
  if constexpr (kMixedSign<A, B>) return cmp_less(a, b);
  else return a < b;
}
template <class A, class B>
bool le(const A& a, const B& b) {
  if constexpr (kMixedSign<A, B>) return !cmp_less(b, a);
  else return a <= b;
}
template <class A, class B>
bool gt(const A& a, const B& b) {
  if constexpr (kMixedSign<A, B>) return cmp_less(b, a);
  else return a > b;
}
template <class A, class B>
bool ge(const A& a, const B& b) {
  if constexpr (kMixedSign<A, B>) return !cmp_less(a, b);
  else return a >= b;
}

// status_name() is found by argument-dependent lookup, so this header needs
// no ring header and any enum with a status_name() prints by name.
template <class T, class = void>
struct HasStatusName : std::false_type {};
template <class T>
struct HasStatusName<T, std::void_t<decltype(status_name(std::declval<T>()))>> : std::true_type {};

template <class T, class = void>
struct IsStreamable : std::false_type {};
template <class T>
struct IsStreamable<T, std::void_t<decltype(std::declval<std::ostream&>() << std::declval<const T&>())>>
    : std::true_type {};

template <class T, class = void>
struct IsRange : std::false_type {};
template <class T>
struct IsRange<T, std::void_t<decltype(std::begin(std::declval<const T&>()), std::end(std::declval<const T&>()))>>
    : std::true_type {};

template <class T>
struct IsDuration : std::false_type {};
template <class Rep, class Period>
struct IsDuration<std::chrono::duration<Rep, Period>> : std::true_type {};

template <class T>
struct IsTimePoint : std::false_type {};
template <class Clock, class Duration>
struct IsTimePoint<std::chrono::time_point<Clock, Duration>> : std::true_type {};

template <class T>
std::string to_string(const T& v) {
  std::ostringstream os;
  if constexpr (std::is_same_v<T, bool>) {
    os << (v ? "true" : "false");
  } else if constexpr (std::is_enum_v<T>) {
    // Unary plus: an enum over a char type prints as a number too.
    const auto n = +static_cast<std::underlying_type_t<T>>(v);
    if constexpr (HasStatusName<T>::value) {
      os << status_name(v) << " (" << n << ")";
    } else {
      os << n;
    }
  } else if constexpr (std::is_integral_v<T>) {
    os << +v;  // uint8_t and char print as numbers, not characters
  } else if constexpr (std::is_same_v<T, std::nullptr_t>) {
    os << "nullptr";
  } else if constexpr (std::is_pointer_v<T>) {
    using Pointee = std::remove_cv_t<std::remove_pointer_t<T>>;
    if constexpr (std::is_same_v<Pointee, char>) {
      if (v == nullptr) {
        os << "nullptr";
      } else {
        os << '"' << v << '"';
      }
    } else {
      os << static_cast<const void*>(v);  // an address, never the bytes behind an uint8_t*
    }
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    os << '"' << std::string_view(v) << '"';
  } else if constexpr (IsDuration<T>::value) {
    os << std::chrono::duration<double, std::milli>(v).count() << " ms";
  } else if constexpr (IsTimePoint<T>::value) {
    os << to_string(v.time_since_epoch()) << " on its clock";
  } else if constexpr (IsStreamable<T>::value) {
    os << v;
  } else if constexpr (IsRange<T>::value) {
    os << '[';
    const char* sep = "";
    for (const auto& e : v) {
      os << sep << to_string(e);
      sep = ", ";
    }
    os << ']';
  } else {
    os << "(a value of " << sizeof(T) << " bytes that does not print)";
  }
  return os.str();
}

[[noreturn]] inline void fail_comparison(const char* file, int line, const char* macro, const char* a_expr,
                                         const char* op, const char* b_expr, const std::string& a,
                                         const std::string& b) {
  std::fprintf(stderr, "%s:%d: %s failed: %s %s %s\n  %s is %s\n  %s is %s\n", file, line, macro, a_expr, op, b_expr,
               a_expr, a.c_str(), b_expr, b.c_str());
  std::abort();
}

}  // namespace check_internal

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
