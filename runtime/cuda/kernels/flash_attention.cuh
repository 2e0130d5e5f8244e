// Causal grouped-query attention for training on tensor cores, bf16
// storage: the FlashAttention-2 forward and backward (Dao 2023),
// specialized per head dim at compile time. attention.cuh keeps the
// CUDA-core kernels for fp32 storage and for head dims that are not a
// multiple of 16 (or, backward, above 128); EmitCuda picks.
//
//   q [batch, seq, heads, HD], k and v [batch, seq, kv_heads, HD] (bf16),
//   query head h reads KV head h / (heads / kv_heads): the heads of a group
//   read the same K/V rows (from L2), never an expanded copy.
//   o_i = sum_{j <= i} softmax_j(scale q_i . k_j) v_j; lse_i (fp32, natural
//   log) is saved for the backward.
//
// Forward. A block per (query tile of kBr rows, head, batch), kWarps warps,
// warp w owning rows 16w .. 16w + 15 of the tile. The tiles run longest
// first (the last query tile has the most keys). The block loads its Q tile
// and key tile 0 with cp.async, then for each key tile j (kBc keys, only
// those at or below the diagonal):
//   - issues the cp.async of tile j + 1 into the other of two K/V buffers
//     (double buffering: the copy runs under this tile's math), waits for
//     tile j, barrier;
//   - S = Q K^T on mma.sync m16n8k16 (bf16 in, fp32 accumulate): Q's A
//     fragments stay in registers for the whole loop (HD <= 128; read from
//     shared memory per tile above that), K's B fragments come from
//     ldmatrix.x4 (K rows are B's columns);
//   - masks keys past the row (only tiles that cross the warp's diagonal),
//     and runs the online softmax in registers: the row max over the 4
//     lanes of a quad (2 shuffles), p = exp2(s * scale * log2 e - m), the
//     accumulator rescaled by exp2(m_old - m);
//   - O += P V: the S accumulators are already P's A fragments (converted to
//     bf16 in registers), V's B fragments come from ldmatrix.x4.trans;
//   - barrier (the buffer is refilled at j + 2).
// Warps whose 16 rows all lie above a tile skip its math (causal: up to
// half the work of the diagonal tile). The epilogue divides by the row sum,
// stages the bf16 rows through the warp's own part of the Q buffer and
// writes them with 16-byte stores; lse = (m + log2 l) ln 2.
//
// Shared memory rows are padded by 16 bytes (kStride = HD + 8 elements): a
// row then starts (HD / 8 + 1) 16-byte units after the last, an odd count
// for any HD multiple of 16, so the 8 rows of an ldmatrix matrix fall in 8
// distinct groups of 4 banks (no conflict), and so do the epilogue's 4-byte
// stores of 8 rows x 4 lanes. The emulator's bank counters hold this
// (test/integration/cuda_emulation.py).
//
// Tile rule (shapes.h: flash_warps, flash_key_rows, flash_smem_bytes; the
// compiler reads it too), for sm_80 / sm_90:
//   HD <= 64:  kBr 128 (8 warps), kBc 128
//   HD <= 128: kBr 128 (8 warps), kBc 64
//   HD <= 256: kBr 64 (4 warps),  kBc 64, Q from shared memory (its
//              fragments would not fit in registers beside S and O)
// The tile product kBr x kBc stays at 8192-16384 scores a block, the
// register file holds S (kBc / 2), O (HD / 2) and Q (HD / 4) per thread,
// and shared memory (Q + 2 x (K + V), padded) is 90 KiB at HD 64, 102 KiB at
// 128, 165 KiB at 256 (opt-in above 48 KiB): one block per SM. ptxas
// (sm_90a): 223, 225 and 244 registers, no spills, no stack frame; the
// backward kernels 160-250 (docs/perf/kernel-audit.md).
//
// Backward, deterministic (no atomics: the runtime's results are bitwise
// reproducible, resume included). Three kernels:
//   1. D_i = dO_i . O_i per (row, head), 16-byte loads, into the workspace;
//   2. dQ: a block per (query tile of 64 rows, head, batch), the forward's
//      loop over key tiles (K/V double-buffered): S = Q K^T and
//      dP = dO V^T (Q and dO rows stay in shared memory), P = exp2(S scale
//      log2 e - lse log2 e) from the saved lse, dS = P (dP - D),
//      dQ += dS K (K through ldmatrix.trans), dQ scaled once at the end;
//   3. dK, dV: a block per (key tile of 64 rows, KV head, batch), warp w
//      owning keys 16w .. 16w + 15; it loops over every query head of the
//      GQA group and every query tile at or below the diagonal (Q, dO, lse
//      and D double-buffered), computing the transposed products
//      S^T = K Q^T, dP^T = V dO^T, then dV += P^T dO and dK += dS^T Q:
//      the group's sum is in registers, in a fixed order.
// FlashAttention-2 computes dQ with fp32 atomics in the dK/dV loop (5
// GEMMs of the tile, not 7 here); that order depends on timing. The price
// of determinism is the second QK^T and dO V^T: the device run says what
// it costs (tools/gpu-check).
// Backward tiles (shapes.h: flash_bwd_*): 4 warps; dQ: 64 query rows x 64
// keys; dK/dV: 64 keys x 64 query rows (HD <= 64) or 32 (HD <= 128: dK and
// dV accumulators are HD / 2 registers each). Head dims above 128 keep the
// CUDA-core backward (their two accumulators alone would fill the file).
#pragma once

#include "runtime/cuda/kernels/mma.cuh"

namespace llk {

template <int HD> struct FlashTiles {
  static_assert(flash_attention_supports(HD),
                "the tensor-core attention takes head dims that are multiples of 16, "
                "up to 256");
  static constexpr int kWarps = flash_warps(HD);
  static constexpr int kBr = flash_query_rows(HD);
  static constexpr int kBc = flash_key_rows(HD);
  static constexpr bool kQInRegisters = HD <= 128;
  static constexpr int kStride = HD + 8; // elements per shared row (padded)
  static constexpr size_t kSmemBytes = size_t(flash_smem_bytes(HD));
  static_assert(kSmemBytes == size_t(2) * kStride * (kBr + 4 * kBc));
};

namespace flash {

using bf16 = __nv_bfloat16;

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kNegInf = -__builtin_huge_valf();

/// cp.async of rows [r0, r0 + R) of a [seq, row_stride] matrix (HD
/// elements each) into `dst` (HD + 8 per row): 16-byte chunks over the
/// block's kThreads threads, consecutive threads on consecutive chunks of a
/// row (whole 32-byte sectors); rows at or past `seq` become zeros.
template <int HD, int R, int kThreads>
__device__ __forceinline__ void load_rows(bf16 *dst, const bf16 *src, int64_t row_stride,
                                          int64_t r0, int64_t seq) {
  constexpr int kChunks = HD / 8;
  for (int c = int(threadIdx.x); c < R * kChunks; c += kThreads) {
    const int r = c / kChunks, ch = c % kChunks;
    const bool valid = r0 + r < seq;
    cp_async16(dst + r * (HD + 8) + ch * 8, src + (valid ? r0 + r : 0) * row_stride + ch * 8,
               valid);
  }
}

/// The A fragments (16 rows x 16 columns at column 16 kk) of 16 rows at
/// `a` (stride S): lanes 0-15 address rows 0-15, lanes 16-31 the same rows
/// 8 columns on.
template <int S>
__device__ __forceinline__ const bf16 *a_rows(const bf16 *a, int lane) {
  return a + (lane % 16) * S + (lane / 16) * 8;
}

/// c[16 x N] += A[16 x K] B^T for the warp: B's N rows of K at `b` (stride
/// S) in shared memory, two 8-row n-tiles per ldmatrix.x4 (lanes 0-7: rows
/// 0-7 columns 0-7, 8-15: rows 0-7 columns 8-15, 16-31 rows 8-15 likewise).
/// `a_frag(kk, a)` gives the A fragments of k-step kk.
template <int N, int K, int S, typename AFrag>
__device__ __forceinline__ void mma_abt(float (&c)[N / 8][4], AFrag a_frag, const bf16 *b,
                                        int lane) {
  static_assert(N % 16 == 0 && K % 16 == 0, "whole 16 x 16 steps");
  const bf16 *const b_row = b + ((lane / 16) * 8 + lane % 8) * S + ((lane / 8) % 2) * 8;
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    uint32_t a[4];
    a_frag(kk, a);
#pragma unroll
    for (int np = 0; np < N / 16; ++np) {
      uint32_t bf[4];
      ldmatrix<4>(bf, b_row + 16 * np * S + 16 * kk);
      const uint32_t b0[2] = {bf[0], bf[1]}, b1[2] = {bf[2], bf[3]};
      mma_bf16_16816(c[2 * np], a, b0, c[2 * np]);
      mma_bf16_16816(c[2 * np + 1], a, b1, c[2 * np + 1]);
    }
  }
}

/// The same with A's 16 rows at `a` (stride S) in shared memory.
template <int N, int K, int S>
__device__ __forceinline__ void mma_abt_shared(float (&c)[N / 8][4], const bf16 *a, const bf16 *b,
                                               int lane) {
  const bf16 *const a_row = a_rows<S>(a, lane);
  mma_abt<N, K, S>(
      c, [&](int kk, uint32_t(&f)[4]) { ldmatrix<4>(f, a_row + 16 * kk); }, b, lane);
}

/// c[16 x N] += P[16 x K] B for the warp: P as fp32 accumulator fragments
/// (K / 8 n-tiles of a previous mma: their C layout is the A layout of the
/// k-steps, rounded to bf16 here), B's K rows of N at `b` (stride S) in
/// shared memory through ldmatrix.x4.trans (lanes 0-7: rows 0-7, 8-15: rows
/// 8-15, at columns 0-7; 16-31 the same at columns 8-15).
template <int N, int K, int S>
__device__ __forceinline__ void mma_pb(float (&c)[N / 8][4], const float (&p)[K / 8][4],
                                       const bf16 *b, int lane) {
  static_assert(N % 16 == 0 && K % 16 == 0, "whole 16 x 16 steps");
  const bf16 *const b_row = b + (lane % 16) * S + (lane / 16) * 8;
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    const uint32_t pa[4] = {pack_bf16x2(p[2 * kk][0], p[2 * kk][1]),
                            pack_bf16x2(p[2 * kk][2], p[2 * kk][3]),
                            pack_bf16x2(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                            pack_bf16x2(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int dp = 0; dp < N / 16; ++dp) {
      uint32_t bf[4];
      ldmatrix_t<4>(bf, b_row + 16 * kk * S + 16 * dp);
      const uint32_t b0[2] = {bf[0], bf[1]}, b1[2] = {bf[2], bf[3]};
      mma_bf16_16816(c[2 * dp], pa, b0, c[2 * dp]);
      mma_bf16_16816(c[2 * dp + 1], pa, b1, c[2 * dp + 1]);
    }
  }
}

template <int N> __device__ __forceinline__ void zero(float (&c)[N][4]) {
#pragma unroll
  for (int n = 0; n < N; ++n)
    c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.0f;
}

/// Writes the warp's 16 x HD accumulator as bf16 rows, row g times
/// scale[0] and row g + 8 times scale[1]: staged in `stage` (16 rows of
/// stride HD + 8, the warp's own: no other warp touches them), then 16-byte
/// stores of the first `valid` rows to dst + r * row_stride.
template <int HD>
__device__ __forceinline__ void store_rows(const float (&acc)[HD / 8][4], const float (&scale)[2],
                                           bf16 *stage, bf16 *dst, int64_t row_stride,
                                           int64_t valid, int lane) {
  constexpr int S = HD + 8, kChunks = HD / 8;
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) {
    shared_st(*reinterpret_cast<uint32_t *>(stage + g * S + 8 * d + 2 * t),
              pack_bf16x2(acc[d][0] * scale[0], acc[d][1] * scale[0]));
    shared_st(*reinterpret_cast<uint32_t *>(stage + (g + 8) * S + 8 * d + 2 * t),
              pack_bf16x2(acc[d][2] * scale[1], acc[d][3] * scale[1]));
  }
  __syncwarp();
  for (int c = lane; c < 16 * kChunks; c += 32) {
    const int r = c / kChunks, ch = c % kChunks;
    if (r < valid)
      store<8>(dst + r * row_stride + 8 * ch,
               shared_ld(*reinterpret_cast<const Pack<bf16, 8> *>(stage + r * S + 8 * ch)));
  }
}

/// Where a block's query tile of Br rows (longest rows first) and this
/// lane's rows are, for the forward and the dQ kernel (a block per
/// (query tile, head, batch); Bc keys a tile).
struct QueryTile {
  int64_t q0, h, b, q_off, kv_off, warp_row, rows[2], key_tiles;
};
template <int HD, int Br, int Bc>
__device__ __forceinline__ QueryTile query_tile(int64_t seq, int64_t heads, int64_t kv_heads,
                                                int warp, int lane) {
  QueryTile q;
  q.q0 = (ceil_div(seq, int64_t(Br)) - 1 - int64_t(blockIdx.x)) * Br;
  q.h = blockIdx.y;
  q.b = blockIdx.z;
  const int64_t kvh = q.h / (heads / kv_heads);
  q.q_off = (q.b * seq * heads + q.h) * HD;
  q.kv_off = (q.b * seq * kv_heads + kvh) * HD;
  q.warp_row = q.q0 + 16 * warp; // the warp's first row
  q.rows[0] = q.warp_row + lane / 4;
  q.rows[1] = q.rows[0] + 8;
  q.key_tiles = (min_i64(q.q0 + Br, seq) - 1) / Bc + 1; // up to the diagonal
  return q;
}

/// The double-buffered K/V pipeline of the forward and the dQ kernel, at the
/// top of key tile j: issues tile j + 1 into the other buffer, waits for
/// tile j (and what was committed with it), barrier.
template <int HD, int Bc, int kThreads>
__device__ __forceinline__ void next_kv_tile(bf16 *sk, bf16 *sv, int buf, const bf16 *k,
                                             const bf16 *v, int64_t kv_stride, int64_t j,
                                             int64_t key_tiles, int64_t seq) {
  if (j + 1 < key_tiles) {
    load_rows<HD, Bc, kThreads>(sk + (buf ^ 1) * Bc * (HD + 8), k, kv_stride, (j + 1) * Bc, seq);
    load_rows<HD, Bc, kThreads>(sv + (buf ^ 1) * Bc * (HD + 8), v, kv_stride, (j + 1) * Bc, seq);
    cp_async_commit();
    cp_async_wait<1>(); // tile j landed; j + 1 may still fly
  } else {
    cp_async_wait<0>();
  }
  __syncthreads();
}

/// One key tile of the forward's online softmax for a warp's 16 rows, on flat
/// accumulators in mma.m16n8k16's C layout (wgmma's too): s[i] (NS scores) is
/// key key0 + 8 (i / 4) + 2t + i % 2 of row rows[(i / 2) % 2]. Scales s into
/// the log2 domain, masks keys past the row where the tile crosses the warp's
/// diagonal, moves the row max m (over the quad), rescales l, and leaves
/// p = exp2(s - m) in s with this lane's part of the row sum added to l and,
/// in corr, the factor the rows' outputs must be rescaled by (softmax_tile
/// does it at once; the warp-specialized forward once its P V is done).
template <int NS>
__device__ __forceinline__ void softmax_step(float *s, float (&m)[2], float (&l)[2],
                                             const int64_t *rows, int64_t key0, bool diagonal,
                                             int t, float scale_log2, float (&corr)[2]) {
  float mx[2] = {m[0], m[1]};
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    float x = s[i] * scale_log2;
    if (diagonal && key0 + 8 * (i / 4) + 2 * t + (i & 1) > rows[(i / 2) % 2])
      x = kNegInf;
    s[i] = x;
    mx[(i / 2) % 2] = x > mx[(i / 2) % 2] ? x : mx[(i / 2) % 2];
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    // Row max over the quad; finite from tile 0 on (key 0 is visible to
    // every row), so exp2(-inf - finite) = 0 rescales nothing away, and a
    // row whose keys are all masked in this tile keeps its max.
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    corr[r] = exp2f(m[r] - mx[r]);
    m[r] = mx[r];
    l[r] *= corr[r];
  }
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const float p = exp2f(s[i] - m[(i / 2) % 2]);
    s[i] = p;
    l[(i / 2) % 2] += p; // this lane's part of the row sum (quad-summed at the end)
  }
}

/// Rescales a warp's NO output accumulators (the C layout: acc[i] belongs to
/// row (i / 2) % 2 of the lane's two) by the rows' factors.
template <int NO>
__device__ __forceinline__ void rescale_rows(float *acc, const float (&corr)[2]) {
#pragma unroll
  for (int i = 0; i < NO; ++i)
    acc[i] *= corr[(i / 2) % 2];
}

/// softmax_step, then the rows' NO output accumulators rescaled.
template <int NS, int NO>
__device__ __forceinline__ void softmax_tile(float *s, float *acc, float (&m)[2], float (&l)[2],
                                             const int64_t *rows, int64_t key0, bool diagonal,
                                             int t, float scale_log2) {
  float corr[2];
  softmax_step<NS>(s, m, l, rows, key0, diagonal, t, scale_log2, corr);
  rescale_rows<NO>(acc, corr);
}

/// The forward's epilogue for a warp: the row sums over the quad, its 16
/// rows of O / l as bf16 (staged through `stage`, 16 rows of stride HD + 8
/// no other warp touches), lse = (m + log2 l) ln 2 for its rows below seq.
template <int HD>
__device__ __forceinline__ void finish_forward(const float (&acc)[HD / 8][4], float (&l)[2],
                                               const float (&m)[2], bf16 *stage, bf16 *o,
                                               float *lse, const QueryTile &tile, int64_t seq,
                                               int64_t heads, int lane) {
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    inv[r] = 1.0f / l[r];
  }
  const int64_t q_stride = heads * HD;
  store_rows<HD>(acc, inv, stage, o + tile.q_off + tile.warp_row * q_stride, q_stride,
                 seq - tile.warp_row, lane);
  if (lane % 4 == 0)
#pragma unroll
    for (int r = 0; r < 2; ++r)
      if (tile.rows[r] < seq)
        lse[(tile.b * heads + tile.h) * seq + tile.rows[r]] =
            (m[r] + log2f(l[r])) * 0.69314718055994531f;
}

} // namespace flash

/// Launches a forward kernel over [batch, seq, heads, HD] bf16 q (k, v with
/// kv_heads): a block per (query tile of `rows` rows, head, batch) of
/// `threads` threads with `smem` bytes of dynamic shared memory (the opt-in
/// above 48 KiB made once per kernel); `scale` multiplies q . k.
template <auto Kernel>
void launch_flash_forward(int rows, unsigned threads, size_t smem, const __nv_bfloat16 *q,
                          const __nv_bfloat16 *k, const __nv_bfloat16 *v, __nv_bfloat16 *o,
                          float *lse, int64_t batch, int64_t seq, int64_t heads,
                          int64_t kv_heads, float scale, cudaStream_t stream) {
  allow_dynamic_shared<Kernel>(smem);
  LLAMA_LAUNCH_SMEM(Kernel,
                    dim3(unsigned(ceil_div(seq, int64_t(rows))), unsigned(heads),
                         unsigned(batch)),
                    dim3(threads), smem, stream, q, k, v, o, lse, seq, heads, kv_heads,
                    scale * flash::kLog2e);
}

template <int HD>
__global__ void __launch_bounds__(32 * FlashTiles<HD>::kWarps)
    flash_attention_forward_kernel(const __nv_bfloat16 *__restrict__ q,
                                   const __nv_bfloat16 *__restrict__ k,
                                   const __nv_bfloat16 *__restrict__ v,
                                   __nv_bfloat16 *__restrict__ o, float *__restrict__ lse,
                                   int64_t seq, int64_t heads, int64_t kv_heads,
                                   float scale_log2) {
  using C = FlashTiles<HD>;
  using namespace flash;
  constexpr int S = C::kStride, Br = C::kBr, Bc = C::kBc, kThreads = 32 * C::kWarps;
  LLK_DYNAMIC_SHARED(smem);
  bf16 *const sq = reinterpret_cast<bf16 *>(smem); // Br rows
  bf16 *const sk = sq + Br * S;                     // 2 buffers of Bc rows
  bf16 *const sv = sk + 2 * Bc * S;                 // 2 buffers of Bc rows

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, t = lane % 4;
  const QueryTile tile = query_tile<HD, Br, Bc>(seq, heads, kv_heads, warp, lane);
  const int64_t q_stride = heads * HD, kv_stride = kv_heads * HD; // between positions
  const bf16 *const kb = k + tile.kv_off, *const vb = v + tile.kv_off;
  const int64_t warp_row = tile.warp_row;
  const int64_t *const rows = tile.rows; // this lane's two rows

  load_rows<HD, Br, kThreads>(sq, q + tile.q_off, q_stride, tile.q0, seq);
  load_rows<HD, Bc, kThreads>(sk, kb, kv_stride, 0, seq);
  load_rows<HD, Bc, kThreads>(sv, vb, kv_stride, 0, seq);
  cp_async_commit();

  // This warp's 16 Q rows as A fragments: in registers for the whole loop
  // (HD <= 128), else read from shared memory at each tile.
  const bf16 *const q_row = a_rows<S>(sq + 16 * warp * S, lane);
  uint32_t qf[C::kQInRegisters ? HD / 16 : 1][4];
  float acc[HD / 8][4];
  zero(acc);
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.0f, 0.0f};

  for (int64_t j = 0; j < tile.key_tiles; ++j) {
    const int buf = int(j & 1);
    next_kv_tile<HD, Bc, kThreads>(sk, sv, buf, kb, vb, kv_stride, j, tile.key_tiles, seq);
    if constexpr (C::kQInRegisters)
      if (j == 0) {
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk)
          ldmatrix<4>(qf[kk], q_row + 16 * kk);
      }
    const int64_t key0 = j * Bc;
    if (key0 <= warp_row + 15) { // some key of the tile is visible to a row of the warp
      const bf16 *const ks = sk + buf * Bc * S, *const vs = sv + buf * Bc * S;
      float s[Bc / 8][4];
      zero(s);
      mma_abt<Bc, HD, S>(
          s,
          [&](int kk, uint32_t(&a)[4]) {
            if constexpr (C::kQInRegisters) {
#pragma unroll
              for (int r = 0; r < 4; ++r)
                a[r] = qf[kk][r];
            } else {
              ldmatrix<4>(a, q_row + 16 * kk);
            }
          },
          ks, lane);
      softmax_tile<Bc / 2, HD / 2>(&s[0][0], &acc[0][0], m, l, rows, key0,
                                   key0 + Bc - 1 > warp_row, t, scale_log2);
      mma_pb<HD, Bc, S>(acc, s, vs, lane); // O += P V
    }
    __syncthreads(); // every warp is done with buffer `buf` before it is refilled
  }

  // Epilogue through the warp's own 16 rows of the Q buffer.
  finish_forward<HD>(acc, l, m, sq + 16 * warp * S, o, lse, tile, seq, heads, lane);
}

/// Launches the forward for [batch, seq, heads, HD] bf16 q (k, v with
/// kv_heads); `scale` multiplies q . k.
template <int HD>
void flash_attention_forward(const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                             const __nv_bfloat16 *v, __nv_bfloat16 *o, float *lse,
                             int64_t batch, int64_t seq, int64_t heads, int64_t kv_heads,
                             float scale, cudaStream_t stream) {
  using C = FlashTiles<HD>;
  launch_flash_forward<&flash_attention_forward_kernel<HD>>(
      C::kBr, 32 * C::kWarps, C::kSmemBytes, q, k, v, o, lse, batch, seq, heads, kv_heads,
      scale, stream);
}

// ---- backward ---------------------------------------------------------------

template <int HD> struct FlashBwdTiles {
  static_assert(flash_attention_backward_supports(HD),
                "the tensor-core attention backward takes head dims that are multiples of "
                "16, up to 128");
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kStride = HD + 8;
  static constexpr int kDqRows = 64;                         // dQ: query rows a block
  static constexpr int kDqKeys = 64;                         // dQ: keys a tile
  static constexpr int kKeys = 16 * kWarps;                  // dK/dV: keys a block
  static constexpr int kQueries = flash_bwd_query_rows(HD);  // dK/dV: queries a tile
  static constexpr size_t kDqSmemBytes = size_t(flash_bwd_dq_smem_bytes(HD));
  static constexpr size_t kDkvSmemBytes = size_t(flash_bwd_dkv_smem_bytes(HD));
  static_assert(kDqSmemBytes == size_t(2) * kStride * (2 * kDqRows + 4 * kDqKeys));
  static_assert(kDkvSmemBytes ==
                size_t(2) * kStride * (2 * kKeys + 4 * kQueries) + size_t(16) * kQueries);
};

/// Lanes per row of the D kernel: the row's 16-byte packs rounded up to a
/// power of two (HD <= 128: at most 16).
LLK_HOST_DEVICE constexpr int flash_delta_lanes(int packs) {
  return packs <= 1 ? 1 : 2 * flash_delta_lanes((packs + 1) / 2);
}

/// D = rowsum(dO * O) per (batch, query row, head) into delta[(b * heads +
/// h) * seq + i]: one 16-byte pack per lane (lanes past the row's packs
/// idle), shuffle sum over the row's lanes.
template <int HD>
__global__ void __launch_bounds__(256)
    flash_attention_delta_kernel(const __nv_bfloat16 *__restrict__ dout,
                                 const __nv_bfloat16 *__restrict__ o,
                                 float *__restrict__ delta, int64_t rows, int64_t seq,
                                 int64_t heads) {
  constexpr int kLanes = flash_delta_lanes(HD / 8);
  static_assert(kLanes <= 32, "a row within one warp");
  const int64_t row = (int64_t(blockIdx.x) * 256 + threadIdx.x) / kLanes;
  const int part = int(threadIdx.x) % kLanes;
  float d = 0.0f;
  if (row < rows && part < HD / 8) {
    const Floats<8> x = load_floats<8>(dout + row * HD + 8 * part);
    const Floats<8> y = load_floats<8>(o + row * HD + 8 * part);
#pragma unroll
    for (int e = 0; e < 8; ++e)
      d += x.v[e] * y.v[e];
  }
#pragma unroll
  for (int off = kLanes / 2; off > 0; off >>= 1)
    d += __shfl_xor_sync(0xffffffffu, d, off);
  if (row < rows && part == 0) {
    const int64_t h = row % heads, i = (row / heads) % seq, b = row / (heads * seq);
    delta[(b * heads + h) * seq + i] = d;
  }
}

/// dQ for a (query tile, head, batch): the forward's loop over key tiles.
template <int HD>
__global__ void __launch_bounds__(FlashBwdTiles<HD>::kThreads)
    flash_attention_dq_kernel(const __nv_bfloat16 *__restrict__ dout,
                              const __nv_bfloat16 *__restrict__ q,
                              const __nv_bfloat16 *__restrict__ k,
                              const __nv_bfloat16 *__restrict__ v,
                              const float *__restrict__ lse, const float *__restrict__ delta,
                              __nv_bfloat16 *__restrict__ dq, int64_t seq, int64_t heads,
                              int64_t kv_heads, float scale, float scale_log2) {
  using C = FlashBwdTiles<HD>;
  using namespace flash;
  constexpr int S = C::kStride, Br = C::kDqRows, Bc = C::kDqKeys;
  LLK_DYNAMIC_SHARED(smem);
  bf16 *const sq = reinterpret_cast<bf16 *>(smem); // Br rows
  bf16 *const sdo = sq + Br * S;                    // Br rows
  bf16 *const sk = sdo + Br * S;                    // 2 buffers of Bc rows
  bf16 *const sv = sk + 2 * Bc * S;                 // 2 buffers of Bc rows

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, t = lane % 4;
  const QueryTile tile = query_tile<HD, Br, Bc>(seq, heads, kv_heads, warp, lane);
  const int64_t q_stride = heads * HD, kv_stride = kv_heads * HD;
  const bf16 *const kb = k + tile.kv_off, *const vb = v + tile.kv_off;
  const int64_t warp_row = tile.warp_row;
  const int64_t *const rows = tile.rows;

  load_rows<HD, Br, C::kThreads>(sq, q + tile.q_off, q_stride, tile.q0, seq);
  load_rows<HD, Br, C::kThreads>(sdo, dout + tile.q_off, q_stride, tile.q0, seq);
  load_rows<HD, Bc, C::kThreads>(sk, kb, kv_stride, 0, seq);
  load_rows<HD, Bc, C::kThreads>(sv, vb, kv_stride, 0, seq);
  cp_async_commit();
  // This lane's two rows: lse in the log2 domain and D (rows past seq: 0,
  // their P is masked to 0).
  float lse2[2], dr[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t stat = (tile.b * heads + tile.h) * seq + rows[r];
    lse2[r] = rows[r] < seq ? lse[stat] * kLog2e : 0.0f;
    dr[r] = rows[r] < seq ? delta[stat] : 0.0f;
  }
  float acc[HD / 8][4];
  zero(acc);

  for (int64_t j = 0; j < tile.key_tiles; ++j) {
    const int buf = int(j & 1);
    next_kv_tile<HD, Bc, C::kThreads>(sk, sv, buf, kb, vb, kv_stride, j, tile.key_tiles, seq);
    const int64_t key0 = j * Bc;
    if (key0 <= warp_row + 15) {
      const bf16 *const ks = sk + buf * Bc * S, *const vs = sv + buf * Bc * S;
      float s[Bc / 8][4], dp[Bc / 8][4];
      zero(s);
      zero(dp);
      mma_abt_shared<Bc, HD, S>(s, sq + 16 * warp * S, ks, lane);   // S = Q K^T
      mma_abt_shared<Bc, HD, S>(dp, sdo + 16 * warp * S, vs, lane); // dP = dO V^T
#pragma unroll
      for (int n = 0; n < Bc / 8; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int64_t key = key0 + 8 * n + 2 * t + (i & 1), row = rows[i / 2];
          const float p =
              key <= row && row < seq ? exp2f(s[n][i] * scale_log2 - lse2[i / 2]) : 0.0f;
          s[n][i] = p * (dp[n][i] - dr[i / 2]); // dS
        }
      mma_pb<HD, Bc, S>(acc, s, ks, lane); // dQ += dS K
    }
    __syncthreads();
  }
  const float sc[2] = {scale, scale};
  store_rows<HD>(acc, sc, sq + 16 * warp * S, dq + tile.q_off + warp_row * q_stride, q_stride,
                 seq - warp_row, lane);
}

/// dK and dV for a (key tile, KV head, batch): every query head of the
/// group, every query tile at or below the diagonal.
template <int HD>
__global__ void __launch_bounds__(FlashBwdTiles<HD>::kThreads)
    flash_attention_dkv_kernel(const __nv_bfloat16 *__restrict__ dout,
                               const __nv_bfloat16 *__restrict__ q,
                               const __nv_bfloat16 *__restrict__ k,
                               const __nv_bfloat16 *__restrict__ v,
                               const float *__restrict__ lse, const float *__restrict__ delta,
                               __nv_bfloat16 *__restrict__ dk, __nv_bfloat16 *__restrict__ dv,
                               int64_t seq, int64_t heads, int64_t kv_heads, float scale,
                               float scale_log2) {
  using C = FlashBwdTiles<HD>;
  using namespace flash;
  constexpr int S = C::kStride, Bk = C::kKeys, Bq = C::kQueries;
  LLK_DYNAMIC_SHARED(smem);
  bf16 *const sk = reinterpret_cast<bf16 *>(smem); // Bk rows
  bf16 *const sv = sk + Bk * S;                     // Bk rows
  bf16 *const sq = sv + Bk * S;                     // 2 buffers of Bq rows
  bf16 *const sdo = sq + 2 * Bq * S;                // 2 buffers of Bq rows
  float *const slse = reinterpret_cast<float *>(sdo + 2 * Bq * S); // 2 x Bq (log2 domain)
  float *const sd = slse + 2 * Bq;                                 // 2 x Bq

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t k0 = int64_t(blockIdx.x) * Bk; // key tile 0 (the most queries) first
  const int64_t kvh = blockIdx.y, b = blockIdx.z, group = heads / kv_heads;
  const int64_t q_stride = heads * HD, kv_stride = kv_heads * HD;
  const int64_t kv_off = (b * seq * kv_heads + kvh) * HD;
  const int64_t warp_key = k0 + 16 * warp;
  const int64_t keys[2] = {warp_key + g, warp_key + g + 8};
  const int64_t first = k0 / Bq, per_head = ceil_div(seq, int64_t(Bq)) - first;
  const int64_t steps = group * per_head; // (head, query tile) pairs, head-major

  // Q, dO, lse and D of step n into buffer `buf`.
  auto load_step = [&](int64_t n, int buf) {
    const int64_t h = kvh * group + n / per_head, q0 = (first + n % per_head) * Bq;
    const int64_t q_off = (b * seq * heads + h) * HD;
    load_rows<HD, Bq, C::kThreads>(sq + buf * Bq * S, q + q_off, q_stride, q0, seq);
    load_rows<HD, Bq, C::kThreads>(sdo + buf * Bq * S, dout + q_off, q_stride, q0, seq);
    for (int i = int(threadIdx.x); i < Bq; i += C::kThreads) {
      const int64_t stat = (b * heads + h) * seq + q0 + i;
      const bool valid = q0 + i < seq;
      shared_st(slse[buf * Bq + i], valid ? lse[stat] * kLog2e : 0.0f);
      shared_st(sd[buf * Bq + i], valid ? delta[stat] : 0.0f);
    }
  };
  load_rows<HD, Bk, C::kThreads>(sk, k + kv_off, kv_stride, k0, seq);
  load_rows<HD, Bk, C::kThreads>(sv, v + kv_off, kv_stride, k0, seq);
  load_step(0, 0);
  cp_async_commit();
  float dkacc[HD / 8][4], dvacc[HD / 8][4];
  zero(dkacc);
  zero(dvacc);

  for (int64_t n = 0; n < steps; ++n) {
    const int buf = int(n & 1);
    if (n + 1 < steps) {
      load_step(n + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int64_t q0 = (first + n % per_head) * Bq;
    if (q0 + Bq - 1 >= warp_key) { // some query of the tile sees a key of the warp
      const bf16 *const qs = sq + buf * Bq * S, *const dos = sdo + buf * Bq * S;
      float st[Bq / 8][4], dpt[Bq / 8][4];
      zero(st);
      zero(dpt);
      mma_abt_shared<Bq, HD, S>(st, sk + 16 * warp * S, qs, lane);   // S^T = K Q^T
      mma_abt_shared<Bq, HD, S>(dpt, sv + 16 * warp * S, dos, lane); // dP^T = V dO^T
#pragma unroll
      for (int c = 0; c < Bq / 8; ++c)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int col = 8 * c + 2 * t + (i & 1);
          const int64_t query = q0 + col;
          const float l2 = shared_ld(slse[buf * Bq + col]);
          const float p = query >= keys[i / 2] && query < seq
                              ? exp2f(st[c][i] * scale_log2 - l2)
                              : 0.0f;
          st[c][i] = p;                                               // P^T
          dpt[c][i] = p * (dpt[c][i] - shared_ld(sd[buf * Bq + col])); // dS^T
        }
      mma_pb<HD, Bq, S>(dvacc, st, dos, lane); // dV += P^T dO
      mma_pb<HD, Bq, S>(dkacc, dpt, qs, lane); // dK += dS^T Q
    }
    __syncthreads();
  }
  const float one[2] = {1.0f, 1.0f}, sc[2] = {scale, scale};
  store_rows<HD>(dkacc, sc, sk + 16 * warp * S, dk + kv_off + warp_key * kv_stride, kv_stride,
                 seq - warp_key, lane);
  store_rows<HD>(dvacc, one, sv + 16 * warp * S, dv + kv_off + warp_key * kv_stride, kv_stride,
                 seq - warp_key, lane);
}

/// The backward's D pre-pass: delta[(b * heads + h) * seq + i] = rowsum(dO * O).
template <int HD>
void flash_attention_delta(const __nv_bfloat16 *dout, const __nv_bfloat16 *o, float *delta,
                           int64_t batch, int64_t seq, int64_t heads, cudaStream_t stream) {
  const int64_t rows = batch * seq * heads;
  auto *d_kernel = &flash_attention_delta_kernel<HD>;
  LLAMA_LAUNCH(d_kernel, dim3(unsigned(ceil_div(rows * flash_delta_lanes(HD / 8), 256))),
               dim3(256), stream, dout, o, delta, rows, seq, heads);
}

/// The backward's dQ (overwritten), from lse and D.
template <int HD>
void flash_attention_dq(const __nv_bfloat16 *dout, const __nv_bfloat16 *q,
                        const __nv_bfloat16 *k, const __nv_bfloat16 *v, const float *lse,
                        const float *delta, __nv_bfloat16 *dq, int64_t batch, int64_t seq,
                        int64_t heads, int64_t kv_heads, float scale, cudaStream_t stream) {
  using C = FlashBwdTiles<HD>;
  constexpr auto dq_kernel = &flash_attention_dq_kernel<HD>;
  allow_dynamic_shared<dq_kernel>(C::kDqSmemBytes);
  LLAMA_LAUNCH_SMEM(dq_kernel,
                    dim3(unsigned(ceil_div(seq, int64_t(C::kDqRows))), unsigned(heads),
                         unsigned(batch)),
                    dim3(C::kThreads), C::kDqSmemBytes, stream, dout, q, k, v, lse, delta, dq,
                    seq, heads, kv_heads, scale, scale * flash::kLog2e);
}

/// The backward's dK and dV (overwritten), from lse and D.
template <int HD>
void flash_attention_dkv(const __nv_bfloat16 *dout, const __nv_bfloat16 *q,
                         const __nv_bfloat16 *k, const __nv_bfloat16 *v, const float *lse,
                         const float *delta, __nv_bfloat16 *dk, __nv_bfloat16 *dv, int64_t batch,
                         int64_t seq, int64_t heads, int64_t kv_heads, float scale,
                         cudaStream_t stream) {
  using C = FlashBwdTiles<HD>;
  constexpr auto dkv_kernel = &flash_attention_dkv_kernel<HD>;
  allow_dynamic_shared<dkv_kernel>(C::kDkvSmemBytes);
  LLAMA_LAUNCH_SMEM(dkv_kernel,
                    dim3(unsigned(ceil_div(seq, int64_t(C::kKeys))), unsigned(kv_heads),
                         unsigned(batch)),
                    dim3(C::kThreads), C::kDkvSmemBytes, stream, dout, q, k, v, lse, delta, dk,
                    dv, seq, heads, kv_heads, scale, scale * flash::kLog2e);
}

/// The backward: dq [batch, seq, heads, HD], dk and dv [batch, seq,
/// kv_heads, HD] overwritten; `workspace` holds D
/// (attention_backward_workspace_bytes).
template <int HD>
void flash_attention_backward(const __nv_bfloat16 *dout, const __nv_bfloat16 *q,
                              const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                              const __nv_bfloat16 *o, const float *lse, __nv_bfloat16 *dq,
                              __nv_bfloat16 *dk, __nv_bfloat16 *dv, int64_t batch, int64_t seq,
                              int64_t heads, int64_t kv_heads, float scale, void *workspace,
                              cudaStream_t stream) {
  float *delta = static_cast<float *>(workspace);
  flash_attention_delta<HD>(dout, o, delta, batch, seq, heads, stream);
  flash_attention_dq<HD>(dout, q, k, v, lse, delta, dq, batch, seq, heads, kv_heads, scale,
                         stream);
  flash_attention_dkv<HD>(dout, q, k, v, lse, delta, dk, dv, batch, seq, heads, kv_heads, scale,
                          stream);
}

} // namespace llk
