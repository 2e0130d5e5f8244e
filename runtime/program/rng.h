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
#include <cstring>

#include "runtime/checkpoint/fnv1a.h"
#include "runtime/data/shuffle.h"

namespace llamart {

using data::splitmix64;

// The runtime's xoshiro256** (runtime/data/shuffle.h) seeded from one 64-bit
// value, with floating-point draws on top and a state that checkpoints save.
class Rng {
public:
  using State = data::Xoshiro256::State;

  explicit Rng(uint64_t seed = 0) { reseed(seed); }

  void reseed(uint64_t seed) {
    uint64_t sm = seed;
    State s;
    for (uint64_t &word : s)
      word = splitmix64(sm);
    core_ = data::Xoshiro256(s);
  }

  uint64_t next_u64() { return core_.next(); }

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

  // Uniform integer in [0, n), unbiased.
  uint64_t below(uint64_t n) { return core_.below(n); }

  const State &state() const { return core_.state(); }
  void set_state(const State &s) { core_ = data::Xoshiro256(s); }

private:
  data::Xoshiro256 core_{State{}};
};

inline uint64_t derive_seed(uint64_t seed, const char *label) {
  uint64_t sm = seed ^ fnv1a64(label, std::strlen(label));
  return splitmix64(sm);
}

} // namespace llamart
