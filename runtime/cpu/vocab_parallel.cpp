// The cross-entropy of partitioned programs (llama-shard), assembled from
// row statistics (the vocabulary-parallel embedding is in embedding.cpp).
//
// Cross-entropy over a (possibly split) vocabulary, Megatron's
// vocab-parallel formulation:
//   max_r    = max over the local vocabulary (all-reduced with max),
//   sums_r   = (sum_v exp(l_rv - max_r), l_r,target if local else 0)
//              (all-reduced with sum),
//   loss     = 1/count * sum over scored rows of (log S_r + max_r - t_r),
// count being the global number of scored targets. Sums accumulate in
// double, as in cross_entropy.cpp.
#include "runtime/cpu/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "runtime/cpu/parallel.h"

namespace llamart::cpu {
namespace {

void check_targets(const int32_t *targets, int64_t rows, int64_t vocab,
                   int64_t ignore_index, const char *kernel) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = targets[r];
    if (t != ignore_index && (t < 0 || t >= vocab))
      throw std::runtime_error(
          std::string(kernel) + ": target " + std::to_string(t) + " at row " +
          std::to_string(r) + " is outside the vocabulary [0, " +
          std::to_string(vocab) + ") and is not ignore_index (" +
          std::to_string(ignore_index) + ")");
  }
}

constexpr int64_t kParallelRows = 4;

} // namespace

template <typename T>
void logits_row_max(const T *logits, T *max, int64_t rows, int64_t vocab) {
#pragma omp parallel for schedule(static) if (rows >= kParallelRows)
  for (int64_t r = 0; r < rows; ++r) {
    const T *x = logits + r * vocab;
    T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t v = 0; v < vocab; ++v)
      m = x[v] > m ? x[v] : m;
    max[r] = m;
  }
}

template <typename T>
void ce_partial_sums(const T *logits, const T *max, const int32_t *targets,
                     T *sums, int64_t rows, int64_t vocab_local, int64_t col0,
                     int64_t vocab, int64_t ignore_index) {
  check_targets(targets, rows, vocab, ignore_index, "ce_partial_sums");
#pragma omp parallel for schedule(static) if (rows >= kParallelRows)
  for (int64_t r = 0; r < rows; ++r) {
    const T *x = logits + r * vocab_local;
    const double m = max[r];
    double s = 0.0;
    for (int64_t v = 0; v < vocab_local; ++v)
      s += std::exp(double(x[v]) - m);
    const int64_t t = targets[r];
    const int64_t local = t - col0;
    sums[2 * r] = static_cast<T>(s);
    sums[2 * r + 1] = (t != ignore_index && local >= 0 && local < vocab_local)
                          ? x[local]
                          : T(0);
  }
}

template <typename T>
void ce_partial_sums_backward(const T *dsums, const T *logits, const T *max,
                              const int32_t *targets, T *dlogits, int64_t rows,
                              int64_t vocab_local, int64_t col0,
                              int64_t ignore_index) {
#pragma omp parallel for schedule(static) if (rows >= kParallelRows)
  for (int64_t r = 0; r < rows; ++r) {
    const T *x = logits + r * vocab_local;
    T *dx = dlogits + r * vocab_local;
    const double m = max[r], ds = dsums[2 * r];
    for (int64_t v = 0; v < vocab_local; ++v)
      dx[v] = static_cast<T>(ds * std::exp(double(x[v]) - m));
    const int64_t t = targets[r];
    const int64_t local = t - col0;
    if (t != ignore_index && local >= 0 && local < vocab_local)
      dx[local] = static_cast<T>(double(dx[local]) + double(dsums[2 * r + 1]));
  }
}

template <typename T>
void count_valid(const int32_t *targets, T *count, int64_t n, int64_t ignore_index) {
  int64_t valid = 0;
  for (int64_t i = 0; i < n; ++i)
    valid += targets[i] != ignore_index;
  *count = static_cast<T>(valid);
}

template <typename T>
void ce_combine(const T *max, const T *sums, const int32_t *targets,
                const T *count, T *loss, int64_t rows, int64_t ignore_index) {
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r)
    if (targets[r] != ignore_index)
      total += std::log(double(sums[2 * r])) + double(max[r]) - double(sums[2 * r + 1]);
  // No scored token anywhere: the loss is 0 and so is every gradient (the
  // single-process kernel's convention for an all-ignored batch).
  const double n = double(*count);
  *loss = static_cast<T>(n > 0 ? total / n : 0.0);
}

template <typename T>
void ce_combine_backward(const T *dloss, const T *sums, const int32_t *targets,
                         const T *count, T *dsums, int64_t rows,
                         int64_t ignore_index) {
  const double n = double(*count);
  const double g = n > 0 ? double(*dloss) / n : 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const bool scored = targets[r] != ignore_index;
    dsums[2 * r] = static_cast<T>(scored ? g / double(sums[2 * r]) : 0.0);
    dsums[2 * r + 1] = static_cast<T>(scored ? -g : 0.0);
  }
}

#define LLAMART_INSTANTIATE(T)                                                  \
  template void logits_row_max<T>(const T *, T *, int64_t, int64_t);            \
  template void ce_partial_sums<T>(const T *, const T *, const int32_t *, T *,  \
                                   int64_t, int64_t, int64_t, int64_t, int64_t); \
  template void ce_partial_sums_backward<T>(const T *, const T *, const T *,    \
                                            const int32_t *, T *, int64_t,      \
                                            int64_t, int64_t, int64_t);         \
  template void count_valid<T>(const int32_t *, T *, int64_t, int64_t);         \
  template void ce_combine<T>(const T *, const T *, const int32_t *, const T *, \
                              T *, int64_t, int64_t);                           \
  template void ce_combine_backward<T>(const T *, const T *, const int32_t *,   \
                                       const T *, T *, int64_t, int64_t);
LLAMART_INSTANTIATE(float)
LLAMART_INSTANTIATE(double)
#undef LLAMART_INSTANTIATE

} // namespace llamart::cpu
