// FNV-1a 64: the one checksum of the runtime (token shards, checkpoint
// files, state.json) and the seed-label hash of train/rng.h. Not a
// cryptographic hash: it detects accidental corruption, which is its job.
#pragma once
#include <cstddef>
#include <cstdint>

namespace llamart {

inline constexpr uint64_t kFnv1aOffset = 0xcbf29ce484222325ull;
inline constexpr uint64_t kFnv1aPrime = 0x100000001b3ull;

// Continues hash `h` over n bytes (start with kFnv1aOffset).
inline uint64_t fnv1a64(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = static_cast<const unsigned char *>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= kFnv1aPrime;
  }
  return h;
}

inline uint64_t fnv1a64(const void *data, size_t n) {
  return fnv1a64(kFnv1aOffset, data, n);
}

} // namespace llamart
