// Causal grouped-query attention forward on Hopper's warpgroup MMA (sm_90a):
// flash_attention.cuh's FlashAttention-2 algorithm, its mma.sync replaced by
// wgmma (mma.cuh), for bf16 storage and head dims 64 and 128 (shapes.h:
// flash_sm90_supports; EmitCuda picks it there, the mma.sync kernel for the
// other head dims). Same inputs, outputs and lse as flash_attention_forward,
// so either backward follows it.
//
// A block per (query tile of 128 rows, head, batch), two warpgroups: warpgroup
// wg owns rows 64 wg .. 64 wg + 63 of the tile (its warp w rows 16 w..16 w + 15,
// the mma.sync kernel's rows). For each key tile j of 128 keys up to the
// diagonal:
//   - the K/V tiles of j + 1 are issued with cp.async into the other of two
//     buffers (double buffering), tile j is waited for, made visible to the
//     tensor cores (fence.proxy.async) and a barrier passed;
//   - S = Q K^T: HD / 16 wgmma m64n128k16 per warpgroup, both operands read
//     from shared memory by descriptor (Q stays there for the whole loop);
//   - the keys past the row are masked where the tile crosses a warp's
//     diagonal, and the online softmax runs on the accumulators as in the
//     mma.sync kernel (wgmma's accumulator layout is mma.m16n8k16's C layout
//     per 8 columns: thread (warp w, lane l) holds rows 16 w + l / 4 and
//     16 w + l / 4 + 8);
//   - O += P V: 8 wgmma m64nHDk16 with P's A fragments in registers (the S
//     accumulators rounded to bf16) and V read MN-major (transposed) from
//     shared memory.
// A warpgroup whose 64 rows all lie above a key tile skips it (wgmma is
// warpgroup-collective, so the skip is per warpgroup; per-warp skips of the
// mma.sync kernel become masked rows here).
//
// Shared memory: Q (128 rows), K and V (2 buffers of 128 rows each), every
// tile stored as TMA's SWIZZLE_128B writes it: rows of 64 elements (128
// bytes) in column blocks of 64 (HD / 64 of them, a block after the other),
// 16-byte chunk c of row r at chunk c ^ (r % 8). wgmma reads these layouts
// without bank conflicts; the cp.async writes (consecutive threads on the 8
// chunks of a row) touch 8 distinct chunks of 128 bytes: conflict-free too.
// Descriptors (mma.cuh: wgmma_desc): Q and K K-major, a k-step of 16 = 32
// bytes within a block, SBO 1024 (8 rows); V MN-major, a k-step of 16 keys =
// 2048 bytes, SBO 1024 (8 keys), LBO = one column block (128 keys x 128 bytes)
// for the dims 64-127.
//
// Not yet here (FlashAttention-3's further steps): TMA loads from a producer
// warpgroup with mbarriers, the ping-pong of two warpgroups' softmax under each
// other's GEMMs, and the intra-warpgroup overlap of S(j + 1) with softmax(j).
// The backward stays on mma.sync.
#pragma once

#include "runtime/cuda/kernels/flash_attention.cuh"

namespace llk {

template <int HD> struct FlashSm90Tiles {
  static_assert(flash_sm90_supports(HD), "the wgmma attention takes head dims 64 and 128");
  static constexpr int kWarpgroups = 2;
  static constexpr int kBr = 64 * kWarpgroups;
  static constexpr int kBc = 128;
  static constexpr size_t kQBytes = size_t(kBr) * HD * 2;
  static constexpr size_t kKVBytes = size_t(kBc) * HD * 2; // one K or V buffer
  static constexpr size_t kSmemBytes = kQBytes + 4 * kKVBytes;
  static_assert(kSmemBytes == size_t(flash_sm90_smem_bytes(HD)));
  static_assert(kBr == flash_sm90_query_rows(HD) && kBc == flash_sm90_key_rows(HD));
};

namespace flash_sm90 {

using bf16 = __nv_bfloat16;

/// Byte offset of element (row, col) of an R-row tile in the swizzled
/// layout above.
template <int R> __device__ __forceinline__ uint32_t swizzled(int row, int col) {
  return uint32_t((col / 64) * R * 128 + row * 128 + (((col % 64) / 8) ^ (row % 8)) * 16 +
                  (col % 8) * 2);
}

/// cp.async of rows [r0, r0 + R) of a [seq, row_stride] matrix (HD elements
/// each) into the swizzled tile at `dst`; rows at or past `seq` become zeros.
template <int HD, int R, int kThreads>
__device__ __forceinline__ void load_tile(unsigned char *dst, const bf16 *src,
                                          int64_t row_stride, int64_t r0, int64_t seq) {
  constexpr int kChunks = HD / 8;
  for (int c = int(threadIdx.x); c < R * kChunks; c += kThreads) {
    const int r = c / kChunks, ch = c % kChunks;
    const bool valid = r0 + r < seq;
    cp_async16(dst + swizzled<R>(r, 8 * ch), src + (valid ? r0 + r : 0) * row_stride + 8 * ch,
               valid);
  }
}

} // namespace flash_sm90

template <int HD>
__global__ void __launch_bounds__(128 * FlashSm90Tiles<HD>::kWarpgroups)
    flash_attention_forward_sm90_kernel(const __nv_bfloat16 *__restrict__ q,
                                        const __nv_bfloat16 *__restrict__ k,
                                        const __nv_bfloat16 *__restrict__ v,
                                        __nv_bfloat16 *__restrict__ o, float *__restrict__ lse,
                                        int64_t seq, int64_t heads, int64_t kv_heads,
                                        float scale_log2) {
  using C = FlashSm90Tiles<HD>;
  using namespace flash;
  using flash_sm90::load_tile;
  constexpr int Br = C::kBr, Bc = C::kBc, kThreads = 128 * C::kWarpgroups;
  LLK_DYNAMIC_SHARED(smem);
  unsigned char *const sq = smem;                  // Br rows
  unsigned char *const sk = smem + C::kQBytes;     // 2 buffers of Bc rows
  unsigned char *const sv = sk + 2 * C::kKVBytes;  // 2 buffers of Bc rows

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, t = lane % 4;
  // Through a shuffle, so that ptxas sees the warpgroup index (and the
  // per-warpgroup tile skip below) as warp-uniform: a branch it must assume
  // divergent around wgmma serializes every wgmma (ptxas C7520).
  const int wg = __shfl_sync(0xffffffffu, int(threadIdx.x) / 128, 0);
  const QueryTile tile = query_tile<HD, Br, Bc>(seq, heads, kv_heads, warp, lane);
  const int64_t q_stride = heads * HD, kv_stride = kv_heads * HD; // between positions
  const bf16 *const kb = k + tile.kv_off, *const vb = v + tile.kv_off;
  const int64_t warp_row = tile.warp_row, wg_row = tile.q0 + 64 * wg;
  const int64_t *const rows = tile.rows; // this lane's two rows

  load_tile<HD, Br, kThreads>(sq, q + tile.q_off, q_stride, tile.q0, seq);
  load_tile<HD, Bc, kThreads>(sk, kb, kv_stride, 0, seq);
  load_tile<HD, Bc, kThreads>(sv, vb, kv_stride, 0, seq);
  cp_async_commit();

  float acc[HD / 2];
#pragma unroll
  for (int i = 0; i < HD / 2; ++i)
    acc[i] = 0.0f;
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.0f, 0.0f};
  // This warpgroup's 64 Q rows in each column block of the Q tile.
  unsigned char *const q_rows = sq + 64 * wg * 128;

  for (int64_t j = 0; j < tile.key_tiles; ++j) {
    const int buf = int(j & 1);
    if (j + 1 < tile.key_tiles) {
      load_tile<HD, Bc, kThreads>(sk + (buf ^ 1) * C::kKVBytes, kb, kv_stride, (j + 1) * Bc,
                                  seq);
      load_tile<HD, Bc, kThreads>(sv + (buf ^ 1) * C::kKVBytes, vb, kv_stride, (j + 1) * Bc,
                                  seq);
      cp_async_commit();
      cp_async_wait<1>(); // tile j landed; j + 1 may still fly
    } else {
      cp_async_wait<0>();
    }
    fence_proxy_async(); // this thread's copies, to the tensor cores' reads
    __syncthreads();
    const int64_t key0 = j * Bc;
    if (key0 <= wg_row + 63) { // some key of the tile is visible to a row of the warpgroup
      const unsigned char *const ks = sk + buf * C::kKVBytes, *const vs = sv + buf * C::kKVBytes;
      float s[Bc / 2];
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        const uint32_t at = uint32_t((kk / 4) * Br * 128 + 32 * (kk % 4));
        const uint32_t bt = uint32_t((kk / 4) * Bc * 128 + 32 * (kk % 4));
        wgmma_ss<Bc, false, false>(s, wgmma_desc(q_rows + at, 0, 1024, SmemSwizzle::B128),
                                   wgmma_desc(ks + bt, 0, 1024, SmemSwizzle::B128), kk > 0);
      }
      wgmma_commit();
      wgmma_wait<0>();
      wgmma_fence_operands(s);
      // s[i]: key key0 + 8 (i / 4) + 2t + i % 2 of row rows[(i / 2) % 2], as
      // in the mma.sync kernel.
      softmax_tile<Bc / 2, HD / 2>(s, acc, m, l, rows, key0, key0 + Bc - 1 > warp_row, t,
                                   scale_log2);
      // O += P V: k-step kk (keys 16 kk .. 16 kk + 15) is s[8 kk .. 8 kk + 7],
      // mma.m16n8k16's A fragment order. Every fragment is packed before the
      // fence, so that no register the wgmma chain reads is written inside it
      // (ptxas would fence before each wgmma: C7519).
      uint32_t pa[Bc / 16][4];
#pragma unroll
      for (int kk = 0; kk < Bc / 16; ++kk)
#pragma unroll
        for (int r = 0; r < 4; ++r)
          pa[kk][r] = pack_bf16x2(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
      wgmma_fence_operands(acc);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < Bc / 16; ++kk)
        wgmma_rs<HD, true>(acc, pa[kk],
                           wgmma_desc(vs + 2048 * kk, Bc * 128, 1024, SmemSwizzle::B128), true);
      wgmma_commit();
      wgmma_wait<0>();
      wgmma_fence_operands(acc);
    }
    __syncthreads(); // every warpgroup is done with buffer `buf` before it is refilled
  }

  // Epilogue, staged through the warp's own 16 rows (padded) of the K
  // buffers, free after the loop's last barrier.
  float out[HD / 8][4];
#pragma unroll
  for (int i = 0; i < HD / 2; ++i)
    out[i / 4][i % 4] = acc[i];
  finish_forward<HD>(out, l, m, reinterpret_cast<bf16 *>(sk) + 16 * warp * (HD + 8), o, lse,
                     tile, seq, heads, lane);
}

/// Launches the wgmma forward for [batch, seq, heads, HD] bf16 q (k, v with
/// kv_heads); `scale` multiplies q . k. HD is 64 or 128.
template <int HD>
void flash_attention_forward_sm90(const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                                  const __nv_bfloat16 *v, __nv_bfloat16 *o, float *lse,
                                  int64_t batch, int64_t seq, int64_t heads, int64_t kv_heads,
                                  float scale, cudaStream_t stream) {
  using C = FlashSm90Tiles<HD>;
  launch_flash_forward<&flash_attention_forward_sm90_kernel<HD>>(
      C::kBr, 128 * C::kWarpgroups, C::kSmemBytes, q, k, v, o, lse, batch, seq, heads,
      kv_heads, scale, stream);
}

} // namespace llk
