// The device memory a generated GPU binary holds, computed by one function
// per session kind for both sides: the runtime allocates by it
// (runtime/cuda/generator.inl) and `llama-compile --report --target cuda`
// prints it (compiler/Driver.cpp), so the two cannot drift. Plain C++: the
// compiler includes it without CUDA.
#pragma once

#include <algorithm>
#include <cstdint>

namespace llamart::cuda {

/// The device generator's allocations (generator.inl), in bytes: the
/// weights and the KV cache in the storage type, one arena for the larger
/// of @prefill's and @decode's plans, the kernels' workspace, a chunk of
/// tokens, the position word, a chunk of fp32 logits.
struct GeneratorLayout {
  int64_t weights = 0, kv_cache = 0, arena = 0, workspace = 0, tokens = 0, position = 0,
          logits = 0;
  int64_t total() const {
    return weights + kv_cache + arena + workspace + tokens + position + logits;
  }
};

/// `act_bytes`: 2 for bf16 storage, 4 for fp32; `rows` sequences (gen_batch)
/// of `chunk` tokens (the prefill chunk) over `vocab` logits.
inline GeneratorLayout generator_layout(int64_t param_numel, int act_bytes,
                                        int64_t kv_cache_elements, int64_t prefill_arena_bytes,
                                        int64_t decode_arena_bytes, int64_t workspace_bytes,
                                        int64_t rows, int64_t chunk, int64_t vocab) {
  GeneratorLayout l;
  l.weights = param_numel * act_bytes;
  l.kv_cache = kv_cache_elements * act_bytes;
  l.arena = std::max<int64_t>(64, std::max(prefill_arena_bytes, decode_arena_bytes));
  l.workspace = std::max<int64_t>(64, workspace_bytes);
  l.tokens = rows * chunk * 4;
  l.position = 4;
  l.logits = rows * chunk * vocab * 4;
  return l;
}

} // namespace llamart::cuda
