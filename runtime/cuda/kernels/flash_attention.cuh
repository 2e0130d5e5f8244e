// Causal grouped-query attention for training on tensor cores, bf16
// storage: the FlashAttention-2 forward (Dao 2023), specialized per head
// dim at compile time. attention.cuh keeps the CUDA-core kernels for fp32
// storage and for head dims that are not a multiple of 16; EmitCuda picks.
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
// (sm_90a): 237, 233 and 245 registers, no spills, no stack frame.
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
  static constexpr int kChunks = HD / 8; // 16-byte chunks per row
  static constexpr size_t kSmemBytes = size_t(flash_smem_bytes(HD));
  static_assert(kSmemBytes == size_t(2) * kStride * (kBr + 4 * kBc));
};

namespace flash {

using bf16 = __nv_bfloat16;

/// cp.async of rows [r0, r0 + R) of a [seq, row_stride] matrix (HD
/// elements each) into `dst` (kStride per row): 16-byte chunks over the
/// block's threads, consecutive threads on consecutive chunks of a row
/// (whole 32-byte sectors); rows at or past `seq` become zeros.
template <int HD, int R>
__device__ __forceinline__ void load_rows(bf16 *dst, const bf16 *src, int64_t row_stride,
                                          int64_t r0, int64_t seq) {
  using C = FlashTiles<HD>;
  for (int c = int(threadIdx.x); c < R * C::kChunks; c += 32 * C::kWarps) {
    const int r = c / C::kChunks, ch = c % C::kChunks;
    const bool valid = r0 + r < seq;
    cp_async16(dst + r * C::kStride + ch * 8, src + (valid ? r0 + r : 0) * row_stride + ch * 8,
               valid);
  }
}

} // namespace flash

template <int HD>
__global__ void __launch_bounds__(32 * FlashTiles<HD>::kWarps)
    flash_attention_forward_kernel(const __nv_bfloat16 *__restrict__ q,
                                   const __nv_bfloat16 *__restrict__ k,
                                   const __nv_bfloat16 *__restrict__ v,
                                   __nv_bfloat16 *__restrict__ o, float *__restrict__ lse,
                                   int64_t seq, int64_t heads, int64_t kv_heads,
                                   float scale_log2) {
  using C = FlashTiles<HD>;
  using flash::bf16;
  constexpr int S = C::kStride, Br = C::kBr, Bc = C::kBc;
  LLK_DYNAMIC_SHARED(smem);
  bf16 *const sq = reinterpret_cast<bf16 *>(smem); // Br rows
  bf16 *const sk = sq + Br * S;                     // 2 buffers of Bc rows
  bf16 *const sv = sk + 2 * Bc * S;                 // 2 buffers of Bc rows

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t q_tiles = ceil_div(seq, int64_t(Br));
  const int64_t q0 = (q_tiles - 1 - int64_t(blockIdx.x)) * Br; // longest rows first
  const int64_t h = blockIdx.y, b = blockIdx.z, kvh = h / (heads / kv_heads);
  const int64_t q_stride = heads * HD, kv_stride = kv_heads * HD; // between positions
  const bf16 *const qb = q + (b * seq * heads + h) * HD;
  const bf16 *const kb = k + (b * seq * kv_heads + kvh) * HD;
  const bf16 *const vb = v + (b * seq * kv_heads + kvh) * HD;
  const int64_t warp_row = q0 + 16 * warp;           // the warp's first row
  const int64_t rows[2] = {warp_row + g, warp_row + g + 8}; // this lane's rows
  const int64_t key_tiles = (min_i64(q0 + Br, seq) - 1) / Bc + 1; // up to the diagonal

  flash::load_rows<HD, Br>(sq, qb, q_stride, q0, seq);
  flash::load_rows<HD, Bc>(sk, kb, kv_stride, 0, seq);
  flash::load_rows<HD, Bc>(sv, vb, kv_stride, 0, seq);
  cp_async_commit();

  // This warp's 16 Q rows as A fragments, k-step kk (16 dims): lanes 0-15
  // address rows 0-15 at column 16 kk, lanes 16-31 the same rows at + 8.
  const bf16 *const q_frag_row = sq + (16 * warp + lane % 16) * S + (lane / 16) * 8;
  uint32_t qf[C::kQInRegisters ? HD / 16 : 1][4];
  float acc[HD / 8][4];
#pragma unroll
  for (int d = 0; d < HD / 8; ++d)
    acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.0f;
  float m[2] = {-__int_as_float(0x7f800000), -__int_as_float(0x7f800000)}, l[2] = {0.0f, 0.0f};

  for (int64_t j = 0; j < key_tiles; ++j) {
    const int buf = int(j & 1);
    if (j + 1 < key_tiles) {
      flash::load_rows<HD, Bc>(sk + (buf ^ 1) * Bc * S, kb, kv_stride, (j + 1) * Bc, seq);
      flash::load_rows<HD, Bc>(sv + (buf ^ 1) * Bc * S, vb, kv_stride, (j + 1) * Bc, seq);
      cp_async_commit();
      cp_async_wait<1>(); // tile j (and Q) landed; j + 1 may still fly
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if constexpr (C::kQInRegisters)
      if (j == 0) {
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk)
          ldmatrix<4>(qf[kk], q_frag_row + 16 * kk);
      }
    const int64_t key0 = j * Bc;
    if (key0 <= warp_row + 15) { // some key of the tile is visible to a row of the warp
      const bf16 *const ks = sk + buf * Bc * S, *const vs = sv + buf * Bc * S;
      // S = Q K^T: n-tiles of 8 keys, two per ldmatrix.x4 (lanes 0-7: keys
      // 0-7 dims 0-7, 8-15: keys 0-7 dims 8-15, 16-31: keys 8-15 likewise).
      float s[Bc / 8][4];
#pragma unroll
      for (int n = 0; n < Bc / 8; ++n)
        s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
      const bf16 *const k_frag_row = ks + ((lane / 16) * 8 + lane % 8) * S + ((lane / 8) % 2) * 8;
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        uint32_t a[4];
        if constexpr (C::kQInRegisters) {
#pragma unroll
          for (int r = 0; r < 4; ++r)
            a[r] = qf[kk][r];
        } else {
          ldmatrix<4>(a, q_frag_row + 16 * kk);
        }
#pragma unroll
        for (int np = 0; np < Bc / 16; ++np) {
          uint32_t kf[4];
          ldmatrix<4>(kf, k_frag_row + 16 * np * S + 16 * kk);
          const uint32_t b0[2] = {kf[0], kf[1]}, b1[2] = {kf[2], kf[3]};
          mma_bf16_16816(s[2 * np], a, b0, s[2 * np]);
          mma_bf16_16816(s[2 * np + 1], a, b1, s[2 * np + 1]);
        }
      }
      // Scale into the log2 domain; mask keys past the row where the tile
      // crosses the warp's diagonal.
      const bool diagonal = key0 + Bc - 1 > warp_row;
      float mx[2] = {m[0], m[1]};
#pragma unroll
      for (int n = 0; n < Bc / 8; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          float x = s[n][i] * scale_log2;
          if (diagonal && key0 + 8 * n + 2 * t + (i & 1) > rows[i / 2])
            x = -__int_as_float(0x7f800000);
          s[n][i] = x;
          mx[i / 2] = x > mx[i / 2] ? x : mx[i / 2];
        }
      float corr[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        // Row max over the quad; finite from tile 0 on (key 0 is visible
        // to every row), so exp2(-inf - finite) = 0 rescales nothing away.
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        corr[r] = exp2f(m[r] - mx[r]);
        m[r] = mx[r];
        l[r] *= corr[r];
      }
#pragma unroll
      for (int d = 0; d < HD / 8; ++d) {
        acc[d][0] *= corr[0];
        acc[d][1] *= corr[0];
        acc[d][2] *= corr[1];
        acc[d][3] *= corr[1];
      }
#pragma unroll
      for (int n = 0; n < Bc / 8; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float p = exp2f(s[n][i] - m[i / 2]);
          s[n][i] = p;
          l[i / 2] += p; // this lane's part of the row sum (quad-summed at the end)
        }
      // O += P V: k-step kk covers keys 16 kk .. 16 kk + 15 (n-tiles 2kk,
      // 2kk + 1 of S); ldmatrix.x4.trans gives the B fragments of two
      // 8-dim n-tiles (lanes 0-7: keys 0-7, 8-15: keys 8-15, at dims 0-7;
      // 16-31 the same at dims 8-15).
      const bf16 *const v_frag_row = vs + (lane % 16) * S + (lane / 16) * 8;
#pragma unroll
      for (int kk = 0; kk < Bc / 16; ++kk) {
        const uint32_t pa[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]),
                                pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                                pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int dp = 0; dp < HD / 16; ++dp) {
          uint32_t vf[4];
          ldmatrix_t<4>(vf, v_frag_row + 16 * kk * S + 16 * dp);
          const uint32_t b0[2] = {vf[0], vf[1]}, b1[2] = {vf[2], vf[3]};
          mma_bf16_16816(acc[2 * dp], pa, b0, acc[2 * dp]);
          mma_bf16_16816(acc[2 * dp + 1], pa, b1, acc[2 * dp + 1]);
        }
      }
    }
    __syncthreads(); // every warp is done with buffer `buf` before it is refilled
  }

  // Epilogue: the row sums over the quad, O / l as bf16 into the warp's own
  // 16 rows of the Q buffer (no other warp reads them), then 16-byte rows
  // out; lse for the rows below seq.
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    inv[r] = 1.0f / l[r];
  }
  bf16 *const so = sq + 16 * warp * S;
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) {
    shared_st(*reinterpret_cast<uint32_t *>(so + g * S + 8 * d + 2 * t),
              pack_bf16x2(acc[d][0] * inv[0], acc[d][1] * inv[0]));
    shared_st(*reinterpret_cast<uint32_t *>(so + (g + 8) * S + 8 * d + 2 * t),
              pack_bf16x2(acc[d][2] * inv[1], acc[d][3] * inv[1]));
  }
  __syncwarp();
  for (int c = lane; c < 16 * C::kChunks; c += 32) {
    const int r = c / C::kChunks, ch = c % C::kChunks;
    if (warp_row + r < seq)
      store<8>(o + ((b * seq + warp_row + r) * heads + h) * HD + 8 * ch,
               shared_ld(*reinterpret_cast<const Pack<bf16, 8> *>(so + r * S + 8 * ch)));
  }
  if (t == 0)
#pragma unroll
    for (int r = 0; r < 2; ++r)
      if (rows[r] < seq)
        lse[(b * heads + h) * seq + rows[r]] = (m[r] + log2f(l[r])) * 0.69314718055994531f;
}

/// Launches the forward for [batch, seq, heads, HD] bf16 q (k, v with
/// kv_heads); `scale` multiplies q . k.
template <int HD>
void flash_attention_forward(const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                             const __nv_bfloat16 *v, __nv_bfloat16 *o, float *lse,
                             int64_t batch, int64_t seq, int64_t heads, int64_t kv_heads,
                             float scale, cudaStream_t stream) {
  using C = FlashTiles<HD>;
  auto *kernel = &flash_attention_forward_kernel<HD>;
#ifndef LLAMA_CUDA_EMULATE
  // Over 48 KiB of dynamic shared memory needs the opt-in, once per kernel.
  static const cudaError_t opted = cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(C::kSmemBytes));
  (void)opted; // a failure shows as the launch's error
#endif
  LLAMA_LAUNCH_SMEM(kernel,
                    dim3(unsigned(ceil_div(seq, int64_t(C::kBr))), unsigned(heads),
                         unsigned(batch)),
                    dim3(32 * C::kWarps), C::kSmemBytes, stream, q, k, v, o, lse, seq, heads,
                    kv_heads, scale * 1.44269504088896341f);
}

} // namespace llk
