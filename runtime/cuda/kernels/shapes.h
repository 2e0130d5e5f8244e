// Launch shapes and workspace sizes of the kernel families in this folder,
// as plain C++17 (no CUDA): the kernels (*.cuh) launch with them and the
// compiler (compiler/EmitCuda.cpp) sizes the workspace and reports the
// device memory with the same functions, so the two cannot drift.
#pragma once

#include <cstdint>

// Callable from kernels too when nvcc compiles this.
#if defined(__CUDACC__)
#define LLK_HOST_DEVICE __host__ __device__
#else
#define LLK_HOST_DEVICE
#endif

namespace llk {

LLK_HOST_DEVICE constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
LLK_HOST_DEVICE constexpr int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }
LLK_HOST_DEVICE constexpr int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

/// Elements per 16-byte access of a type of `bytes` bytes (8 bf16, 4 fp32).
LLK_HOST_DEVICE constexpr int pack_of(int bytes) { return 16 / bytes; }
/// The pack a row of `d` elements uses: the full one when d is a multiple of
/// it (every row then starts 16-byte aligned), else single elements.
LLK_HOST_DEVICE constexpr int pack_for(int bytes, int64_t d) {
  return d % pack_of(bytes) == 0 ? pack_of(bytes) : 1;
}

/// Row kernels keep a row in registers, at most kMaxPacks packs per thread
/// (32 bf16 or 16 fp32 values): enough to hide latency with four 16-byte
/// loads in flight per thread, few enough to stay far from spilling.
constexpr int kMaxPacks = 4;
/// Threads per row of `packs` packs: a multiple of 32, at most 1024, each
/// holding at most kMaxPacks packs (so rows up to 4096 packs, 32k bf16, fit;
/// longer rows loop over register tiles).
LLK_HOST_DEVICE constexpr int row_threads(int64_t packs, int max_packs = kMaxPacks) {
  int64_t t = 32;
  while (t < 1024 && t * max_packs < packs)
    t *= 2;
  return int(t);
}
/// The norm backward holds three packs of the row per pack slot (dy, x and
/// the gain, in the storage type) plus the weight gradient's fp32 partials:
/// at most two slots per thread keep it under ~100 registers (four reached
/// 165 at width 4096 and spilled at fp32 width 384).
constexpr int kNormGradMaxPacks = 2;
/// Rows of one warp are batched four to a block (128 threads): a block of a
/// single warp would cap an SM at 32 resident warps.
LLK_HOST_DEVICE constexpr int rows_per_block(int threads) { return threads == 32 ? 4 : 1; }

/// Elementwise kernels: 256 threads, one 16-byte pack each.
constexpr int kElementwiseThreads = 256;

/// The RMSNorm backward reduces the weight gradient in two steps: each
/// block (a chunk of rows) keeps per-column partial sums in registers and
/// writes them once; a second kernel adds the partials in chunk order. At
/// most this many chunks (two per SM on an H100 is 264: enough blocks to
/// fill the machine, few enough that the partials are small).
constexpr int64_t kNormGradChunks = 256;
LLK_HOST_DEVICE constexpr int64_t norm_grad_chunks(int64_t rows) { return min_i64(rows, kNormGradChunks); }
/// fp32 partials, one row of `dim` per row group of every chunk.
LLK_HOST_DEVICE constexpr int64_t norm_grad_workspace_bytes(int elem_bytes, int64_t rows, int64_t dim) {
  return norm_grad_chunks(rows) *
         rows_per_block(row_threads(dim / pack_for(elem_bytes, dim), kNormGradMaxPacks)) * dim *
         4;
}

/// cross_entropy.cuh: a 16-byte header {scored rows, bad targets} and one
/// fp32 loss term per row.
LLK_HOST_DEVICE constexpr int64_t cross_entropy_workspace_bytes(int64_t rows) {
  return 16 + 4 * rows;
}

/// embedding.cuh's backward: two buffers of `tokens` sorted (id, position)
/// elements (8 bytes each) and one run start per table row.
LLK_HOST_DEVICE constexpr int64_t embedding_backward_workspace_bytes(int64_t tokens,
                                                                     int64_t rows) {
  return 16 * tokens + 4 * rows;
}

/// attention.cuh's backward: D_i = dO_i . O_i per (batch, head, query row).
LLK_HOST_DEVICE constexpr int64_t attention_backward_workspace_bytes(int64_t batch,
                                                                     int64_t heads,
                                                                     int64_t seq) {
  return batch * heads * seq * 4;
}

/// flash_attention.cuh's tile rule (bf16, sm_80 / sm_90), one place for the
/// kernels and the compiler (which reports the shared memory): warps per
/// block (16 query rows each), key rows per tile, and the dynamic shared
/// memory: Q tile + 2 buffers x (K + V), rows padded by 8 elements.
///   HD <= 64:  8 warps (128 query rows), 128 keys
///   HD <= 128: 8 warps (128 query rows), 64 keys
///   HD <= 256: 4 warps (64 query rows),  64 keys, Q read from shared memory
LLK_HOST_DEVICE constexpr bool flash_attention_supports(int64_t head_dim) {
  return head_dim % 16 == 0 && head_dim >= 16 && head_dim <= 256;
}
LLK_HOST_DEVICE constexpr int flash_warps(int64_t head_dim) { return head_dim <= 128 ? 8 : 4; }
LLK_HOST_DEVICE constexpr int flash_query_rows(int64_t head_dim) {
  return 16 * flash_warps(head_dim);
}
LLK_HOST_DEVICE constexpr int flash_key_rows(int64_t head_dim) { return head_dim <= 64 ? 128 : 64; }
LLK_HOST_DEVICE constexpr int64_t flash_smem_bytes(int64_t head_dim) {
  return 2 * (head_dim + 8) * (flash_query_rows(head_dim) + 4 * flash_key_rows(head_dim));
}

/// flash_attention_sm90.cuh's forward (sm_90a: TMA, wgmma, warp
/// specialization): head dims 64 and 128, a producer warpgroup and 2 consumer
/// warpgroups (128 query rows), 128 keys a tile, unpadded 128-byte swizzled
/// tiles: Q + 2 stages x (K + V), then 128 bytes of mbarriers.
LLK_HOST_DEVICE constexpr bool flash_sm90_supports(int64_t head_dim) {
  return head_dim == 64 || head_dim == 128;
}
LLK_HOST_DEVICE constexpr int flash_sm90_query_rows(int64_t) { return 128; }
LLK_HOST_DEVICE constexpr int flash_sm90_key_rows(int64_t) { return 128; }
LLK_HOST_DEVICE constexpr int flash_sm90_threads(int64_t) { return 384; }
LLK_HOST_DEVICE constexpr int64_t flash_sm90_smem_bytes(int64_t head_dim) {
  return 2 * head_dim * (flash_sm90_query_rows(head_dim) + 4 * flash_sm90_key_rows(head_dim)) +
         128;
}
/// Its backward's dQ kernel (the same head dims and warpgroups): 128 query
/// rows a block, 64 keys a tile; Q + dO, 2 stages x (K + V), 64 bytes of
/// mbarriers.
LLK_HOST_DEVICE constexpr int flash_sm90_dq_rows(int64_t) { return 128; }
LLK_HOST_DEVICE constexpr int flash_sm90_dq_keys(int64_t) { return 64; }
LLK_HOST_DEVICE constexpr int64_t flash_sm90_dq_smem_bytes(int64_t head_dim) {
  return 2 * head_dim * (2 * flash_sm90_dq_rows(head_dim) + 4 * flash_sm90_dq_keys(head_dim)) + 64;
}
/// Its backward's dK/dV kernel (the same head dims and warpgroups): 128 keys
/// a block, 64 query rows a step; K and V, 2 stages x (Q + dO), 2 stages x
/// 64 x (lse, D) floats, 64 bytes of mbarriers.
LLK_HOST_DEVICE constexpr int flash_sm90_bwd_keys(int64_t) { return 128; }
LLK_HOST_DEVICE constexpr int flash_sm90_bwd_query_rows(int64_t) { return 64; }
LLK_HOST_DEVICE constexpr int64_t flash_sm90_bwd_smem_bytes(int64_t head_dim) {
  return 2 * head_dim * (2 * flash_sm90_bwd_keys(head_dim) + 4 * flash_sm90_bwd_query_rows(head_dim)) +
         2 * 2 * 4 * flash_sm90_bwd_query_rows(head_dim) + 64;
}

/// flash_attention.cuh's backward (4 warps): dQ blocks of 64 query rows over
/// 64-key tiles; dK/dV blocks of 64 keys over query tiles of 64 rows (HD <=
/// 64) or 32 (HD <= 128), Q, dO, lse and D double-buffered.
LLK_HOST_DEVICE constexpr bool flash_attention_backward_supports(int64_t head_dim) {
  return head_dim % 16 == 0 && head_dim >= 16 && head_dim <= 128;
}
LLK_HOST_DEVICE constexpr int flash_bwd_query_rows(int64_t head_dim) {
  return head_dim <= 64 ? 64 : 32;
}
/// Q, dO (64 rows each) + 2 buffers x (K + V) (64 rows each).
LLK_HOST_DEVICE constexpr int64_t flash_bwd_dq_smem_bytes(int64_t head_dim) {
  return 2 * (head_dim + 8) * (2 * 64 + 4 * 64);
}
/// K, V (64 rows each) + 2 buffers x (Q + dO) + 2 buffers x (lse + D).
LLK_HOST_DEVICE constexpr int64_t flash_bwd_dkv_smem_bytes(int64_t head_dim) {
  return 2 * (head_dim + 8) * (2 * 64 + 4 * flash_bwd_query_rows(head_dim)) +
         16 * flash_bwd_query_rows(head_dim);
}

/// attention_cached.cuh: splits of the key range per (batch, query row, KV
/// head, head chunk) block (flash-decoding); `rows` counts those blocks. A
/// decode step at batch 1 has as few as KV heads (4 to 8): without splits a handful of SMs would read the whole
/// cache. Enough splits for ~2 blocks per SM of an H100 (132 SMs), none
/// shorter than kDecodeMinSplitKeys keys of the capacity, at most
/// kDecodeMaxSplits.
constexpr int64_t kDecodeTargetBlocks = 264;
constexpr int64_t kDecodeMinSplitKeys = 256;
constexpr int64_t kDecodeMaxSplits = 32;
LLK_HOST_DEVICE constexpr int64_t attention_cached_splits(int64_t rows, int64_t capacity) {
  return max_i64(1, min_i64(min_i64(ceil_div(kDecodeTargetBlocks, rows),
                                    capacity / kDecodeMinSplitKeys),
                            kDecodeMaxSplits));
}
/// Query heads of a GQA group per block: the largest divisor of the group
/// whose q and weighted-V state (heads x pack fp32 each) stays within 32
/// floats (4 bf16 heads of packs of 8, 8 fp32 heads of 4).
LLK_HOST_DEVICE constexpr int64_t attention_cached_heads_per_block(int64_t group, int64_t pack) {
  int64_t best = 1;
  for (int64_t h = 1; h <= group; ++h)
    if (group % h == 0 && h * pack <= 32)
      best = h;
  return best;
}
/// Its workspace: with several splits, each split's normalized output (fp32,
/// `group` heads of `head_dim`) and log-sum-exp per row.
LLK_HOST_DEVICE constexpr int64_t attention_cached_workspace_bytes(int64_t rows, int64_t group,
                                                                   int64_t head_dim,
                                                                   int64_t splits) {
  return splits > 1 ? 4 * splits * rows * group * (head_dim + 1) : 0;
}

} // namespace llk
