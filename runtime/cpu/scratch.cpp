// Per-thread grow-only scratch blocks (scratch.h).
#include "runtime/cpu/scratch.h"

#include <cstdlib>
#include <memory>
#include <new>

namespace llamart::cpu {
namespace {

struct AlignedFree {
  void operator()(void *p) const { std::free(p); }
};

struct Block {
  std::unique_ptr<void, AlignedFree> data;
  std::size_t bytes = 0;
};

} // namespace

void *thread_scratch(std::size_t bytes) {
  thread_local Block block;
  if (bytes > block.bytes) {
    // Grow geometrically so a sequence of slightly larger requests does not
    // reallocate every time.
    std::size_t want = block.bytes * 2 > bytes ? block.bytes * 2 : bytes;
    want = ScratchLayout::round_up(want);
    void *p = std::aligned_alloc(ScratchLayout::kAlign, want);
    if (p == nullptr)
      throw std::bad_alloc();
    block.data.reset(p);
    block.bytes = want;
  }
  return block.data.get();
}

} // namespace llamart::cpu
