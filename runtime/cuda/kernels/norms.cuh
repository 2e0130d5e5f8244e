// RMSNorm forward (plain, with rstd, with the residual add) and backward.
//
//   forward   y = x * r * w,  r = 1 / sqrt(mean(x^2) + eps)   (per row of D)
//   add       s = a + c (stored, rounded to T), then the forward of s
//   backward  dx = r * w * dy - (r^3 / D) * dot(dy * w, x) * x (+ acc)
//             dw = sum over rows of dy * x * r
//             (r from the forward's rstd, or recomputed from x: unfused)
//
// Memory traffic per row element, in the storage type T (bf16: 2 bytes):
//   forward 1 read + 1 write (+ the add's second read and the sum's write);
//   backward 2 reads (dy, x) + 1 write (dx) (+ acc). w is read once per row
//   from L1/L2; rstd is one float per row; dw's partials are
//   chunks x D floats, a few MB at most, against rows x D elements.
// Each row is read from global memory once: it stays in registers between
// the reduction and the write (kMaxPacks 16-byte packs per thread at most,
// shapes.h), which is what makes the kernels bandwidth-bound rather than
// twice it.
//
// Launch shape: threads per row from the row's packs (shapes.h:
// row_threads); rows of a single warp go four to a block, larger rows get a
// block each and reduce with block_sum. The backward's blocks each own a
// chunk of rows and accumulate the weight gradient of their columns in
// registers across it; a second kernel adds the chunks' partials in chunk
// order. Deterministic: every sum has a fixed order, no atomics.
#pragma once

#include "runtime/cuda/kernels/common.cuh"

namespace llk {

/// How a row of D elements of T maps onto threads (see the file comment),
/// at most kMax packs per thread.
template <typename T, int64_t D, int kMax = kMaxPacks> struct RowLayout {
  static constexpr int kP = kPackFor<T, D>;           // elements per access
  static constexpr int64_t kPacks = D / kP;           // accesses per row
  static constexpr int kThreads = row_threads(kPacks, kMax); // threads per row
  static constexpr int kPer = int(ceil_div(kPacks, kThreads)); // packs per thread
  static constexpr int kRows = rows_per_block(kThreads);       // rows per block
  static constexpr int kBlock = kThreads * kRows;
  static_assert(kPer <= 4 * kMaxPacks, "row too long for one register tile");
};

/// Sum over the threads of one row: the warp when a row is one warp (no
/// block barrier, so warps of a block may hold different rows), else the block.
template <int kThreads> __device__ __forceinline__ float row_sum(float v) {
  if constexpr (kThreads == 32)
    return warp_sum(v);
  else
    return block_sum(v);
}

/// Forward. kAdd: s = a + c first (s may alias a or c: each element is read
/// before it is written, by the same thread). Without kAdd, `a` is x and c/s
/// are unused. rstd is written when not null (fp32 statistics).
template <typename T, int64_t D, bool kAdd>
__global__ void __launch_bounds__((RowLayout<T, D>::kBlock))
    rms_norm_forward_kernel(const T *a, const T *c, const T *__restrict__ w, T *s,
                            T *__restrict__ y, float *__restrict__ rstd, int64_t rows,
                            float eps) {
  using L = RowLayout<T, D>;
  constexpr int P = L::kP;
  const int lane = int(threadIdx.x) % L::kThreads;
  const int64_t row = int64_t(blockIdx.x) * L::kRows + threadIdx.x / L::kThreads;
  if (row >= rows)
    return; // a whole row group (L::kRows > 1 only: no block barriers then)
  const int64_t base = row * D;
  Floats<P> v[L::kPer];
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < L::kPer; ++k) {
    const int64_t p = lane + int64_t(k) * L::kThreads;
    if (p >= L::kPacks) {
      v[k] = Floats<P>{};
      continue;
    }
    if constexpr (kAdd) {
      const Floats<P> x1 = load_floats<P>(a + base + p * P);
      const Floats<P> x2 = load_floats<P>(c + base + p * P);
      Floats<P> sum;
#pragma unroll
      for (int e = 0; e < P; ++e)
        sum.v[e] = x1.v[e] + x2.v[e];
      // The stored (rounded) sum is what gets normalized, as on the CPU.
      const Pack<T, P> rounded = narrow<T>(sum);
      store<P>(s + base + p * P, rounded);
      v[k] = widen(rounded);
    } else {
      v[k] = load_floats<P>(a + base + p * P);
    }
#pragma unroll
    for (int e = 0; e < P; ++e)
      ss += v[k].v[e] * v[k].v[e];
  }
  const float r = rsqrtf(row_sum<L::kThreads>(ss) / float(D) + eps);
  if (rstd && lane == 0)
    rstd[row] = r;
#pragma unroll
  for (int k = 0; k < L::kPer; ++k) {
    const int64_t p = lane + int64_t(k) * L::kThreads;
    if (p >= L::kPacks)
      continue;
    const Floats<P> g = load_floats<P>(w + p * P);
    Floats<P> out;
#pragma unroll
    for (int e = 0; e < P; ++e)
      out.v[e] = v[k].v[e] * r * g.v[e];
    store_floats<P>(y + base + p * P, out);
  }
}

/// y = rms_norm(x) * w; rstd (fp32, one per row) when not null.
template <typename T, int64_t D>
void rms_norm_forward(const T *x, const T *w, T *y, float *rstd, int64_t rows, float eps,
                      cudaStream_t stream) {
  using L = RowLayout<T, D>;
  auto *kernel = &rms_norm_forward_kernel<T, D, false>;
  LLAMA_LAUNCH(kernel, dim3(unsigned(ceil_div(rows, L::kRows))), dim3(L::kBlock), stream,
               x, static_cast<const T *>(nullptr), w, static_cast<T *>(nullptr), y, rstd,
               rows, eps);
}

/// s = a + c (s may alias a or c), y = rms_norm(s) * w, rstd.
template <typename T, int64_t D>
void add_rms_norm_forward(const T *a, const T *c, const T *w, T *s, T *y, float *rstd,
                          int64_t rows, float eps, cudaStream_t stream) {
  using L = RowLayout<T, D>;
  auto *kernel = &rms_norm_forward_kernel<T, D, true>;
  LLAMA_LAUNCH(kernel, dim3(unsigned(ceil_div(rows, L::kRows))), dim3(L::kBlock), stream,
               a, c, w, s, y, rstd, rows, eps);
}

/// Backward, input gradient and the weight gradient's partials. Block b
/// owns rows [b * per_chunk, (b + 1) * per_chunk); its row group g (one per
/// warp when rows are one warp) takes every kRows-th of them. dx may
/// overwrite dy or acc (each element is read first, by the thread that
/// writes it). partial[(b * kRows + g) * D + j] = sum of dy * x * r over the
/// group's rows, column j. r is the forward's rstd, or recomputed from the
/// row (already in registers) when rstd is null (the unfused rms_norm_grad).
template <typename T, int64_t D, bool kAcc>
__global__ void __launch_bounds__((RowLayout<T, D, kNormGradMaxPacks>::kBlock))
    rms_norm_backward_kernel(const T *dy, const T *__restrict__ x, const T *__restrict__ w,
                             const float *__restrict__ rstd, const T *acc, T *dx,
                             float *__restrict__ partial, int64_t rows, int64_t per_chunk,
                             float eps) {
  using L = RowLayout<T, D, kNormGradMaxPacks>;
  constexpr int P = L::kP;
  const int lane = int(threadIdx.x) % L::kThreads;
  const int group = int(threadIdx.x) / L::kThreads;
  const int64_t first = int64_t(blockIdx.x) * per_chunk;
  const int64_t last = min_i64(first + per_chunk, rows);
  // The gain and the row stay in the storage type (half the registers for
  // bf16) and are widened where used; the weight gradient's partials are fp32.
  Pack<T, P> gw[L::kPer];
  Floats<P> dwsum[L::kPer];
#pragma unroll
  for (int k = 0; k < L::kPer; ++k) {
    const int64_t p = lane + int64_t(k) * L::kThreads;
    gw[k] = p < L::kPacks ? load<P>(w + p * P) : Pack<T, P>{};
    dwsum[k] = Floats<P>{};
  }
  // Rows of more than one warp have one group per block (kRows == 1), so
  // every thread of the block reaches each block_sum; single-warp groups
  // reduce with shuffles only and may run different row counts.
  for (int64_t row = first + group; row < last; row += L::kRows) {
    const int64_t base = row * D;
    Pack<T, P> g[L::kPer], xv[L::kPer];
    float dot = 0.0f, ss = 0.0f;
#pragma unroll
    for (int k = 0; k < L::kPer; ++k) {
      const int64_t p = lane + int64_t(k) * L::kThreads;
      if (p >= L::kPacks)
        continue;
      g[k] = load<P>(dy + base + p * P);
      xv[k] = load<P>(x + base + p * P);
#pragma unroll
      for (int e = 0; e < P; ++e) {
        const float xe = to_float(xv[k].v[e]);
        dot += to_float(g[k].v[e]) * to_float(gw[k].v[e]) * xe;
        ss += xe * xe;
      }
    }
    const float r = rstd ? rstd[row] : rsqrtf(row_sum<L::kThreads>(ss) / float(D) + eps);
    const float cr = r * r * r * row_sum<L::kThreads>(dot) / float(D);
#pragma unroll
    for (int k = 0; k < L::kPer; ++k) {
      const int64_t p = lane + int64_t(k) * L::kThreads;
      if (p >= L::kPacks)
        continue;
      Floats<P> out;
      if constexpr (kAcc)
        out = load_floats<P>(acc + base + p * P);
#pragma unroll
      for (int e = 0; e < P; ++e) {
        const float ge = to_float(g[k].v[e]), xe = to_float(xv[k].v[e]);
        const float d = r * to_float(gw[k].v[e]) * ge - cr * xe;
        out.v[e] = kAcc ? out.v[e] + d : d;
        dwsum[k].v[e] += ge * xe * r;
      }
      store_floats<P>(dx + base + p * P, out);
    }
  }
  float *mine = partial + (int64_t(blockIdx.x) * L::kRows + group) * D;
#pragma unroll
  for (int k = 0; k < L::kPer; ++k) {
    const int64_t p = lane + int64_t(k) * L::kThreads;
    if (p < L::kPacks)
      store_floats<P>(mine + p * P, dwsum[k]);
  }
}

/// dw[j] = sum over the n partial rows of partial[i * D + j], in row order.
template <typename TW, int64_t D>
__global__ void __launch_bounds__(kElementwiseThreads)
    column_sum_kernel(const float *__restrict__ partial, TW *__restrict__ dw, int64_t n) {
  constexpr int P = kPackFor<float, D>;
  const int64_t p = int64_t(blockIdx.x) * kElementwiseThreads + threadIdx.x;
  if (p >= D / P)
    return;
  Floats<P> s{};
  for (int64_t i = 0; i < n; ++i) {
    const Floats<P> v = load_floats<P>(partial + i * D + p * P);
#pragma unroll
    for (int e = 0; e < P; ++e)
      s.v[e] += v.v[e];
  }
  store_floats<P>(dw + p * P, s);
}

/// dx (over dy or acc when they alias) and dw (fp32: a weight gradient, or
/// the storage type) from the forward's rstd, or with rstd null from x and
/// eps. `workspace` holds norm_grad_workspace_bytes(sizeof(T), rows, D) bytes.
template <typename T, typename TW, int64_t D, bool kAcc>
void rms_norm_backward(const T *dy, const T *x, const T *w, const float *rstd, const T *acc,
                       T *dx, TW *dw, int64_t rows, float eps, void *workspace,
                       cudaStream_t stream) {
  using L = RowLayout<T, D, kNormGradMaxPacks>;
  const int64_t chunks = norm_grad_chunks(rows);
  const int64_t per_chunk = ceil_div(rows, chunks);
  float *partial = static_cast<float *>(workspace);
  auto *rows_kernel = &rms_norm_backward_kernel<T, D, kAcc>;
  LLAMA_LAUNCH(rows_kernel, dim3(unsigned(chunks)), dim3(L::kBlock), stream, dy, x, w, rstd,
               acc, dx, partial, rows, per_chunk, eps);
  auto *sum_kernel = &column_sum_kernel<TW, D>;
  LLAMA_LAUNCH(sum_kernel,
               dim3(unsigned(ceil_div(D / kPackFor<float, D>, kElementwiseThreads))),
               dim3(kElementwiseThreads), stream, partial, dw, chunks * L::kRows);
}

} // namespace llk
