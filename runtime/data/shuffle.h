// The deterministic window order of the data loader.
//
// A resumed or re-run job must see exactly the same batches on every machine,
// compiler and standard library, so nothing here uses <random>'s
// distributions (whose algorithms are implementation-defined). The generator
// is xoshiro256** (Blackman & Vigna) seeded through splitmix64, bounded
// integers use Lemire's multiply-shift with rejection (unbiased, integer
// only), and the permutation is a plain Fisher-Yates shuffle.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace llamart::data {

// One step of splitmix64: advances `state` and returns the mixed output.
inline uint64_t splitmix64(uint64_t &state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// xoshiro256**: the one generator of the runtime (the data order here, and
// parameter init and sampling through train/rng.h).
class Xoshiro256 {
public:
  using State = std::array<uint64_t, 4>;

  // Independent streams for (seed, stream): the pair is hashed through
  // splitmix64 so that neighbouring seeds or epochs give unrelated states.
  Xoshiro256(uint64_t seed, uint64_t stream) {
    uint64_t sm = seed;
    uint64_t key = splitmix64(sm);
    sm = key ^ (stream * 0xd1b54a32d192ed03ull + 0x8cb92ba72f3d8dd7ull);
    for (auto &word : s_)
      word = splitmix64(sm);
  }
  explicit Xoshiro256(const State &state) : s_(state) {}

  const State &state() const { return s_; }

  uint64_t next() {
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

  // Uniform in [0, bound), bound >= 1 (Lemire 2019, "Fast random integer
  // generation in an interval"): the rejection step removes the bias of a
  // plain multiply-shift.
  uint64_t below(uint64_t bound) {
    unsigned __int128 m = static_cast<unsigned __int128>(next()) * bound;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < bound) {
      const uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        m = static_cast<unsigned __int128>(next()) * bound;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }

private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  State s_;
};

// The order of `n` windows in epoch `epoch`: out = a uniformly random
// permutation of 0..n-1 determined by (seed, epoch) alone.
template <typename Index>
void epoch_permutation(uint64_t seed, uint64_t epoch, uint64_t n, std::vector<Index> &out) {
  out.resize(n);
  for (uint64_t i = 0; i < n; ++i)
    out[i] = static_cast<Index>(i);
  Xoshiro256 rng(seed, epoch);
  for (uint64_t i = n; i > 1; --i) {
    const uint64_t j = rng.below(i);
    const Index tmp = out[i - 1];
    out[i - 1] = out[j];
    out[j] = tmp;
  }
}

} // namespace llamart::data
