// Causal grouped-query attention forward (and, at the end of the file, its
// backward's dQ and dK/dV kernels) on Hopper (sm_90a), FlashAttention-3's
// design (Shah et al. 2024): flash_attention.cuh's FlashAttention-2 algorithm
// with the tensor cores' warpgroup MMA (wgmma), the copy engine (TMA) and
// warp specialization, for bf16 storage and head dims 64 and 128 (shapes.h:
// flash_sm90_supports; EmitCuda picks it there, the mma.sync kernel for the
// other head dims). Same inputs, outputs and lse as flash_attention_forward,
// so either backward follows it.
//
// A block per (query tile of 128 rows, head, batch), three warpgroups:
//   - warpgroup 0, the producer, gives most of its registers back
//     (setmaxnreg.dec to kProducerRegs) and one of its threads issues every
//     copy: the Q tile once, then for each key tile j up to the diagonal its
//     K and V tiles into stage j % 2, each a TMA tiled copy (the tensor maps
//     are encoded on the host, make_tensor_map) completing on a "full"
//     mbarrier, after the consumers have released what the stage held two
//     tiles before ("empty" mbarriers; K and V apart, so K(j + 2) may land
//     while V(j), in the same stage, is still read);
//   - warpgroups 1 and 2, the consumers, take the registers
//     (setmaxnreg.inc to kConsumerRegs) and own rows 64 c .. 64 c + 63 of the
//     tile (c = warpgroup - 1; warp w of it rows 16 w .. 16 w + 15, the
//     mma.sync kernel's rows). Per key tile j:
//       S(j) = Q K(j)^T: HD / 16 wgmma m64n128k16 from shared memory;
//       O += P(j - 1) V(j - 1): 8 wgmma m64nHDk16, P in registers, V read
//         MN-major (transposed);
//     both issued together, then the online softmax of S(j) runs while
//     P(j - 1) V(j - 1) is still on the tensor cores (FA3's intra-warpgroup
//     overlap; O's rescale waits for it), and the two consumers take turns
//     at the tensor cores (FA3's ping-pong: named barriers 1 and 2, so one
//     warpgroup's softmax runs under the other's GEMMs).
// Every consumer walks every key tile (a tile's first key never lies past a
// warpgroup's first row, Br = Bc), so both take the same number of turns;
// the keys past a row are masked where the last tile crosses a warp's
// diagonal. Keys and rows past seq read as zeros (TMA's out-of-bounds fill),
// masked keys and unstored rows.
//
// Shared memory: Q (128 rows), K and V (2 stages of 128 rows each), every
// tile as TMA's SWIZZLE_128B writes it: rows of 64 elements (128 bytes) in
// column blocks of 64 (HD / 64 boxes, one after the other), 16-byte chunk c
// of row r at chunk c ^ (r % 8); then the mbarriers. Descriptors (mma.cuh:
// wgmma_desc): Q and K K-major, a k-step of 16 = 32 bytes within a block, SBO
// 1024 (8 rows); V MN-major, a k-step of 16 keys = 2048 bytes, SBO 1024 (8
// keys), LBO = one column block (128 keys x 128 bytes) for the dims 64-127.
// The epilogue stages O through the K stages once both consumers are past
// their last GEMM (named barrier 3).
//
// The backward's dQ and dK/dV kernels below are built the same way (its D
// pre-pass, memory-bound, stays flash_attention.cuh's). Not here: FP8, TMA
// stores of O, the overlap and ping-pong in the backward.
#pragma once

#include "runtime/cuda/kernels/flash_attention.cuh"

namespace llk {

template <int HD> struct FlashSm90Tiles {
  static_assert(flash_sm90_supports(HD), "the wgmma attention takes head dims 64 and 128");
  static constexpr int kConsumers = 2; // warpgroups of 64 query rows
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kBr = 64 * kConsumers;
  static constexpr int kBc = 128;
  static constexpr int kStages = 2;
  // 128 x 24 + 256 x 240 = 64512 of the SM's 65536 registers.
  static constexpr int kProducerRegs = 24, kConsumerRegs = 240;
  static constexpr size_t kQBytes = size_t(kBr) * HD * 2;
  static constexpr size_t kKVBytes = size_t(kBc) * HD * 2; // one K or V stage
  static constexpr size_t kBarriers = kQBytes + 2 * kStages * kKVBytes;
  // full Q, full K / V per stage, empty K / V per stage.
  static constexpr int kBarrierCount = 1 + 4 * kStages;
  static constexpr size_t kSmemBytes = kBarriers + 128;
  static_assert(8 * kBarrierCount <= 128);
  static_assert(kSmemBytes == size_t(flash_sm90_smem_bytes(HD)));
  static_assert(kBr == flash_sm90_query_rows(HD) && kBc == flash_sm90_key_rows(HD));
  static_assert(kThreads == flash_sm90_threads(HD));
  static_assert(kBr == kBc, "every consumer walks every key tile (equal turns)");
  static_assert(size_t(8 * 16 * (HD + 8) * 2) <= kStages * kKVBytes, "epilogue staging");
};

namespace flash_sm90 {

/// The tensor map of a [batch, seq, heads, HD] bf16 tensor for boxes of 64
/// dims x `rows` positions of one head (128-byte rows, 128-byte swizzle);
/// coordinates {dim, head, position, batch}.
template <int HD>
inline TensorMap attention_map(const __nv_bfloat16 *x, int64_t batch, int64_t seq,
                               int64_t heads, uint32_t rows) {
  TensorMap map;
  const uint64_t dims[4] = {uint64_t(HD), uint64_t(heads), uint64_t(seq), uint64_t(batch)};
  const uint64_t strides[3] = {uint64_t(HD) * 2, uint64_t(heads * HD) * 2,
                               uint64_t(seq * heads * HD) * 2};
  const uint32_t box[4] = {64, 1, rows, 1};
  make_tensor_map(&map, x, 4, dims, strides, box, 128);
  return map;
}

/// The four tensor maps of a backward kernel: Q and dO in boxes of
/// `q_rows`, K and V in boxes of `kv_rows`.
struct BackwardMaps {
  TensorMap q, dout, k, v;
};
template <int HD>
inline BackwardMaps backward_maps(const __nv_bfloat16 *q, const __nv_bfloat16 *dout,
                                  const __nv_bfloat16 *k, const __nv_bfloat16 *v, int64_t batch,
                                  int64_t seq, int64_t heads, int64_t kv_heads, uint32_t q_rows,
                                  uint32_t kv_rows) {
  return {attention_map<HD>(q, batch, seq, heads, q_rows),
          attention_map<HD>(dout, batch, seq, heads, q_rows),
          attention_map<HD>(k, batch, seq, kv_heads, kv_rows),
          attention_map<HD>(v, batch, seq, kv_heads, kv_rows)};
}

/// A ring of S stages on full / empty mbarriers: fill j (0, 1, ...) goes to
/// stage j % S, whose full barrier completes phase j / S when it lands and
/// whose empty barrier completes phase j / S once its consumers are done.
/// The producer's wait before fill j: the consumers have released what the
/// stage held S fills ago. Returns the stage.
template <int S> __device__ __forceinline__ int wait_stage_free(uint64_t *empty, int64_t j) {
  const int st = int(j % S);
  if (j >= S)
    mbarrier_wait(empty + st, unsigned(j / S - 1) & 1u);
  return st;
}
/// The consumers' wait for fill j to land. Returns the stage.
template <int S> __device__ __forceinline__ int wait_stage_full(uint64_t *full, int64_t j) {
  const int st = int(j % S);
  mbarrier_wait(full + st, unsigned(j / S) & 1u);
  return st;
}

/// The HD / 64 boxes of a tile (rows from `row`) into `dst`, one column block
/// after the other, completing on `bar` (which expects their bytes).
template <int HD, int R>
__device__ __forceinline__ void copy_tile(unsigned char *dst, const TensorMap &map, int head,
                                          int row, int batch, uint64_t *bar) {
#pragma unroll
  for (int cb = 0; cb < HD / 64; ++cb) {
    const int32_t at[4] = {64 * cb, head, row, batch};
    tensor_copy<4>(dst + cb * R * 128, map, at, bar);
  }
}

/// D (64 x N) = A B^T over K = HD, issued (not committed): A's 64 rows at
/// `a` and B's N rows at `b`, both K-major in 128-byte swizzled column
/// blocks of 64 (the next block ABlockRows / BBlockRows rows of 128 bytes
/// on: the tiles' heights). HD / 16 wgmma m64nNk16, both from shared memory.
template <int N, int HD, int ABlockRows, int BBlockRows>
__device__ __forceinline__ void gemm_abt(float (&d)[N / 2], const unsigned char *a,
                                         const unsigned char *b) {
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    const uint32_t at = uint32_t((kk / 4) * ABlockRows * 128 + 32 * (kk % 4));
    const uint32_t bt = uint32_t((kk / 4) * BBlockRows * 128 + 32 * (kk % 4));
    wgmma_ss<N, false, false>(d, wgmma_desc(a + at, 0, 1024, SmemSwizzle::B128),
                              wgmma_desc(b + bt, 0, 1024, SmemSwizzle::B128), kk > 0);
  }
}

/// D (64 x HD) += P B, issued (not committed): P's K / 16 k-steps as A
/// fragments in registers, B (K rows of HD) read MN-major (transposed) from
/// its 128-byte swizzled column blocks (the dims 64-127 K x 128 bytes on).
/// K / 16 wgmma m64nHDk16.
template <int HD, int K>
__device__ __forceinline__ void gemm_pb(float (&d)[HD / 2], const uint32_t (&p)[K / 16][4],
                                        const unsigned char *b) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk)
    wgmma_rs<HD, true>(d, p[kk], wgmma_desc(b + 2048 * kk, K * 128, 1024, SmemSwizzle::B128),
                       true);
}

/// The A fragments of a 64 x K product's accumulators rounded to bf16: k-step
/// kk (columns 16 kk .. 16 kk + 15) is s[8 kk .. 8 kk + 7], mma.m16n8k16's
/// A fragment order (wgmma's accumulators are its C layout per 8 columns).
template <int K>
__device__ __forceinline__ void pack_a(uint32_t (&p)[K / 16][4], const float (&s)[K / 2]) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk)
#pragma unroll
    for (int r = 0; r < 4; ++r)
      p[kk][r] = pack_bf16x2(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
}

} // namespace flash_sm90

template <int HD>
__global__ void __launch_bounds__(FlashSm90Tiles<HD>::kThreads, 1)
    flash_attention_forward_sm90_kernel(const __grid_constant__ TensorMap tq,
                                        const __grid_constant__ TensorMap tk,
                                        const __grid_constant__ TensorMap tv,
                                        __nv_bfloat16 *__restrict__ o, float *__restrict__ lse,
                                        int64_t seq, int64_t heads, int64_t kv_heads,
                                        float scale_log2) {
  using C = FlashSm90Tiles<HD>;
  using namespace flash;
  using flash_sm90::copy_tile, flash_sm90::wait_stage_free, flash_sm90::wait_stage_full;
  constexpr int Br = C::kBr, Bc = C::kBc, S = C::kStages;
  LLK_DYNAMIC_SHARED(smem);
  unsigned char *const sq = smem;                  // Br rows
  unsigned char *const sk = smem + C::kQBytes;     // S stages of Bc rows
  unsigned char *const sv = sk + S * C::kKVBytes;  // S stages of Bc rows
  uint64_t *const q_full = reinterpret_cast<uint64_t *>(smem + C::kBarriers);
  uint64_t *const k_full = q_full + 1, *const v_full = k_full + S;
  uint64_t *const k_empty = v_full + S, *const v_empty = k_empty + S;

  // Through a shuffle, so that ptxas sees the warpgroup index (and the
  // branches on it) as warp-uniform: a branch it must assume divergent
  // around wgmma serializes every wgmma (ptxas C7520).
  const int wg = __shfl_sync(0xffffffffu, int(threadIdx.x) / 128, 0);
  const int64_t key_tiles =
      (min_i64((ceil_div(seq, int64_t(Br)) - int64_t(blockIdx.x)) * Br, seq) - 1) / Bc + 1;

  if (threadIdx.x == 0) {
    mbarrier_init(q_full, 1);
    for (int st = 0; st < S; ++st) {
      mbarrier_init(k_full + st, 1);
      mbarrier_init(v_full + st, 1);
      mbarrier_init(k_empty + st, 4 * C::kConsumers); // a lane of each consumer warp
      mbarrier_init(v_empty + st, 4 * C::kConsumers);
    }
    fence_mbarrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    // The producer.
    setmaxnreg_dec<C::kProducerRegs>();
    if (threadIdx.x == 0) {
      const int q0 = int((ceil_div(seq, int64_t(Br)) - 1 - int64_t(blockIdx.x)) * Br);
      const int h = int(blockIdx.y), kvh = int(blockIdx.y / (heads / kv_heads));
      const int b = int(blockIdx.z);
      mbarrier_arrive_expect_tx(q_full, uint32_t(C::kQBytes));
      copy_tile<HD, Br>(sq, tq, h, q0, b, q_full);
      for (int j = 0; j < int(key_tiles); ++j) {
        const int st = wait_stage_free<S>(k_empty, j);
        mbarrier_arrive_expect_tx(k_full + st, uint32_t(C::kKVBytes));
        copy_tile<HD, Bc>(sk + st * C::kKVBytes, tk, kvh, j * Bc, b, k_full + st);
        wait_stage_free<S>(v_empty, j);
        mbarrier_arrive_expect_tx(v_full + st, uint32_t(C::kKVBytes));
        copy_tile<HD, Bc>(sv + st * C::kKVBytes, tv, kvh, j * Bc, b, v_full + st);
      }
    }
    return;
  }

  // A consumer: warpgroup c = wg - 1 of the tile's rows.
  setmaxnreg_inc<C::kConsumerRegs>();
  const int c = wg - 1, warp = int(threadIdx.x) / 32 - 4, lane = int(threadIdx.x) % 32;
  const int t = lane % 4;
  const QueryTile tile = query_tile<HD, Br, Bc>(seq, heads, kv_heads, warp, lane);
  const int64_t *const rows = tile.rows; // this lane's two rows
  // Turns at the tensor cores: this warpgroup waits at barrier 1 + c, then
  // lets the other go on at 2 - c. Consumer 0 goes first (consumer 1's
  // arrival for it up front); consumer 1 skips its arrival after its last
  // turn, so every arrival is matched.
  const unsigned my_turn = 1u + unsigned(c), their_turn = 2u - unsigned(c);
  constexpr unsigned kTurnThreads = 256;
  if (c == 1)
    named_barrier_arrive(their_turn, kTurnThreads);
  auto release = [&](uint64_t *bar) { // a lane per warp, once the warp's reads are done
    if (lane == 0)
      mbarrier_arrive(bar);
  };

  unsigned char *const q_rows = sq + 64 * c * 128; // this warpgroup's rows of each block
  // S = Q K^T for the key tile in stage st, issued (committed, not waited).
  auto issue_s = [&](float(&s)[Bc / 2], int st) {
    flash_sm90::gemm_abt<Bc, HD, Br, Bc>(s, q_rows, sk + st * C::kKVBytes);
    wgmma_commit();
  };
  // O += P V for the value tile in stage st, P's fragments in pa.
  float acc[HD / 2];
#pragma unroll
  for (int i = 0; i < HD / 2; ++i)
    acc[i] = 0.0f;
  uint32_t pa[Bc / 16][4];
  auto issue_pv = [&](int st) {
    flash_sm90::gemm_pb<HD, Bc>(acc, pa, sv + st * C::kKVBytes);
    wgmma_commit();
  };
  // P as bf16 A fragments: every fragment packed before the next wgmma
  // chain, so that no register it reads is written inside it (ptxas would
  // fence before each wgmma: C7519).
  auto pack_p = [&](const float(&s)[Bc / 2]) { flash_sm90::pack_a<Bc>(pa, s); };

  float m[2] = {kNegInf, kNegInf}, l[2] = {0.0f, 0.0f}, corr[2];
  const int64_t n = key_tiles;
  mbarrier_wait(q_full, 0);
  {
    // Key tile 0: S alone.
    float s[Bc / 2];
    wait_stage_full<S>(k_full, 0);
    named_barrier_sync(my_turn, kTurnThreads);
    wgmma_fence();
    issue_s(s, 0);
    named_barrier_arrive(their_turn, kTurnThreads); // not consumer 1's last turn: n + 1 >= 2
    wgmma_wait<0>();
    wgmma_fence_operands(s);
    release(k_empty);
    softmax_step<Bc / 2>(s, m, l, rows, 0, Bc - 1 > tile.warp_row, t, scale_log2, corr);
    pack_p(s);
  }
  for (int64_t j = 1; j < n; ++j) {
    float s[Bc / 2];
    const int st = wait_stage_full<S>(k_full, j), pst = wait_stage_full<S>(v_full, j - 1);
    named_barrier_sync(my_turn, kTurnThreads);
    wgmma_fence_operands(acc);
    wgmma_fence();
    issue_s(s, st);
    issue_pv(pst);
    named_barrier_arrive(their_turn, kTurnThreads); // the last turn is the final P V's
    wgmma_wait<1>(); // S(j) is done; P(j - 1) V(j - 1) may still run
    wgmma_fence_operands(s);
    release(k_empty + st);
    const int64_t key0 = j * Bc;
    softmax_step<Bc / 2>(s, m, l, rows, key0, key0 + Bc - 1 > tile.warp_row, t, scale_log2,
                         corr);
    wgmma_wait<0>();
    wgmma_fence_operands(acc);
    release(v_empty + pst);
    rescale_rows<HD / 2>(acc, corr);
    pack_p(s);
  }
  {
    // The last P V.
    const int st = wait_stage_full<S>(v_full, n - 1);
    named_barrier_sync(my_turn, kTurnThreads);
    wgmma_fence_operands(acc);
    wgmma_fence();
    issue_pv(st);
    if (c == 0)
      named_barrier_arrive(their_turn, kTurnThreads);
    wgmma_wait<0>();
    wgmma_fence_operands(acc);
    release(v_empty + st);
  }

  // Epilogue, staged through the K stages (16 padded rows a warp) once both
  // consumers are past their last GEMM.
  named_barrier_sync(3, kTurnThreads);
  float out[HD / 8][4];
#pragma unroll
  for (int i = 0; i < HD / 2; ++i)
    out[i / 4][i % 4] = acc[i];
  finish_forward<HD>(out, l, m, reinterpret_cast<bf16 *>(sk) + 16 * warp * (HD + 8), o, lse,
                     tile, seq, heads, lane);
}

/// Launches the forward for [batch, seq, heads, HD] bf16 q (k, v with
/// kv_heads); `scale` multiplies q . k. HD is 64 or 128. Encodes the three
/// tensor maps (host work of a few microseconds) at every call.
template <int HD>
void flash_attention_forward_sm90(const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                                  const __nv_bfloat16 *v, __nv_bfloat16 *o, float *lse,
                                  int64_t batch, int64_t seq, int64_t heads, int64_t kv_heads,
                                  float scale, cudaStream_t stream) {
  using C = FlashSm90Tiles<HD>;
  constexpr auto kernel = &flash_attention_forward_sm90_kernel<HD>;
  allow_dynamic_shared<kernel>(C::kSmemBytes);
  const TensorMap tq = flash_sm90::attention_map<HD>(q, batch, seq, heads, C::kBr);
  const TensorMap tk = flash_sm90::attention_map<HD>(k, batch, seq, kv_heads, C::kBc);
  const TensorMap tv = flash_sm90::attention_map<HD>(v, batch, seq, kv_heads, C::kBc);
  LLAMA_LAUNCH_SMEM(kernel,
                    dim3(unsigned(ceil_div(seq, int64_t(C::kBr))), unsigned(heads),
                         unsigned(batch)),
                    dim3(C::kThreads), C::kSmemBytes, stream, tq, tk, tv, o, lse, seq, heads,
                    kv_heads, scale * flash::kLog2e);
}

// ---- the backward's dQ on wgmma ----------------------------------------------
// flash_attention.cuh's dQ kernel rebuilt like the forward: a block per
// (128 query rows, head, batch), a producer warpgroup copying Q and dO once
// and each 64-key K and V tile up to the diagonal into a two-stage ring (TMA,
// 128-byte swizzle, one "full" mbarrier per stage for both), and two
// consumer warpgroups of 64 rows: S = Q K^T and dP = dO V^T by HD / 16 wgmma
// m64n64k16 each from shared memory, dS = P (dP - D) in registers (P from
// the saved lse), dQ += dS K by 4 wgmma m64nHDk16 with dS's fragments in
// registers and K read MN-major (the forward's P V with K for V). A consumer
// skips a key tile wholly past its rows (its first warpgroup the diagonal
// tile of the second) but still releases it. dQ is scaled by `scale` at the
// end.
template <int HD> struct FlashSm90DqTiles {
  static_assert(flash_sm90_supports(HD), "the wgmma attention takes head dims 64 and 128");
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kRows = 64 * kConsumers; // query rows a block
  static constexpr int kKeys = 64;              // a key tile
  static constexpr int kStages = 2;
  static constexpr int kProducerRegs = 24, kConsumerRegs = 240;
  static constexpr size_t kQBytes = size_t(kRows) * HD * 2;  // Q or dO
  static constexpr size_t kKVBytes = size_t(kKeys) * HD * 2; // K or V of a stage
  static constexpr size_t kBarriers = 2 * kQBytes + 2 * kStages * kKVBytes;
  static constexpr size_t kSmemBytes = kBarriers + 64; // Q/dO full, full and empty per stage
  static_assert(8 * (1 + 2 * kStages) <= 64);
  static_assert(size_t(8 * 16 * (HD + 8) * 2) <= 2 * kStages * kKVBytes, "epilogue staging");
  static_assert(kSmemBytes == size_t(flash_sm90_dq_smem_bytes(HD)));
  static_assert(kRows == flash_sm90_dq_rows(HD) && kKeys == flash_sm90_dq_keys(HD));
};

template <int HD>
__global__ void __launch_bounds__(FlashSm90DqTiles<HD>::kThreads, 1)
    flash_attention_dq_sm90_kernel(const __grid_constant__ TensorMap tq,
                                   const __grid_constant__ TensorMap tdo,
                                   const __grid_constant__ TensorMap tk,
                                   const __grid_constant__ TensorMap tv,
                                   const float *__restrict__ lse, const float *__restrict__ delta,
                                   __nv_bfloat16 *__restrict__ dq, int64_t seq, int64_t heads,
                                   int64_t kv_heads, float scale, float scale_log2) {
  using C = FlashSm90DqTiles<HD>;
  using namespace flash;
  using flash_sm90::copy_tile, flash_sm90::wait_stage_free, flash_sm90::wait_stage_full;
  constexpr int Br = C::kRows, Bc = C::kKeys, S = C::kStages;
  LLK_DYNAMIC_SHARED(smem);
  unsigned char *const sq = smem;                 // Br rows
  unsigned char *const sdo = sq + C::kQBytes;     // Br rows
  unsigned char *const sk = sdo + C::kQBytes;     // S stages of Bc rows
  unsigned char *const sv = sk + S * C::kKVBytes; // S stages of Bc rows
  uint64_t *const qd_full = reinterpret_cast<uint64_t *>(smem + C::kBarriers);
  uint64_t *const full = qd_full + 1, *const empty = full + S;

  const int wg = __shfl_sync(0xffffffffu, int(threadIdx.x) / 128, 0);
  const int64_t q0 = (ceil_div(seq, int64_t(Br)) - 1 - int64_t(blockIdx.x)) * Br;
  const int64_t key_tiles = (min_i64(q0 + Br, seq) - 1) / Bc + 1; // up to the diagonal

  if (threadIdx.x == 0) {
    mbarrier_init(qd_full, 1);
    for (int st = 0; st < S; ++st) {
      mbarrier_init(full + st, 1);
      mbarrier_init(empty + st, 4 * C::kConsumers); // a lane of each consumer warp
    }
    fence_mbarrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    // The producer.
    setmaxnreg_dec<C::kProducerRegs>();
    if (threadIdx.x == 0) {
      const int h = int(blockIdx.y), kvh = int(blockIdx.y / (heads / kv_heads));
      const int b = int(blockIdx.z);
      mbarrier_arrive_expect_tx(qd_full, uint32_t(2 * C::kQBytes));
      copy_tile<HD, Br>(sq, tq, h, int(q0), b, qd_full);
      copy_tile<HD, Br>(sdo, tdo, h, int(q0), b, qd_full);
      for (int j = 0; j < int(key_tiles); ++j) {
        const int st = wait_stage_free<S>(empty, j);
        mbarrier_arrive_expect_tx(full + st, uint32_t(2 * C::kKVBytes));
        copy_tile<HD, Bc>(sk + st * C::kKVBytes, tk, kvh, j * Bc, b, full + st);
        copy_tile<HD, Bc>(sv + st * C::kKVBytes, tv, kvh, j * Bc, b, full + st);
      }
    }
    return;
  }

  // A consumer: rows 64 c .. 64 c + 63 of the block.
  setmaxnreg_inc<C::kConsumerRegs>();
  const int c = wg - 1, warp = int(threadIdx.x) / 32 - 4, lane = int(threadIdx.x) % 32;
  const int t = lane % 4;
  const QueryTile tile = query_tile<HD, Br, Bc>(seq, heads, kv_heads, warp, lane);
  const int64_t *const rows = tile.rows;
  const int64_t wg_row = q0 + 64 * c;
  // This lane's two rows: lse in the log2 domain and D (rows past seq: 0,
  // their P is masked to 0).
  float lse2[2], dr[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t stat = (tile.b * heads + tile.h) * seq + rows[r];
    lse2[r] = rows[r] < seq ? lse[stat] * kLog2e : 0.0f;
    dr[r] = rows[r] < seq ? delta[stat] : 0.0f;
  }
  unsigned char *const q_rows = sq + 64 * c * 128, *const do_rows = sdo + 64 * c * 128;
  float acc[HD / 2];
#pragma unroll
  for (int i = 0; i < HD / 2; ++i)
    acc[i] = 0.0f;
  mbarrier_wait(qd_full, 0);

  for (int64_t j = 0; j < key_tiles; ++j) {
    const int st = wait_stage_full<S>(full, j);
    const int64_t key0 = j * Bc;
    if (key0 <= wg_row + 63) { // some key of the tile is visible to a row of the warpgroup
      const unsigned char *const ks = sk + st * C::kKVBytes, *const vs = sv + st * C::kKVBytes;
      float s[Bc / 2], dp[Bc / 2];
      wgmma_fence();
      flash_sm90::gemm_abt<Bc, HD, Br, Bc>(s, q_rows, ks);   // S = Q K^T
      flash_sm90::gemm_abt<Bc, HD, Br, Bc>(dp, do_rows, vs); // dP = dO V^T
      wgmma_commit();
      wgmma_wait<0>();
      wgmma_fence_operands(s);
      wgmma_fence_operands(dp);
      // s[i], dp[i]: key key0 + 8 (i / 4) + 2t + i % 2 of row rows[(i / 2) % 2].
#pragma unroll
      for (int i = 0; i < Bc / 2; ++i) {
        const int64_t key = key0 + 8 * (i / 4) + 2 * t + (i & 1), row = rows[(i / 2) % 2];
        const float p =
            key <= row && row < seq ? exp2f(s[i] * scale_log2 - lse2[(i / 2) % 2]) : 0.0f;
        s[i] = p * (dp[i] - dr[(i / 2) % 2]); // dS
      }
      uint32_t da[Bc / 16][4];
      flash_sm90::pack_a<Bc>(da, s);
      wgmma_fence_operands(acc);
      wgmma_fence();
      flash_sm90::gemm_pb<HD, Bc>(acc, da, ks); // dQ += dS K
      wgmma_commit();
      wgmma_wait<0>();
      wgmma_fence_operands(acc);
    }
    if (lane == 0) // the warp is done with the stage
      mbarrier_arrive(empty + st);
  }

  // Epilogue, staged through the K/V stages (16 padded rows a warp) once
  // both consumers are past their last GEMM.
  named_barrier_sync(1, 256);
  float out[HD / 8][4];
#pragma unroll
  for (int i = 0; i < HD / 2; ++i)
    out[i / 4][i % 4] = acc[i];
  const float sc[2] = {scale, scale};
  const int64_t q_stride = heads * HD;
  store_rows<HD>(out, sc, reinterpret_cast<bf16 *>(sk) + 16 * warp * (HD + 8),
                 dq + tile.q_off + tile.warp_row * q_stride, q_stride, seq - tile.warp_row, lane);
}

/// The backward's dQ on wgmma (overwritten), from lse and D.
template <int HD>
void flash_attention_dq_sm90(const __nv_bfloat16 *dout, const __nv_bfloat16 *q,
                             const __nv_bfloat16 *k, const __nv_bfloat16 *v, const float *lse,
                             const float *delta, __nv_bfloat16 *dq, int64_t batch, int64_t seq,
                             int64_t heads, int64_t kv_heads, float scale, cudaStream_t stream) {
  using C = FlashSm90DqTiles<HD>;
  constexpr auto kernel = &flash_attention_dq_sm90_kernel<HD>;
  allow_dynamic_shared<kernel>(C::kSmemBytes);
  const flash_sm90::BackwardMaps m = flash_sm90::backward_maps<HD>(
      q, dout, k, v, batch, seq, heads, kv_heads, C::kRows, C::kKeys);
  LLAMA_LAUNCH_SMEM(kernel,
                    dim3(unsigned(ceil_div(seq, int64_t(C::kRows))), unsigned(heads),
                         unsigned(batch)),
                    dim3(C::kThreads), C::kSmemBytes, stream, m.q, m.dout, m.k, m.v, lse, delta,
                    dq, seq, heads, kv_heads, scale, scale * flash::kLog2e);
}

// ---- the backward's dK/dV on wgmma ------------------------------------------
// flash_attention.cuh's deterministic dK/dV kernel rebuilt the same way as
// the forward: a block per (128 keys, KV head, batch) of a producer warpgroup and
// two consumer warpgroups of 64 keys each. The producer's first thread copies
// the block's K and V once and, for every (head of the group, query tile of
// 64 rows at or below the diagonal) step, the step's Q and dO tiles into a
// two-stage ring (TMA, 128-byte swizzle); all its 128 threads load the
// step's lse (log2 domain) and D, one value each, into the stage and arrive
// on its "full" mbarrier with the copy. A consumer, per step whose queries
// reach its keys:
//   S^T = K Q^T and dP^T = V dO^T: HD / 16 wgmma m64n64k16 each, both
//     operands K-major from shared memory (the forward's S = Q K^T with the
//     roles of the two tiles exchanged);
//   P^T = exp2(S^T scale_log2 - lse2) where query >= key and query < seq,
//     dS^T = P^T (dP^T - D), in registers (columns are queries: the stats
//     are read per column);
//   dV += P^T dO and dK += dS^T Q: 4 wgmma m64nHDk16 each, P^T and dS^T as
//     A fragments in registers, dO and Q read MN-major (the forward's P V);
// then releases the stage ("empty"). dK is scaled by `scale` at the end.
// No ping-pong here: the two consumers' step counts differ (the second's
// first query tile lies wholly above its keys and is skipped).
template <int HD> struct FlashSm90BwdTiles {
  static_assert(flash_sm90_supports(HD), "the wgmma attention takes head dims 64 and 128");
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kKeys = 64 * kConsumers; // a block
  static constexpr int kQueries = 64;           // a step
  static constexpr int kStages = 2;
  static constexpr int kProducerRegs = 24, kConsumerRegs = 240;
  static constexpr size_t kKVBytes = size_t(kKeys) * HD * 2;   // K or V
  static constexpr size_t kQBytes = size_t(kQueries) * HD * 2; // one Q or dO stage
  static constexpr size_t kStats = 2 * kKVBytes + 2 * kStages * kQBytes;
  static constexpr size_t kStatBytes = size_t(2) * kQueries * 4; // lse2 and D of a stage
  static constexpr size_t kBarriers = kStats + kStages * kStatBytes;
  static constexpr size_t kSmemBytes = kBarriers + 64; // K/V full, full and empty per stage
  static_assert(8 * (1 + 2 * kStages) <= 64);
  static_assert(size_t(8 * 16 * (HD + 8) * 2) <= 2 * kKVBytes, "epilogue staging");
  static_assert(kSmemBytes == size_t(flash_sm90_bwd_smem_bytes(HD)));
  static_assert(kKeys == flash_sm90_bwd_keys(HD) && kQueries == flash_sm90_bwd_query_rows(HD));
};

template <int HD>
__global__ void __launch_bounds__(FlashSm90BwdTiles<HD>::kThreads, 1)
    flash_attention_dkv_sm90_kernel(const __grid_constant__ TensorMap tq,
                                    const __grid_constant__ TensorMap tdo,
                                    const __grid_constant__ TensorMap tk,
                                    const __grid_constant__ TensorMap tv,
                                    const float *__restrict__ lse,
                                    const float *__restrict__ delta, __nv_bfloat16 *__restrict__ dk,
                                    __nv_bfloat16 *__restrict__ dv, int64_t seq, int64_t heads,
                                    int64_t kv_heads, float scale, float scale_log2) {
  using C = FlashSm90BwdTiles<HD>;
  using namespace flash;
  using flash_sm90::copy_tile, flash_sm90::wait_stage_free, flash_sm90::wait_stage_full;
  constexpr int Bk = C::kKeys, Bq = C::kQueries, S = C::kStages;
  LLK_DYNAMIC_SHARED(smem);
  unsigned char *const sk = smem;                     // Bk rows
  unsigned char *const sv = sk + C::kKVBytes;         // Bk rows
  unsigned char *const sq = sv + C::kKVBytes;         // S stages of Bq rows
  unsigned char *const sdo = sq + S * C::kQBytes;     // S stages of Bq rows
  float *const stats = reinterpret_cast<float *>(smem + C::kStats); // S x (lse2, D) x Bq
  uint64_t *const kv_full = reinterpret_cast<uint64_t *>(smem + C::kBarriers);
  uint64_t *const full = kv_full + 1, *const empty = full + S;

  const int wg = __shfl_sync(0xffffffffu, int(threadIdx.x) / 128, 0);
  const int64_t k0 = int64_t(blockIdx.x) * Bk; // key tile 0 (the most queries) first
  const int64_t kvh = blockIdx.y, b = blockIdx.z, group = heads / kv_heads;
  const int64_t first = k0 / Bq, per_head = ceil_div(seq, int64_t(Bq)) - first;
  const int64_t steps = group * per_head; // (head, query tile) pairs, head-major

  if (threadIdx.x == 0) {
    mbarrier_init(kv_full, 1);
    for (int st = 0; st < S; ++st) {
      mbarrier_init(full + st, 1 + 128); // the copies' arrival, then each producer thread's
      mbarrier_init(empty + st, 4 * C::kConsumers);
    }
    fence_mbarrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    // The producer.
    setmaxnreg_dec<C::kProducerRegs>();
    const int pt = int(threadIdx.x);
    if (pt == 0) {
      mbarrier_arrive_expect_tx(kv_full, uint32_t(2 * C::kKVBytes));
      copy_tile<HD, Bk>(sk, tk, int(kvh), int(k0), int(b), kv_full);
      copy_tile<HD, Bk>(sv, tv, int(kvh), int(k0), int(b), kv_full);
    }
    for (int64_t n = 0; n < steps; ++n) {
      const int st = wait_stage_free<S>(empty, n); // every producer thread writes the stage
      const int64_t h = kvh * group + n / per_head, q0 = (first + n % per_head) * Bq;
      if (pt == 0) {
        mbarrier_arrive_expect_tx(full + st, uint32_t(2 * C::kQBytes));
        copy_tile<HD, Bq>(sq + st * C::kQBytes, tq, int(h), int(q0), int(b), full + st);
        copy_tile<HD, Bq>(sdo + st * C::kQBytes, tdo, int(h), int(q0), int(b), full + st);
      }
      // Thread pt: lse2 (pt < Bq) or D (pt >= Bq) of query q0 + pt % Bq.
      const int64_t query = q0 + pt % Bq, stat = (b * heads + h) * seq + query;
      float x = 0.0f; // rows past seq: their P is masked to 0
      if (query < seq)
        x = pt < Bq ? lse[stat] * kLog2e : delta[stat];
      stats[st * 2 * Bq + pt] = x;
      mbarrier_arrive(full + st);
    }
    return;
  }

  // A consumer: keys kw0 .. kw0 + 63 of the block.
  setmaxnreg_inc<C::kConsumerRegs>();
  const int c = wg - 1, warp = int(threadIdx.x) / 32 - 4, lane = int(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t kw0 = k0 + 64 * c, warp_key = kw0 + 16 * (warp % 4);
  const int64_t keys[2] = {warp_key + g, warp_key + g + 8};
  unsigned char *const k_rows = sk + 64 * c * 128, *const v_rows = sv + 64 * c * 128;
  float dkacc[HD / 2], dvacc[HD / 2];
#pragma unroll
  for (int i = 0; i < HD / 2; ++i)
    dkacc[i] = dvacc[i] = 0.0f;
  mbarrier_wait(kv_full, 0);

  for (int64_t n = 0; n < steps; ++n) {
    const int st = wait_stage_full<S>(full, n);
    const int64_t q0 = (first + n % per_head) * Bq;
    if (q0 + Bq - 1 >= kw0) { // some query of the tile sees a key of the warpgroup
      const unsigned char *const qs = sq + st * C::kQBytes, *const dos = sdo + st * C::kQBytes;
      const float *const lse2 = stats + st * 2 * Bq, *const dd = lse2 + Bq;
      float s[Bq / 2], dp[Bq / 2];
      wgmma_fence();
      flash_sm90::gemm_abt<Bq, HD, Bk, Bq>(s, k_rows, qs);   // S^T = K Q^T
      flash_sm90::gemm_abt<Bq, HD, Bk, Bq>(dp, v_rows, dos); // dP^T = V dO^T
      wgmma_commit();
      wgmma_wait<0>();
      wgmma_fence_operands(s);
      wgmma_fence_operands(dp);
      // s[i], dp[i]: key keys[(i / 2) % 2], query q0 + 8 (i / 4) + 2t + i % 2.
      // A column's stats are read by every lane, unconditionally (one
      // broadcast request per column pair of the quad, no divergence).
#pragma unroll
      for (int c8 = 0; c8 < Bq / 8; ++c8)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = 8 * c8 + 2 * t + e;
          const float l2 = shared_ld(lse2[col]), dcol = shared_ld(dd[col]);
          const int64_t query = q0 + col;
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int i = 4 * c8 + 2 * r + e;
            const float p =
                query >= keys[r] && query < seq ? exp2f(s[i] * scale_log2 - l2) : 0.0f;
            s[i] = p;                    // P^T
            dp[i] = p * (dp[i] - dcol);  // dS^T
          }
        }
      uint32_t pa[Bq / 16][4], da[Bq / 16][4];
      flash_sm90::pack_a<Bq>(pa, s);
      flash_sm90::pack_a<Bq>(da, dp);
      wgmma_fence_operands(dvacc);
      wgmma_fence_operands(dkacc);
      wgmma_fence();
      flash_sm90::gemm_pb<HD, Bq>(dvacc, pa, dos); // dV += P^T dO
      flash_sm90::gemm_pb<HD, Bq>(dkacc, da, qs);  // dK += dS^T Q
      wgmma_commit();
      wgmma_wait<0>();
      wgmma_fence_operands(dvacc);
      wgmma_fence_operands(dkacc);
    }
    if (lane == 0) // the warp is done with the stage (its reads of the stats too)
      mbarrier_arrive(empty + st);
  }

  // Epilogue, staged through K and V (16 padded rows a warp) once both
  // consumers are past their last GEMM.
  named_barrier_sync(1, 256);
  const int64_t kv_stride = kv_heads * HD, kv_off = (b * seq * kv_heads + kvh) * HD;
  bf16 *const stage = reinterpret_cast<bf16 *>(smem) + 16 * warp * (HD + 8);
  float out[HD / 8][4];
  const float one[2] = {1.0f, 1.0f}, sc[2] = {scale, scale};
#pragma unroll
  for (int i = 0; i < HD / 2; ++i)
    out[i / 4][i % 4] = dkacc[i];
  store_rows<HD>(out, sc, stage, dk + kv_off + warp_key * kv_stride, kv_stride, seq - warp_key,
                 lane);
  __syncwarp(); // every lane has read its staged dK rows
#pragma unroll
  for (int i = 0; i < HD / 2; ++i)
    out[i / 4][i % 4] = dvacc[i];
  store_rows<HD>(out, one, stage, dv + kv_off + warp_key * kv_stride, kv_stride, seq - warp_key,
                 lane);
}

/// The backward's dK and dV on wgmma (overwritten), from lse and D.
template <int HD>
void flash_attention_dkv_sm90(const __nv_bfloat16 *dout, const __nv_bfloat16 *q,
                              const __nv_bfloat16 *k, const __nv_bfloat16 *v, const float *lse,
                              const float *delta, __nv_bfloat16 *dk, __nv_bfloat16 *dv,
                              int64_t batch, int64_t seq, int64_t heads, int64_t kv_heads,
                              float scale, cudaStream_t stream) {
  using C = FlashSm90BwdTiles<HD>;
  constexpr auto kernel = &flash_attention_dkv_sm90_kernel<HD>;
  allow_dynamic_shared<kernel>(C::kSmemBytes);
  const flash_sm90::BackwardMaps m = flash_sm90::backward_maps<HD>(
      q, dout, k, v, batch, seq, heads, kv_heads, C::kQueries, C::kKeys);
  LLAMA_LAUNCH_SMEM(kernel,
                    dim3(unsigned(ceil_div(seq, int64_t(C::kKeys))), unsigned(kv_heads),
                         unsigned(batch)),
                    dim3(C::kThreads), C::kSmemBytes, stream, m.q, m.dout, m.k, m.v, lse, delta,
                    dk, dv, seq, heads, kv_heads, scale, scale * flash::kLog2e);
}

/// The backward on wgmma (HD 64 or 128): dq [batch, seq, heads, HD], dk and
/// dv [batch, seq, kv_heads, HD] overwritten; `workspace` holds D
/// (attention_backward_workspace_bytes). The D pre-pass (memory-bound) is
/// flash_attention.cuh's; dQ and dK/dV the kernels above.
template <int HD>
void flash_attention_backward_sm90(const __nv_bfloat16 *dout, const __nv_bfloat16 *q,
                                   const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                                   const __nv_bfloat16 *o, const float *lse, __nv_bfloat16 *dq,
                                   __nv_bfloat16 *dk, __nv_bfloat16 *dv, int64_t batch,
                                   int64_t seq, int64_t heads, int64_t kv_heads, float scale,
                                   void *workspace, cudaStream_t stream) {
  float *delta = static_cast<float *>(workspace);
  flash_attention_delta<HD>(dout, o, delta, batch, seq, heads, stream);
  flash_attention_dq_sm90<HD>(dout, q, k, v, lse, delta, dq, batch, seq, heads, kv_heads, scale,
                              stream);
  flash_attention_dkv_sm90<HD>(dout, q, k, v, lse, delta, dk, dv, batch, seq, heads, kv_heads,
                               scale, stream);
}

} // namespace llk
