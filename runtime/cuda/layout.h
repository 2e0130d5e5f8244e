// The device memory a generated GPU binary holds, computed by one function
// per session kind for both sides: the runtime allocates by it
// (runtime/cuda/session.cu, generator.cu) and `llama-compile --report
// --target cuda` prints it (compiler/Driver.cpp), so the two cannot drift.
// Plain C++: the compiler includes it without CUDA.
#pragma once

#include <algorithm>
#include <cstdint>

namespace llamart::cuda {

/// The device generator's allocations (generator.cu), in bytes: the
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

/// What the training session's layout depends on, all known to the compiler.
struct SessionSizes {
  int64_t param_numel = 0; // this rank's flat parameters
  int64_t dp = 1;          // the data-parallel ranks (ZeRO-1 shards)
  int64_t num_params = 0;  // tensors in the flat buffer
  int64_t buckets = 1;     // ZeRO-1 gradient buckets (1: the whole buffer)
  int act_bytes = 4;       // storage type: 2 bf16, 4 fp32
  int64_t train_arena = 0, eval_arena = 0, workspace = 0;
  int64_t tokens = 0;       // batch x seq_len of one micro-batch
  int64_t gemm_max_dim = 0; // the ABFT rows
  int64_t collective_staging = 0;
};

/// The training session's device memory: one block of 256-byte aligned
/// regions (byte offsets; -1 where a region is absent), the collectives'
/// staging beside it. The AdamW and gradient-norm chunk tables are sized for
/// the most chunks any rank's shard can have (chunks of kSessionChunk
/// elements that never straddle a tensor or a bucket's piece).
struct SessionLayout {
  static constexpr int64_t kSessionChunk = 8192;  // elements per chunk
  static constexpr int64_t kChunkEntryBytes = 32; // one table entry
  static constexpr int64_t kGuardBytes = 4096;    // past the arena, for memcheck
  int64_t padded_numel = 0, shard_numel = 0;
  bool sharded_masters = false; // bf16 on a dp grid: fp32 masters of the shard
  int64_t arena_bytes = 0;      // usable (the guard follows)
  int64_t chunk_capacity = 0, abft_capacity = 0;
  int64_t params = -1, copy = -1, grads = -1, grad_shard = -1, m = -1, v = -1, arena = -1,
          workspace = -1, tokens = -1, targets = -1, loss = -1, chunks = -1, norm_chunks = -1,
          partial = -1, abft_r = -1, abft_w = -1, abft_wa = -1, abft_t = -1, abft_tabs = -1,
          abft_failures = -1;
  int64_t block_bytes = 0;
  // By use, as the session describes itself (block padding not included).
  int64_t params_bytes = 0, grads_bytes = 0, optimizer_bytes = 0, arena_block_bytes = 0,
          work_bytes = 0;
  int64_t staging_bytes = 0;
  /// The state alone: weights, gradients, AdamW moments.
  int64_t state_bytes() const { return params_bytes + grads_bytes + optimizer_bytes; }
  /// Everything the session allocates but cuBLASLt's workspace.
  int64_t total() const { return block_bytes + staging_bytes; }
};

inline SessionLayout session_layout(const SessionSizes &s) {
  SessionLayout l;
  l.padded_numel = (s.param_numel + s.dp - 1) / s.dp * s.dp;
  l.shard_numel = l.padded_numel / s.dp;
  l.sharded_masters = s.act_bytes == 2 && s.dp > 1;
  l.arena_bytes = std::max<int64_t>(64, std::max(s.train_arena, s.eval_arena));
  // Per bucket's piece, a chunk starts at each tensor that begins in it and
  // every kSessionChunk elements after: at most piece / chunk + tensors + 1.
  l.chunk_capacity = l.shard_numel / SessionLayout::kSessionChunk +
                     (s.num_params + 1) * std::max<int64_t>(s.buckets, 1) + 1;
  l.abft_capacity = std::max<int64_t>(s.gemm_max_dim, 1);
  int64_t at = 0;
  auto place = [&](int64_t &offset, int64_t bytes, int64_t &account) {
    at = (at + 255) / 256 * 256;
    offset = at;
    at += bytes;
    account += bytes;
  };
  const int64_t pbytes = l.padded_numel * 4, sbytes = l.shard_numel * 4;
  place(l.params, l.sharded_masters ? sbytes : pbytes, l.params_bytes);
  if (s.act_bytes != 4)
    place(l.copy, l.padded_numel * s.act_bytes, l.params_bytes);
  place(l.grads, pbytes, l.grads_bytes);
  if (s.dp > 1) // the gradient summed over dp, this rank's shard
    place(l.grad_shard, sbytes, l.grads_bytes);
  place(l.m, sbytes, l.optimizer_bytes);
  place(l.v, sbytes, l.optimizer_bytes);
  place(l.arena, l.arena_bytes + SessionLayout::kGuardBytes, l.arena_block_bytes);
  place(l.workspace, std::max<int64_t>(s.workspace, 64), l.work_bytes);
  place(l.tokens, s.tokens * 4, l.work_bytes);
  place(l.targets, s.tokens * 4, l.work_bytes);
  place(l.loss, 4, l.work_bytes);
  place(l.chunks, l.chunk_capacity * SessionLayout::kChunkEntryBytes, l.work_bytes);
  place(l.norm_chunks, l.chunk_capacity * SessionLayout::kChunkEntryBytes, l.work_bytes);
  place(l.partial, (l.chunk_capacity + 1) * 8, l.work_bytes);
  const int64_t row = l.abft_capacity * 8; // fp64 ABFT rows
  place(l.abft_r, row, l.work_bytes);
  place(l.abft_w, row, l.work_bytes);
  place(l.abft_wa, row, l.work_bytes);
  place(l.abft_t, row, l.work_bytes);
  place(l.abft_tabs, row, l.work_bytes);
  place(l.abft_failures, 4, l.work_bytes);
  l.block_bytes = at;
  l.staging_bytes = s.collective_staging;
  return l;
}

} // namespace llamart::cuda
