// Attention of a chunk of new tokens over the KV cache: generation's decode
// (chunk 1) and prefill steps (llama.attention_cached).
//
//   the chunk's keys and values go to cache rows pos .. pos + T - 1, then
//   query i (position pos + i) of head h attends to cache rows 0 .. pos + i
//   of KV head h / G (G = heads / kv_heads query heads share a KV head):
//     o = sum_j softmax_j(scale * q . k_j) v_j
//
// The position is read from device memory: a CUDA Graph of the decode step
// replays with only the token and the position words rewritten.
//
// Memory traffic: decode is bound by reading the cache. Each block reads the
// K and V rows of one KV head once for all G query heads of its group (GQA
// shares the reads; per-head blocks would read them G times). Prefill reads
// the cache once per query row of the chunk: CUDA-core work, fine for the
// short chunks of interactive generation (long prompts are the tiled flash
// attention kernel's job).
//
// Work split (flash-decoding): one block of kDecodeWarps warps per (batch,
// query row, KV head, chunk of HB of its G query heads) and per split of the
// key range. HB (shapes.h: attention_cached_heads_per_block) bounds the
// per-thread state, HB * 2 packs of fp32 (q and the weighted V) plus HB
// maxima and sums: all G heads of a Llama-70B group (8) in one thread took
// 205 registers (12% occupancy, ptxas); the blocks of a row's head chunks
// run side by side and read its K/V rows once from DRAM, then from L2. In a warp, L lanes
// hold one key row as 16-byte packs of head_dim (L = head_dim / pack rounded
// up to a power of two) and the warp takes 32 / L keys per step; each lane
// group keeps an online softmax (running max, sum and weighted V, base 2
// with log2(e) folded into the scale) per query head of the group. Lane
// groups merge by shuffles, warps through shared memory; one split writes
// the output, several write a normalized partial and its log-sum-exp that
// attention_cached_merge combines. The split count is a compile-time
// constant the compiler picks so that the grid fills the GPU at batch 1
// (shapes.h: attention_cached_splits).
//
// Accuracy: fp32 scores and sums (the CPU kernel uses double); a split or a
// lane group with no key keeps max -1e30 and sum 0 and drops out of every
// merge with weight 0.
#pragma once

#include "runtime/cuda/kernels/common.cuh"

#include <cmath>

namespace llk {

constexpr int kDecodeWarps = 4;
constexpr float kNoScore = -1e30f; // the running max before any key

/// Lanes per key row: head_dim in packs, rounded up to a power of two.
template <typename T, int64_t HD> struct DecodeLanes {
  static constexpr int P = kPackFor<T, HD>;
  static constexpr int kPacks = int(HD / P);
  static constexpr int L = kPacks <= 1 ? 1 : kPacks <= 2 ? 2 : kPacks <= 4 ? 4
                           : kPacks <= 8 ? 8 : kPacks <= 16 ? 16 : 32;
  static constexpr int KW = 32 / L; // keys per warp step
  static_assert(kPacks <= 32, "attention_cached: head_dim over 32 packs (fp32 > 128, "
                              "bf16 > 256)");
};

/// k, v [batch, chunk, kv_heads, HD] into the caches [batch, capacity,
/// kv_heads, HD] at rows *pos ..: one 16-byte pack per thread, keys in
/// blockIdx.y 0 and values in 1 (a warp copies one tensor's contiguous run).
template <typename T, int64_t HD>
__global__ void __launch_bounds__(kElementwiseThreads)
    kv_append_kernel(const T *__restrict__ k, const T *__restrict__ v, T *kc, T *vc,
                     int64_t batch, int64_t chunk, int64_t kv_heads, int64_t capacity,
                     const int32_t *__restrict__ pos) {
  constexpr int P = kPackFor<T, HD>;
  const int64_t row = kv_heads * HD, packs = row / P, per = batch * chunk * packs;
  const int64_t item = int64_t(blockIdx.x) * kElementwiseThreads + threadIdx.x;
  if (item >= per)
    return;
  const bool value = blockIdx.y == 1;
  const int64_t bt = item / packs, p = item % packs, b = bt / chunk, t = bt % chunk;
  const int64_t at = int64_t(*pos) + t;
  if (at >= capacity)
    return; // the host checks the capacity before every call
  store<P>((value ? vc : kc) + (b * capacity + at) * row + p * P,
           load<P>((value ? v : k) + bt * row + p * P));
}

/// Merges (m, l, acc) with another lane group's state: the running max
/// rescales both sums.
template <int P>
__device__ __forceinline__ void softmax_merge(float &m, float &l, float (&acc)[P], float mo,
                                              float lo, const float (&acco)[P]) {
  const float mn = fmaxf(m, mo), a = exp2f(m - mn), b = exp2f(mo - mn);
  l = l * a + lo * b;
#pragma unroll
  for (int e = 0; e < P; ++e)
    acc[e] = acc[e] * a + acco[e] * b;
  m = mn;
}

/// Block (r * G / HB + c, split): r = (batch * chunk + i) * kv_heads + g, c
/// the chunk of HB heads. q and out are [rows * G, HD] in that order (heads =
/// kv_heads * G), the caches as above.
template <typename T, int64_t HD, int G, int HB, int kSplits>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    attention_cached_kernel(const T *__restrict__ q, const T *__restrict__ kc,
                            const T *__restrict__ vc, T *__restrict__ out,
                            float *__restrict__ part, float *__restrict__ lse, int64_t rows,
                            int64_t chunk, int64_t kv_heads, int64_t capacity,
                            const int32_t *__restrict__ pos, float scale_log2) {
  using D = DecodeLanes<T, HD>;
  constexpr int P = D::P, L = D::L, KW = D::KW;
  static_assert(G % HB == 0, "a block's heads divide the group");
  const int64_t r = blockIdx.x / (G / HB), g = r % kv_heads, bi = r / kv_heads;
  const int h0 = int(blockIdx.x % (G / HB)) * HB; // the block's first head of the group
  const int64_t b = bi / chunk, i = bi % chunk;
  const int split = int(blockIdx.y);
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int sub = lane & (L - 1), slot = lane / L;
  const bool holds = sub < D::kPacks; // lanes past head_dim's packs (L rounded up) idle
  const int64_t keys = min_i64(int64_t(*pos) + i + 1, capacity);
  const int64_t span = ceil_div(capacity, kSplits);
  const int64_t begin = split * span, end = min_i64(keys, begin + span);
  const int64_t row = kv_heads * HD;
  const T *kbase = kc + b * capacity * row + g * HD + sub * P;
  const T *vbase = vc + b * capacity * row + g * HD + sub * P;

  float qv[HB][P], m[HB], l[HB], acc[HB][P];
#pragma unroll
  for (int h = 0; h < HB; ++h) {
    Floats<P> f{};
    if (holds)
      f = load_floats<P>(q + (r * G + h0 + h) * HD + sub * P);
#pragma unroll
    for (int e = 0; e < P; ++e) {
      qv[h][e] = f.v[e] * scale_log2;
      acc[h][e] = 0.0f;
    }
    m[h] = kNoScore;
    l[h] = 0.0f;
  }
  // Every lane of a warp runs the same steps (full-mask shuffles); a lane
  // group past the end computes nothing into its state.
  for (int64_t j0 = begin + int64_t(warp) * KW; j0 < end; j0 += int64_t(kDecodeWarps) * KW) {
    const int64_t j = j0 + slot;
    const bool valid = j < end;
    Floats<P> kf{}, vf{};
    if (valid && holds) {
      kf = load_floats<P>(kbase + j * row);
      vf = load_floats<P>(vbase + j * row);
    }
    float s[HB];
#pragma unroll
    for (int h = 0; h < HB; ++h) {
      float dot = 0.0f;
#pragma unroll
      for (int e = 0; e < P; ++e)
        dot = fmaf(qv[h][e], kf.v[e], dot);
#pragma unroll
      for (int o = L / 2; o > 0; o >>= 1)
        dot += __shfl_xor_sync(0xffffffffu, dot, o);
      s[h] = dot;
    }
    if (valid) {
#pragma unroll
      for (int h = 0; h < HB; ++h) {
        const float mn = fmaxf(m[h], s[h]), c = exp2f(m[h] - mn), p = exp2f(s[h] - mn);
        l[h] = l[h] * c + p;
#pragma unroll
        for (int e = 0; e < P; ++e)
          acc[h][e] = fmaf(p, vf.v[e], acc[h][e] * c);
        m[h] = mn;
      }
    }
  }
  // The warp's lane groups, into slot 0's lanes.
#pragma unroll
  for (int o = L; o < 32; o <<= 1) {
#pragma unroll
    for (int h = 0; h < HB; ++h) {
      float ao[P];
      const float mo = __shfl_xor_sync(0xffffffffu, m[h], o);
      const float lo = __shfl_xor_sync(0xffffffffu, l[h], o);
#pragma unroll
      for (int e = 0; e < P; ++e)
        ao[e] = __shfl_xor_sync(0xffffffffu, acc[h][e], o);
      softmax_merge<P>(m[h], l[h], acc[h], mo, lo, ao);
    }
  }
  // The warps, through shared memory; then one thread per output element.
  __shared__ float sm[kDecodeWarps][HB], sl[kDecodeWarps][HB], sacc[kDecodeWarps][HB][HD];
  if (slot == 0 && holds) {
#pragma unroll
    for (int h = 0; h < HB; ++h) {
#pragma unroll
      for (int e = 0; e < P; ++e)
        shared_st(sacc[warp][h][sub * P + e], acc[h][e]);
      if (sub == 0) {
        shared_st(sm[warp][h], m[h]);
        shared_st(sl[warp][h], l[h]);
      }
    }
  }
  __syncthreads();
  for (int idx = int(threadIdx.x); idx < HB * int(HD); idx += kDecodeWarps * 32) {
    const int h = idx / int(HD), d = idx % int(HD);
    float mw[kDecodeWarps];
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w)
      mw[w] = shared_ld(sm[w][h]);
    float mx = mw[0];
#pragma unroll
    for (int w = 1; w < kDecodeWarps; ++w)
      mx = fmaxf(mx, mw[w]);
    float sum = 0.0f, o = 0.0f;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) {
      const float c = exp2f(mw[w] - mx);
      sum = fmaf(shared_ld(sl[w][h]), c, sum);
      o = fmaf(shared_ld(sacc[w][h][d]), c, o);
    }
    const float y = sum > 0.0f ? o / sum : 0.0f;
    if constexpr (kSplits == 1) {
      out[(r * G + h0 + h) * HD + d] = from_float<T>(y);
    } else {
      const int64_t at = (int64_t(split) * rows + r) * G + h0 + h;
      part[at * HD + d] = y;
      if (d == 0)
        lse[at] = sum > 0.0f ? mx + log2f(sum) : -INFINITY;
    }
  }
}

/// The splits' partials combined, one thread per output element: weights
/// 2^(lse_s - max lse), in split order.
template <typename T, int64_t HD, int G, int kSplits>
__global__ void __launch_bounds__(kElementwiseThreads)
    attention_cached_merge_kernel(const float *__restrict__ part, const float *__restrict__ lse,
                                  T *__restrict__ out, int64_t rows) {
  const int64_t idx = int64_t(blockIdx.x) * kElementwiseThreads + threadIdx.x;
  if (idx >= rows * G * HD)
    return;
  const int64_t rh = idx / HD, d = idx % HD; // rh = r * G + h
  float mx = -INFINITY;
#pragma unroll
  for (int s = 0; s < kSplits; ++s)
    mx = fmaxf(mx, lse[s * rows * G + rh]);
  float sum = 0.0f, o = 0.0f;
#pragma unroll
  for (int s = 0; s < kSplits; ++s) {
    const float w = exp2f(lse[s * rows * G + rh] - mx);
    sum += w;
    o = fmaf(w, part[(s * rows * G + rh) * HD + d], o);
  }
  out[idx] = from_float<T>(o / sum);
}

/// attention_cached: q [batch, chunk, kv_heads * G, HD], k and v [batch,
/// chunk, kv_heads, HD], the caches [batch, capacity, kv_heads, HD], out like
/// q; *pos the cache rows already filled. `workspace` holds
/// attention_cached_workspace_bytes(batch * chunk * kv_heads, G, HD, kSplits).
template <typename T, int64_t HD, int G, int kSplits>
void attention_cached(const T *q, const T *k, const T *v, T *kc, T *vc, T *out, int64_t batch,
                      int64_t chunk, int64_t kv_heads, int64_t capacity, const int32_t *pos,
                      float scale, void *workspace, cudaStream_t stream) {
  constexpr int P = kPackFor<T, HD>;
  const int64_t appends = batch * chunk * kv_heads * HD / P;
  auto *append = &kv_append_kernel<T, HD>;
  LLAMA_LAUNCH(append, dim3(unsigned(ceil_div(appends, kElementwiseThreads)), 2),
               dim3(kElementwiseThreads), stream, k, v, kc, vc, batch, chunk, kv_heads,
               capacity, pos);
  const int64_t rows = batch * chunk * kv_heads;
  constexpr int HB = int(attention_cached_heads_per_block(G, P));
  float *part = static_cast<float *>(workspace);
  float *lse = part + kSplits * rows * G * HD;
  constexpr float kLog2e = 1.4426950408889634f;
  auto *attend = &attention_cached_kernel<T, HD, G, HB, kSplits>;
  LLAMA_LAUNCH(attend, dim3(unsigned(rows * (G / HB)), kSplits),
               dim3(kDecodeWarps * 32), stream, q, kc, vc, out, part, lse, rows, chunk,
               kv_heads, capacity, pos, scale * kLog2e);
  if constexpr (kSplits > 1) {
    auto *merge = &attention_cached_merge_kernel<T, HD, G, kSplits>;
    LLAMA_LAUNCH(merge, dim3(unsigned(ceil_div(rows * G * HD, kElementwiseThreads))),
                 dim3(kElementwiseThreads), stream, part, lse, out, rows);
  }
}

} // namespace llk
