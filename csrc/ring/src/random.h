// The shuffled ring's random picks: xoshiro256** (Blackman and Vigna), whose
// small state fits in the block, seeded by splitmix64.
#pragma once

#include <cstdint>

namespace pyfastq::detail {

// xoshiro256**: fast, and good enough for picking among at most 2^31 slots.
inline std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }

inline std::uint64_t next_random(std::uint64_t* s) noexcept {
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
inline void seed_random(std::uint64_t* s, std::uint64_t seed) noexcept {
  for (int i = 0; i < 4; ++i) {
    std::uint64_t z = (seed += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    s[i] = z ^ (z >> 31);
  }
}

// Uniform in [0, m) without modulo bias (Lemire's multiply-and-reject).
inline std::uint32_t random_below(std::uint64_t* s, std::uint32_t m) noexcept {
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

}  // namespace pyfastq::detail
