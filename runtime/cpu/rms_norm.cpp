// RMSNorm: y = x * r * w with r = 1 / sqrt(mean(x^2) + eps), per row.
//
// Backward, per row (n = dim):
//   dx_j = r w_j dy_j - x_j r^3 / n * sum_k dy_k w_k x_k
//   dw_j = sum over rows of dy_j x_j r
// The row sums (x^2 and dy w x) accumulate in double: with dim in the
// thousands a float sum loses digits that the gradient check can see.
//
// Memory traffic: forward reads x once and writes y once (the row is reused
// from L1 for the second pass). Backward reads dy and x once and writes dx
// once; dw is reduced through per-thread double partials of length dim (in
// L2), then summed across threads in a fixed order, so the result does not
// depend on scheduling, only on the thread count.
//
// The fused forms (llama-fuse) run the same code: the forward can add the
// residual first and store the row's rstd; the backward can take that rstd
// instead of recomputing it and add an accumulated gradient into dx.
#include "runtime/cpu/kernels.h"

#include <cmath>
#include <omp.h>

#include "runtime/cpu/parallel.h"
#include "runtime/cpu/scratch.h"

namespace llamart::cpu {
namespace {

template <typename T> double mean_square(const T *x, int64_t dim) {
  double ss = 0.0;
#pragma omp simd reduction(+ : ss)
  for (int64_t j = 0; j < dim; ++j)
    ss += static_cast<double>(x[j]) * x[j];
  return ss / double(dim);
}

// One forward for the three forms: optionally the residual sum first (sum
// may alias a or b: each element is read before it is written), optionally
// the row's rstd stored (as T: the value the row was scaled with).
template <typename T>
void forward(const T *a, const T *b, const T *w, T *sum, T *y, T *rstd,
             int64_t rows, int64_t dim, double eps) {
#pragma omp parallel for schedule(static) if (rows * dim >= kParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    const T *xr = a + r * dim;
    if (b) {
      const T *ar = a + r * dim, *br = b + r * dim;
      T *sr = sum + r * dim;
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j)
        sr[j] = ar[j] + br[j];
      xr = sr;
    }
    T *yr = y + r * dim;
    const T inv_rms =
        static_cast<T>(1.0 / std::sqrt(mean_square(xr, dim) + eps));
    if (rstd)
      rstd[r] = inv_rms;
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j)
      yr[j] = xr[j] * inv_rms * w[j];
  }
}

// One backward for both forms: rstd from the forward when given, else
// recomputed (in double) from x; dx += accumulate when given (dx may alias
// accumulate or dy: every element is read first).
template <typename T>
void backward(const T *dy, const T *x, const T *w, const T *rstd, double eps,
              const T *accumulate, T *dx, T *dw, int64_t rows, int64_t dim) {
  const bool parallel = rows * dim >= kParallelElements;
  const int max_threads = parallel ? omp_get_max_threads() : 1;
  double *partials = static_cast<double *>(
      thread_scratch(sizeof(double) * size_t(max_threads) * size_t(dim)));

#pragma omp parallel if (parallel)
  {
    const int team = omp_get_num_threads();
    double *mine = partials + int64_t(omp_get_thread_num()) * dim;
    for (int64_t j = 0; j < dim; ++j)
      mine[j] = 0.0;

#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T *xr = x + r * dim;
      const T *dyr = dy + r * dim;
      T *dxr = dx + r * dim;
      const double inv_rms = rstd ? double(rstd[r])
                                  : 1.0 / std::sqrt(mean_square(xr, dim) + eps);
      double dot = 0.0; // sum_k dy_k w_k x_k
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < dim; ++j)
        dot += static_cast<double>(dyr[j]) * w[j] * xr[j];
      const T a = static_cast<T>(inv_rms);
      const T b =
          static_cast<T>(inv_rms * inv_rms * inv_rms * dot / double(dim));
      if (accumulate) {
        const T *accr = accumulate + r * dim;
#pragma omp simd
        for (int64_t j = 0; j < dim; ++j) {
          mine[j] += static_cast<double>(dyr[j]) * xr[j] * inv_rms;
          dxr[j] = (a * w[j] * dyr[j] - b * xr[j]) + accr[j];
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < dim; ++j) {
          mine[j] += static_cast<double>(dyr[j]) * xr[j] * inv_rms;
          dxr[j] = a * w[j] * dyr[j] - b * xr[j];
        }
      }
    }
    // The implicit barrier of the loop above publishes every partial.
#pragma omp for schedule(static)
    for (int64_t j = 0; j < dim; ++j) {
      double sum = 0.0;
      for (int t = 0; t < team; ++t)
        sum += partials[int64_t(t) * dim + j];
      dw[j] = static_cast<T>(sum);
    }
  }
}

} // namespace

template <typename T>
void rms_norm_forward(const T *x, const T *w, T *y, int64_t rows, int64_t dim,
                      double eps) {
  forward<T>(x, nullptr, w, nullptr, y, nullptr, rows, dim, eps);
}

template <typename T>
void rms_norm_backward(const T *dy, const T *x, const T *w, T *dx, T *dw,
                       int64_t rows, int64_t dim, double eps) {
  backward<T>(dy, x, w, nullptr, eps, nullptr, dx, dw, rows, dim);
}

// ---- Fused forms (llama-fuse) ----------------------------------------------

template <typename T>
void rms_norm_forward_rstd(const T *x, const T *w, T *y, T *rstd, int64_t rows,
                           int64_t dim, double eps) {
  forward<T>(x, nullptr, w, nullptr, y, rstd, rows, dim, eps);
}

template <typename T>
void add_rms_norm_forward(const T *a, const T *b, const T *w, T *sum, T *y,
                          T *rstd, int64_t rows, int64_t dim, double eps) {
  forward<T>(a, b, w, sum, y, rstd, rows, dim, eps);
}

template <typename T>
void rms_norm_backward_rstd(const T *dy, const T *x, const T *w,
                            const T *rstd, const T *accumulate, T *dx, T *dw,
                            int64_t rows, int64_t dim) {
  backward<T>(dy, x, w, rstd, 0.0, accumulate, dx, dw, rows, dim);
}

#define LLAMART_INSTANTIATE(T)                                                 \
  template void rms_norm_forward<T>(const T *, const T *, T *, int64_t,        \
                                    int64_t, double);                          \
  template void rms_norm_backward<T>(const T *, const T *, const T *, T *,     \
                                     T *, int64_t, int64_t, double);        \
  template void rms_norm_forward_rstd<T>(const T *, const T *, T *, T *,       \
                                         int64_t, int64_t, double);            \
  template void add_rms_norm_forward<T>(const T *, const T *, const T *, T *,  \
                                        T *, T *, int64_t, int64_t, double);   \
  template void rms_norm_backward_rstd<T>(const T *, const T *, const T *,     \
                                          const T *, const T *, T *, T *,      \
                                          int64_t, int64_t);
LLAMART_INSTANTIATE(float)
LLAMART_INSTANTIATE(double)
#undef LLAMART_INSTANTIATE

} // namespace llamart::cpu
