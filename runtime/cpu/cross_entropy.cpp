// Softmax cross-entropy over the vocabulary, mean over non-ignored rows.
//
//   loss = 1/n_valid * sum_{valid r} (logsumexp(logits[r]) - logits[r, t_r])
//   dlogits[r] = dloss / n_valid * (softmax(logits[r]) - onehot(t_r)),
//   zero for ignored rows.
// logsumexp is max-shifted (no overflow) and its sum of exps, like the sum
// over rows, accumulates in double: a 32K-entry vocabulary sum in float would
// carry ~1e-4 relative error into the loss.
//
// Memory traffic: rows x vocab is the largest activation of a small model.
// Forward reads each logit twice (max pass, exp pass; the row is L2 resident
// for the second). Backward reads twice and writes once: the exp pass stores
// exp(x - max) straight into dlogits and a last pass scales it, so one exp
// per element in either direction.
#include "runtime/cpu/kernels.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "runtime/cpu/vec_math.h"

namespace llamart::cpu {
namespace {

// Number of rows that take part; throws on a target that is neither a
// vocabulary index nor ignore_index (a corrupt batch must not read out of
// bounds or silently train on garbage).
int64_t count_valid_rows(const int32_t *targets, int64_t rows, int64_t vocab,
                         int64_t ignore_index, const char *kernel) {
  int64_t valid = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = targets[r];
    if (t == ignore_index)
      continue;
    if (t < 0 || t >= vocab)
      throw std::runtime_error(
          std::string(kernel) + ": target " + std::to_string(t) + " at row " +
          std::to_string(r) + " is outside the vocabulary [0, " +
          std::to_string(vocab) + ") and is not ignore_index (" +
          std::to_string(ignore_index) + ")");
    ++valid;
  }
  return valid;
}

template <typename T> T row_max(const T *x, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j)
    m = x[j] > m ? x[j] : m;
  return m;
}

// d = coef * (softmax(x) - onehot(target)) for one row with max m: exps
// stored into d, then scaled. Returns the sum of exps (d may alias x when
// the caller has read x[target] already).
template <typename T>
double softmax_grad_row(const T *x, T m, T *d, int64_t vocab, int64_t target,
                        double coef) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < vocab; ++j) {
    const T e = exp_fast(x[j] - m);
    d[j] = e;
    sum += e;
  }
  const T scale = static_cast<T>(coef / sum);
#pragma omp simd
  for (int64_t j = 0; j < vocab; ++j)
    d[j] *= scale;
  d[target] -= static_cast<T>(coef);
  return sum;
}

// Rows are fat (a whole vocabulary); a few of them already keep a thread busy.
constexpr int64_t kParallelRows = 4;

} // namespace

template <typename T>
void cross_entropy_forward(const T *logits, const int32_t *targets, T *loss,
                           int64_t rows, int64_t vocab, int64_t ignore_index) {
  const int64_t n_valid = count_valid_rows(targets, rows, vocab, ignore_index,
                                           "cross_entropy_forward");
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)                 \
    if (rows >= kParallelRows)
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] == ignore_index)
      continue;
    const T *x = logits + r * vocab;
    const T m = row_max(x, vocab);
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < vocab; ++j)
      sum += exp_fast(x[j] - m);
    total += std::log(sum) + static_cast<double>(m) - x[targets[r]];
  }
  loss[0] = n_valid > 0 ? static_cast<T>(total / double(n_valid)) : T(0);
}

template <typename T>
void cross_entropy_backward(const T *dloss, const T *logits,
                            const int32_t *targets, T *dlogits, int64_t rows,
                            int64_t vocab, int64_t ignore_index) {
  const int64_t n_valid = count_valid_rows(targets, rows, vocab, ignore_index,
                                           "cross_entropy_backward");
  const double coef = n_valid > 0 ? double(dloss[0]) / double(n_valid) : 0.0;
#pragma omp parallel for schedule(static) if (rows >= kParallelRows)
  for (int64_t r = 0; r < rows; ++r) {
    T *d = dlogits + r * vocab;
    if (targets[r] == ignore_index) {
      for (int64_t j = 0; j < vocab; ++j)
        d[j] = T(0);
      continue;
    }
    const T *x = logits + r * vocab;
    softmax_grad_row(x, row_max(x, vocab), d, vocab, targets[r], coef);
  }
}

// Forward and backward in one read of each row: the loss term needs the
// row's max, sum of exps and target logit, and the gradient the same max
// and sum; the exps go straight into dlogits. dlogits may alias logits (the
// target logit is read before the row is overwritten). The per-row arithmetic
// is that of the two kernels above, so the results are identical.
template <typename T>
void cross_entropy_fused(const T *logits, const int32_t *targets, T *loss,
                         T *dlogits, int64_t rows, int64_t vocab,
                         int64_t ignore_index, double dloss) {
  const int64_t n_valid = count_valid_rows(targets, rows, vocab, ignore_index,
                                           "cross_entropy_fused");
  const double coef =
      n_valid > 0 ? double(static_cast<T>(dloss)) / double(n_valid) : 0.0;
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)                 \
    if (rows >= kParallelRows)
  for (int64_t r = 0; r < rows; ++r) {
    T *d = dlogits + r * vocab;
    if (targets[r] == ignore_index) {
      for (int64_t j = 0; j < vocab; ++j)
        d[j] = T(0);
      continue;
    }
    const T *x = logits + r * vocab;
    const T m = row_max(x, vocab);
    const T target_logit = x[targets[r]]; // before d overwrites it
    const double sum = softmax_grad_row(x, m, d, vocab, targets[r], coef);
    total += std::log(sum) + static_cast<double>(m) - target_logit;
  }
  loss[0] = n_valid > 0 ? static_cast<T>(total / double(n_valid)) : T(0);
}

#define LLAMART_INSTANTIATE(T)                                                 \
  template void cross_entropy_forward<T>(const T *, const int32_t *, T *,      \
                                         int64_t, int64_t, int64_t);           \
  template void cross_entropy_backward<T>(                                     \
      const T *, const T *, const int32_t *, T *, int64_t, int64_t, int64_t); \
  template void cross_entropy_fused<T>(const T *, const int32_t *, T *, T *,   \
                                       int64_t, int64_t, int64_t, double);
LLAMART_INSTANTIATE(float)
LLAMART_INSTANTIATE(double)
#undef LLAMART_INSTANTIATE

} // namespace llamart::cpu
