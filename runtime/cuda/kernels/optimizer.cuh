// The optimizer family (the device training session's kernels,
// runtime/cuda/session.cu): gradient accumulation, the global gradient norm
// and the multi-tensor AdamW over the flat parameter, gradient and moment
// buffers.
//
//   accumulate: g += g2 (gradient accumulation's second buffer)
//   norm:       sum of g^2 over fixed chunks in fp64 (one block each), then
//               the chunk partials summed in index order: bitwise
//               reproducible, no atomics
//   AdamW:      per element, optimizer.h's arithmetic in fp64 (so the
//               update is the CPU optimizer's to the bit): m, v, then the
//               decoupled weight decay (2-D tensors) and the step; with bf16
//               storage the updated weight's bf16 copy is written in the
//               same pass.
//
// Memory traffic: AdamW reads 16 bytes (g, m, v, w) and writes 12 (+2 for
// the bf16 copy) per element, as 16-byte packs of 4 where a chunk is
// aligned; the fp64 math stays far below that traffic. The tables of chunks
// (one per block) make every tensor of the model one launch (apex/torch's
// multi-tensor apply).
#pragma once

#include "runtime/cuda/kernels/common.cuh"

#include <cmath>

namespace llk::optim {

constexpr int kThreads = 256;
// Elements per block of the norm's first pass and of the AdamW chunks
// (runtime/cuda/layout.h sizes the chunk tables by it).
constexpr int64_t kChunk = 8192;

// dst += src.
__global__ void __launch_bounds__(kThreads)
    accumulate_k(float *__restrict__ dst, const float *__restrict__ src, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i < n)
    dst[i] += src[i];
}

// A piece of the flat buffer: the gradient norm and AdamW run over tables of
// these in one launch each (every tensor of the model in one kernel, the
// multi-tensor apply of apex/torch's fused AdamW), one block per chunk.
struct Chunk {
  int64_t begin; // in the gradient/moment arrays (shard coordinates)
  int64_t count;
  int32_t decays;
  int64_t flat; // the same elements in the flat local buffer (AdamW's weights)
};
static_assert(sizeof(Chunk) == 32, "runtime/cuda/layout.h sizes the tables by it");

// The block's values summed by a fixed binary tree in fp64; thread 0 gets
// the total (the order never depends on timing).
__device__ __forceinline__ double tree_sum(double s) {
  __shared__ double tree[kThreads];
  tree[threadIdx.x] = s;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (int(threadIdx.x) < half)
      tree[threadIdx.x] += tree[threadIdx.x + half];
    __syncthreads();
  }
  return tree[0];
}

// Block b: the sum of squares of chunk b of g in fp64, each thread over a
// fixed stride, then a fixed tree over the threads.
__global__ void __launch_bounds__(kThreads)
    sumsq_k(const Chunk *__restrict__ chunks, const float *__restrict__ g,
            double *__restrict__ partial) {
  const Chunk c = chunks[blockIdx.x];
  double s = 0.0;
  for (int64_t i = c.begin + threadIdx.x; i < c.begin + c.count; i += kThreads) {
    const double x = g[i];
    s += x * x;
  }
  s = tree_sum(s);
  if (threadIdx.x == 0)
    partial[blockIdx.x] = s;
}

// One block: the partials summed by a fixed stride per thread and a fixed
// tree, into *total.
__global__ void __launch_bounds__(kThreads)
    sum_k(const double *__restrict__ partial, int64_t n, double *__restrict__ total) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads)
    s += partial[i];
  s = tree_sum(s);
  if (threadIdx.x == 0)
    *total = s;
}

struct AdamWArgs {
  double beta1, beta2, eps, step_size, bias2_sqrt, decay_factor, grad_scale;
};

// The storage-type copy of the parameters (bf16 programs).
template <typename act_t>
__global__ void __launch_bounds__(kThreads)
    to_storage_k(const float *__restrict__ src, act_t *__restrict__ dst, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i < n)
    st(dst, i, src[i]);
}

// optimizer.h's arithmetic in fp64 for one element (so the update is the
// CPU optimizer's to the bit); the fp64 math is far below the memory
// traffic (16 bytes read and 12-14 written per element).
__device__ __forceinline__ void adamw_update(const AdamWArgs &a, double decay, float g,
                                             float &m, float &v, float &w) {
  const double gi = double(g) * a.grad_scale;
  m = float(a.beta1 * double(m) + (1.0 - a.beta1) * gi);
  v = float(a.beta2 * double(v) + (1.0 - a.beta2) * gi * gi);
  const double wi = double(w) * decay;
  w = float(wi - a.step_size * double(m) / (sqrt(double(v)) / a.bias2_sqrt + a.eps));
}

// The multi-tensor AdamW: one block per chunk; with `w_copy` the updated
// weight is also stored there in the storage type (flat coordinates). `w` is
// in shard coordinates when `w_sharded` (the masters of the shard alone),
// flat otherwise. Vectorized: elements go four at a time as 16-byte packs of
// grad, m, v and w (8 bytes of a bf16 copy); a chunk's unaligned head and its
// tail go one element at a time. Shard and flat coordinates of an element
// agree modulo 4 (ZeRO-1 pieces start at multiples of 64 elements), so one
// alignment test covers every array.
template <typename act_t>
__global__ void __launch_bounds__(kThreads)
    adamw_k(const Chunk *__restrict__ chunks, AdamWArgs a, float *__restrict__ w,
            bool w_sharded, const float *__restrict__ grad, float *__restrict__ m,
            float *__restrict__ v, act_t *__restrict__ w_copy) {
  constexpr int P = 4;
  const Chunk c = chunks[blockIdx.x];
  const double decay = c.decays ? a.decay_factor : 1.0;
  const int64_t shift = w_sharded ? 0 : c.flat - c.begin; // w index - shard index
  auto scalar = [&](int64_t j) {
    const int64_t i = c.begin + j, f = c.flat + j;
    float mi = m[i], vi = v[i], wi = w[i + shift];
    adamw_update(a, decay, grad[i], mi, vi, wi);
    m[i] = mi;
    v[i] = vi;
    w[i + shift] = wi;
    if (w_copy)
      st(w_copy, f, wi);
  };
  const bool aligned = (c.begin - c.flat) % P == 0;
  const int64_t head = aligned ? llk::min_i64((P - c.begin % P) % P, c.count) : c.count;
  const int64_t packs = (c.count - head) / P;
  for (int64_t j = threadIdx.x; j < head; j += kThreads)
    scalar(j);
  for (int64_t k = threadIdx.x; k < packs; k += kThreads) {
    const int64_t j = head + k * P, i = c.begin + j, f = c.flat + j;
    const llk::Pack<float, P> g = llk::load<P>(grad + i);
    llk::Pack<float, P> mp = llk::load<P>(m + i), vp = llk::load<P>(v + i),
                        wp = llk::load<P>(w + i + shift);
#pragma unroll
    for (int e = 0; e < P; ++e)
      adamw_update(a, decay, g.v[e], mp.v[e], vp.v[e], wp.v[e]);
    llk::store<P>(m + i, mp);
    llk::store<P>(v + i, vp);
    llk::store<P>(w + i + shift, wp);
    if (w_copy) {
      llk::Floats<P> wf;
#pragma unroll
      for (int e = 0; e < P; ++e)
        wf.v[e] = wp.v[e];
      llk::store_floats<P>(w_copy + f, wf);
    }
  }
  for (int64_t j = head + packs * P + threadIdx.x; j < c.count; j += kThreads)
    scalar(j);
}

} // namespace llk::optim
