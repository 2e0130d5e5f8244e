// Causal grouped-query attention for training (llama.attention and
// llama.attention_grad), the CUDA-core version: one warp per query row.
// The tensor-core flash attention (FlashAttention-2 tiling, K/V through
// shared memory, mma) replaces it in the next issue; this file is its
// reference and the baseline it is measured against.
//
//   q [batch, seq, heads, HD], k and v [batch, seq, kv_heads, HD], query head
//   h reads KV head h / G (G = heads / kv_heads);
//   o_i = sum_{j <= i} softmax_j(scale q_i . k_j) v_j, lse_i = its logsumexp.
//
// Forward: lane l of the row's warp holds elements l, l + 32, ... of q_i
// (kSlots per lane) and of the output accumulator; an online softmax over
// the keys j <= i (running max m, sum l, rescaled accumulator), each key's
// dot product a warp sum. Output and logsumexp are written once; no
// seq x seq matrix exists anywhere. Memory traffic: every query row reads
// all its keys and values from global memory (L2 serves the reuse): O(seq^2
// HD) reads, which is why the tiled kernel exists.
//
// Backward, without atomics: one kernel per query row computes
// D_i = dO_i . O_i (into the workspace) and dQ_i; a second, per key row of a
// KV head, sums dK and dV over the query rows i >= j of every query head in
// its group. Probabilities are recomputed from the saved logsumexp in both.
#pragma once

#include "runtime/cuda/kernels/common.cuh"

namespace llk {

constexpr int kAttnWarps = 4; // query (or key) rows per block

template <int64_t HD> constexpr int kAttnSlots = int((HD + 31) / 32);

/// Element e of row `row` (of HD) for every slot of this lane.
#define LLK_ATTN_SLOTS(body)                                                   \
  _Pragma("unroll") for (int t = 0; t < kAttnSlots<HD>; ++t) {                 \
    const int e = lane + 32 * t;                                               \
    if (e < HD) {                                                              \
      body;                                                                    \
    }                                                                          \
  }

template <typename T, int64_t HD>
__global__ void __launch_bounds__(32 * kAttnWarps)
    attention_forward_kernel(const T *__restrict__ q, const T *__restrict__ k,
                             const T *__restrict__ v, T *__restrict__ o,
                             float *__restrict__ lse, int64_t seq, int64_t heads,
                             int64_t kv_heads, float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t i = int64_t(blockIdx.x) * kAttnWarps + (threadIdx.x >> 5), h = blockIdx.y,
                b = blockIdx.z, g = h / (heads / kv_heads);
  if (i >= seq)
    return; // the whole warp
  const int64_t qrow = ((b * seq + i) * heads + h) * HD;
  float qr[kAttnSlots<HD>], acc[kAttnSlots<HD>];
  LLK_ATTN_SLOTS(qr[t] = ld(q, qrow + e));
  for (int t = 0; t < kAttnSlots<HD>; ++t)
    acc[t] = 0.0f;
  float m = -__int_as_float(0x7f800000), l = 0.0f;
  for (int64_t j = 0; j <= i; ++j) {
    const int64_t krow = ((b * seq + j) * kv_heads + g) * HD;
    float s = 0.0f;
    LLK_ATTN_SLOTS(s += qr[t] * ld(k, krow + e));
    s = warp_sum(s) * scale;
    const float mn = s > m ? s : m;
    const float corr = __expf(m - mn), p = __expf(s - mn);
    l = l * corr + p;
    LLK_ATTN_SLOTS(acc[t] = acc[t] * corr + p * ld(v, krow + e));
    m = mn;
  }
  LLK_ATTN_SLOTS(st(o, qrow + e, acc[t] / l));
  if (lane == 0)
    lse[(b * heads + h) * seq + i] = m + logf(l);
}

template <typename T, int64_t HD>
__global__ void __launch_bounds__(32 * kAttnWarps)
    attention_dq_kernel(const T *__restrict__ dout, const T *__restrict__ q,
                        const T *__restrict__ k, const T *__restrict__ v,
                        const T *__restrict__ o, const float *__restrict__ lse,
                        T *__restrict__ dq, float *__restrict__ delta, int64_t seq,
                        int64_t heads, int64_t kv_heads, float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t i = int64_t(blockIdx.x) * kAttnWarps + (threadIdx.x >> 5), h = blockIdx.y,
                b = blockIdx.z, g = h / (heads / kv_heads);
  if (i >= seq)
    return;
  const int64_t qrow = ((b * seq + i) * heads + h) * HD;
  const int64_t stat = (b * heads + h) * seq + i;
  float qr[kAttnSlots<HD>], dor[kAttnSlots<HD>], acc[kAttnSlots<HD>];
  float d = 0.0f;
  LLK_ATTN_SLOTS(qr[t] = ld(q, qrow + e); dor[t] = ld(dout, qrow + e);
                 d += dor[t] * ld(o, qrow + e));
  for (int t = 0; t < kAttnSlots<HD>; ++t)
    acc[t] = 0.0f;
  d = warp_sum(d);
  if (lane == 0)
    delta[stat] = d;
  const float L = lse[stat];
  for (int64_t j = 0; j <= i; ++j) {
    const int64_t krow = ((b * seq + j) * kv_heads + g) * HD;
    float s = 0.0f, dp = 0.0f;
    LLK_ATTN_SLOTS(s += qr[t] * ld(k, krow + e); dp += dor[t] * ld(v, krow + e));
    const float p = __expf(warp_sum(s) * scale - L);
    const float ds = p * (warp_sum(dp) - d);
    LLK_ATTN_SLOTS(acc[t] += ds * ld(k, krow + e));
  }
  LLK_ATTN_SLOTS(st(dq, qrow + e, acc[t] * scale));
}

template <typename T, int64_t HD>
__global__ void __launch_bounds__(32 * kAttnWarps)
    attention_dkv_kernel(const T *__restrict__ dout, const T *__restrict__ q,
                         const T *__restrict__ k, const T *__restrict__ v,
                         const float *__restrict__ lse, const float *__restrict__ delta,
                         T *__restrict__ dk, T *__restrict__ dv, int64_t seq, int64_t heads,
                         int64_t kv_heads, float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t j = int64_t(blockIdx.x) * kAttnWarps + (threadIdx.x >> 5), g = blockIdx.y,
                b = blockIdx.z, group = heads / kv_heads;
  if (j >= seq)
    return;
  const int64_t krow = ((b * seq + j) * kv_heads + g) * HD;
  float kr[kAttnSlots<HD>], vr[kAttnSlots<HD>], dkacc[kAttnSlots<HD>], dvacc[kAttnSlots<HD>];
  LLK_ATTN_SLOTS(kr[t] = ld(k, krow + e); vr[t] = ld(v, krow + e));
  for (int t = 0; t < kAttnSlots<HD>; ++t)
    dkacc[t] = dvacc[t] = 0.0f;
  for (int64_t h = g * group; h < (g + 1) * group; ++h)
    for (int64_t i = j; i < seq; ++i) {
      const int64_t qrow = ((b * seq + i) * heads + h) * HD;
      const int64_t stat = (b * heads + h) * seq + i;
      float s = 0.0f, dp = 0.0f;
      LLK_ATTN_SLOTS(s += ld(q, qrow + e) * kr[t]; dp += ld(dout, qrow + e) * vr[t]);
      const float p = __expf(warp_sum(s) * scale - lse[stat]);
      const float ds = p * (warp_sum(dp) - delta[stat]);
      LLK_ATTN_SLOTS(dkacc[t] += ds * ld(q, qrow + e); dvacc[t] += p * ld(dout, qrow + e));
    }
  LLK_ATTN_SLOTS(st(dk, krow + e, dkacc[t] * scale); st(dv, krow + e, dvacc[t]));
}

#undef LLK_ATTN_SLOTS

template <typename T, int64_t HD>
void attention_forward(const T *q, const T *k, const T *v, T *o, float *lse, int64_t batch,
                       int64_t seq, int64_t heads, int64_t kv_heads, float scale,
                       cudaStream_t stream) {
  auto *kernel = &attention_forward_kernel<T, HD>;
  LLAMA_LAUNCH(kernel, dim3(unsigned(ceil_div(seq, kAttnWarps)), unsigned(heads),
                            unsigned(batch)),
               dim3(32 * kAttnWarps), stream, q, k, v, o, lse, seq, heads, kv_heads, scale);
}

template <typename T, int64_t HD>
void attention_backward(const T *dout, const T *q, const T *k, const T *v, const T *o,
                        const float *lse, T *dq, T *dk, T *dv, int64_t batch, int64_t seq,
                        int64_t heads, int64_t kv_heads, float scale, void *workspace,
                        cudaStream_t stream) {
  // workspace: attention_backward_workspace_bytes (shapes.h), D_i per row.
  float *delta = static_cast<float *>(workspace);
  auto *dq_kernel = &attention_dq_kernel<T, HD>;
  LLAMA_LAUNCH(dq_kernel, dim3(unsigned(ceil_div(seq, kAttnWarps)), unsigned(heads),
                               unsigned(batch)),
               dim3(32 * kAttnWarps), stream, dout, q, k, v, o, lse, dq, delta, seq, heads,
               kv_heads, scale);
  auto *dkv_kernel = &attention_dkv_kernel<T, HD>;
  LLAMA_LAUNCH(dkv_kernel, dim3(unsigned(ceil_div(seq, kAttnWarps)), unsigned(kv_heads),
                                unsigned(batch)),
               dim3(32 * kAttnWarps), stream, dout, q, k, v, lse, delta, dk, dv, seq, heads,
               kv_heads, scale);
}

} // namespace llk
