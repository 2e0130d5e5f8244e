// Deterministic random numbers for parameter initialization and sampling.
// splitmix64 expands a 64-bit seed into generator state; xoshiro256** (Blackman
// & Vigna, 2018) generates. State transitions are integer-only, so a seed
// yields the same stream on every compiler and platform, which
// std::normal_distribution does not promise (its algorithm is unspecified).
// Normals come from the Box-Muller transform, both values of each pair used.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>

namespace llamart::train {

// One splitmix64 step: advances `state` and returns a well-mixed 64-bit value.
inline uint64_t splitmix64(uint64_t &state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class Rng {
public:
  using State = std::array<uint64_t, 4>;

  explicit Rng(uint64_t seed = 0) { reseed(seed); }

  void reseed(uint64_t seed) {
    uint64_t sm = seed;
    for (uint64_t &word : s_)
      word = splitmix64(sm);
  }

  uint64_t next_u64() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits (every value exactly representable).
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  // Two independent N(0, 1) values (Box-Muller). u1 is taken in (0, 1] so the
  // logarithm is finite.
  void normal_pair(double &z0, double &z1) {
    const double u1 = 1.0 - uniform();
    const double u2 = uniform();
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double angle = 6.283185307179586476925 * u2;
    z0 = radius * std::cos(angle);
    z1 = radius * std::sin(angle);
  }

  // Uniform integer in [0, n) without modulo bias (Lemire's method would be
  // faster; rejection keeps it obviously correct and n is small here).
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
      x = next_u64();
    } while (x >= limit);
    return x % n;
  }

  const State &state() const { return s_; }
  void set_state(const State &s) { s_ = s; }

private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  State s_{};
};

// A seed for an independent stream derived from (seed, label): the label's
// FNV-1a hash mixed with the seed. Each parameter gets its own stream so its
// initial values do not depend on which other parameters the model has.
inline uint64_t derive_seed(uint64_t seed, const char *label) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const char *c = label; *c; ++c) {
    h ^= static_cast<unsigned char>(*c);
    h *= 0x100000001b3ULL;
  }
  uint64_t sm = seed ^ h;
  return splitmix64(sm);
}

} // namespace llamart::train
