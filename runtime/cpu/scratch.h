// Per-thread scratch memory for kernels that need a tile or a row of
// temporaries (attention tiles, per-thread partial sums, RoPE tables).
//
// Each thread owns one 64-byte-aligned block that only grows, so after the
// first step of a training run no kernel touches the heap. A kernel carves
// its buffers out of the block once per task, outside any inner loop.
#pragma once
#include <cstddef>

namespace llamart::cpu {

// The calling thread's scratch block, at least `bytes` long. The pointer stays
// valid until the same thread asks for a larger block; contents are undefined.
void *thread_scratch(std::size_t bytes);

// Lays out several arrays in one scratch block: size with count(), then carve
// them in the same order from the block.
class ScratchLayout {
public:
  static constexpr std::size_t kAlign = 64;

  template <typename U> void count(std::size_t n) {
    bytes_ += round_up(n * sizeof(U));
  }
  std::size_t bytes() const { return bytes_; }

  static std::size_t round_up(std::size_t bytes) {
    return (bytes + kAlign - 1) / kAlign * kAlign;
  }

private:
  std::size_t bytes_ = 0;
};

class ScratchCarver {
public:
  explicit ScratchCarver(void *base) : next_(static_cast<char *>(base)) {}
  template <typename U> U *take(std::size_t n) {
    U *p = reinterpret_cast<U *>(next_);
    next_ += ScratchLayout::round_up(n * sizeof(U));
    return p;
  }

private:
  char *next_;
};

} // namespace llamart::cpu
