// The vocabulary-parallel cross-entropy of tensor-parallel programs
// (Megatron's): each tp rank holds V columns of the logits (its slice of the
// vocabulary, starting at column col0); the pieces below compute the loss
// without gathering the logits, with all-reduces over tp between them (the
// program's collectives):
//
//   logits_max:         m_r = max_j l_rj over this rank's columns (then Max
//                       all-reduce)
//   partial_sums:       (S_r = sum_j exp(l_rj - m_r), the target's logit if
//                       this rank holds its column, else 0) (then Sum)
//   count_valid:        the scored rows of this rank's batch (then Sum over dp)
//   combine:            loss = 1/count * sum over scored rows of
//                       log S_r + m_r - target logit
//   combine_grad:       dsums_r = (g / S_r, -g) for scored rows, g = dloss/count
//   partial_sums_grad:  dlogits_rj = dsums_r.0 exp(l_rj - m_r), + dsums_r.1 at
//                       the target's column (may overwrite the logits)
//
// Memory traffic: the logits are read twice (max, then sums) and, in the
// backward, read and written once; the rest is per row. Row kernels: one
// block per row, threads striding over it, block reductions in a fixed order
// (deterministic, no atomics). A target outside the whole vocabulary makes
// the row's sum NaN (so the loss is NaN and the trainer stops), as the
// single-device cross-entropy does.
#pragma once

#include "runtime/cuda/kernels/common.cuh"

namespace llk::cep {

template <typename T, int64_t V, int kThreads>
__global__ void __launch_bounds__(kThreads)
    logits_max_kernel(const T *__restrict__ x, float *__restrict__ mx) {
  const int64_t row = int64_t(blockIdx.x) * V;
  float m = -__int_as_float(0x7f800000);
  for (int64_t j = threadIdx.x; j < V; j += kThreads) {
    const float e = ld(x, row + j);
    m = e > m ? e : m;
  }
  m = block_max(m);
  if (threadIdx.x == 0)
    mx[blockIdx.x] = m;
}

template <typename T, int64_t V, int kThreads>
__global__ void __launch_bounds__(kThreads)
    partial_sums_kernel(const T *__restrict__ x, const float *__restrict__ mx,
                        const int32_t *__restrict__ targets, float *__restrict__ sums,
                        int64_t col0, int64_t ignore, int64_t vocab) {
  const int64_t row = int64_t(blockIdx.x) * V;
  const float m = mx[blockIdx.x];
  float s = 0.0f;
  for (int64_t j = threadIdx.x; j < V; j += kThreads)
    s += __expf(ld(x, row + j) - m);
  s = block_sum(s);
  if (threadIdx.x != 0)
    return;
  const int64_t t = targets[blockIdx.x], local = t - col0;
  const bool bad = t != ignore && (t < 0 || t >= vocab);
  sums[2 * blockIdx.x] = bad ? __int_as_float(0x7fc00000) : s;
  sums[2 * blockIdx.x + 1] = t != ignore && local >= 0 && local < V ? ld(x, row + local) : 0.0f;
}

template <typename T, int64_t V>
__global__ void __launch_bounds__(kElementwiseThreads)
    partial_sums_grad_kernel(const float *__restrict__ ds, const T *x,
                             const float *__restrict__ mx, const int32_t *__restrict__ targets,
                             T *dx, int64_t col0, int64_t ignore, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * kElementwiseThreads + threadIdx.x;
  if (i >= n)
    return;
  const int64_t r = i / V, j = i % V;
  const int64_t t = targets[r];
  float g = ds[2 * r] * __expf(ld(x, i) - mx[r]);
  if (t != ignore && t - col0 == j)
    g += ds[2 * r + 1];
  st(dx, i, g);
}

constexpr int kOneBlock = 1024; // threads of the one-block row-sum kernels

// (Templates over the block size: kernels defined in a header.)
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    count_valid_kernel(const int32_t *__restrict__ targets, float *__restrict__ count,
                       int64_t n, int64_t ignore) {
  float k = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads)
    k += targets[i] != ignore ? 1.0f : 0.0f;
  k = block_sum(k);
  if (threadIdx.x == 0)
    count[0] = k;
}

template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    combine_kernel(const float *__restrict__ mx, const float *__restrict__ sums,
                   const int32_t *__restrict__ targets, const float *__restrict__ count,
                   float *__restrict__ loss, int64_t rows, int64_t ignore) {
  float total = 0.0f;
  for (int64_t r = threadIdx.x; r < rows; r += kThreads)
    if (targets[r] != ignore)
      total += logf(sums[2 * r]) + mx[r] - sums[2 * r + 1];
  total = block_sum(total);
  if (threadIdx.x == 0)
    loss[0] = count[0] > 0.0f ? total / count[0] : 0.0f;
}

template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    combine_grad_kernel(const float *__restrict__ dloss, const float *__restrict__ sums,
                        const int32_t *__restrict__ targets, const float *__restrict__ count,
                        float *__restrict__ ds, int64_t rows, int64_t ignore) {
  const int64_t r = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (r >= rows)
    return;
  const float g = count[0] > 0.0f ? dloss[0] / count[0] : 0.0f;
  const bool scored = targets[r] != ignore;
  ds[2 * r] = scored ? g / sums[2 * r] : 0.0f;
  ds[2 * r + 1] = scored ? -g : 0.0f;
}

// ---- launchers: `rows` rows of V logits ------------------------------------

template <typename T, int64_t V>
void logits_max(const T *x, float *mx, int64_t rows, cudaStream_t stream) {
  constexpr int kThreads = row_threads(V);
  auto *kernel = &logits_max_kernel<T, V, kThreads>;
  LLAMA_LAUNCH(kernel, dim3(unsigned(rows)), dim3(kThreads), stream, x, mx);
}

template <typename T, int64_t V>
void partial_sums(const T *x, const float *mx, const int32_t *targets, float *sums,
                  int64_t rows, int64_t col0, int64_t ignore, int64_t vocab,
                  cudaStream_t stream) {
  constexpr int kThreads = row_threads(V);
  auto *kernel = &partial_sums_kernel<T, V, kThreads>;
  LLAMA_LAUNCH(kernel, dim3(unsigned(rows)), dim3(kThreads), stream, x, mx, targets, sums,
               col0, ignore, vocab);
}

template <typename T, int64_t V>
void partial_sums_grad(const float *ds, const T *x, const float *mx, const int32_t *targets,
                       T *dx, int64_t rows, int64_t col0, int64_t ignore, cudaStream_t stream) {
  auto *kernel = &partial_sums_grad_kernel<T, V>;
  LLAMA_LAUNCH(kernel, dim3(unsigned(ceil_div(rows * V, kElementwiseThreads))),
               dim3(kElementwiseThreads), stream, ds, x, mx, targets, dx, col0, ignore,
               rows * V);
}

inline void count_valid(const int32_t *targets, float *count, int64_t n, int64_t ignore,
                        cudaStream_t stream) {
  auto *kernel = &count_valid_kernel<kOneBlock>;
  LLAMA_LAUNCH(kernel, dim3(1), dim3(kOneBlock), stream, targets, count, n, ignore);
}

inline void combine(const float *mx, const float *sums, const int32_t *targets,
                    const float *count, float *loss, int64_t rows, int64_t ignore,
                    cudaStream_t stream) {
  auto *kernel = &combine_kernel<kOneBlock>;
  LLAMA_LAUNCH(kernel, dim3(1), dim3(kOneBlock), stream, mx, sums, targets, count, loss, rows,
               ignore);
}

inline void combine_grad(const float *dloss, const float *sums, const int32_t *targets,
                         const float *count, float *ds, int64_t rows, int64_t ignore,
                         cudaStream_t stream) {
  auto *kernel = &combine_grad_kernel<kElementwiseThreads>;
  LLAMA_LAUNCH(kernel, dim3(unsigned(ceil_div(rows, kElementwiseThreads))),
               dim3(kElementwiseThreads), stream, dloss, sums, targets, count, ds, rows, ignore);
}

} // namespace llk::cep
