// Token embedding lookup and its gradient.
//
// Forward: out[t, :] = table[ids[t], :]. Memory traffic: one row read and
// one row written per token; a memcpy per row, threads split the tokens.
//
// Backward: dtable = scatter-add of dout rows at ids. The same id may occur
// at many positions, so threads split the feature dimension into 64-element
// column slices instead of the tokens: every thread walks all tokens but
// touches only its own slice of each table row. No atomics, no per-thread
// copies of the table, and the summation order per element is the token order
// whatever the thread count. Traffic: dtable written once to zero it (it is
// vocab x dim, usually the largest tensor here) and dout read once.
//
// Ids are checked before anything is read or written: a corrupt data shard
// must produce an error naming the position, not an out-of-bounds read.
#include "runtime/cpu/kernels.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "runtime/cpu/parallel.h"

namespace llamart::cpu {
namespace {

void check_ids(const int32_t *ids, int64_t n_tokens, int64_t vocab,
               const char *kernel) {
  for (int64_t t = 0; t < n_tokens; ++t)
    if (ids[t] < 0 || ids[t] >= vocab)
      throw std::runtime_error(
          std::string(kernel) + ": token id " + std::to_string(ids[t]) +
          " at position " + std::to_string(t) +
          " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
}

constexpr int64_t kColumnSlice = 64;

} // namespace

template <typename T>
void embedding_forward(const T *table, const int32_t *ids, T *out,
                       int64_t n_tokens, int64_t vocab, int64_t dim) {
  check_ids(ids, n_tokens, vocab, "embedding_forward");
  const bool parallel = n_tokens * dim >= kParallelElements;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t t = 0; t < n_tokens; ++t)
    std::memcpy(out + t * dim, table + int64_t(ids[t]) * dim, dim * sizeof(T));
}

template <typename T>
void embedding_backward(const T *dout, const int32_t *ids, T *dtable,
                        int64_t n_tokens, int64_t vocab, int64_t dim) {
  check_ids(ids, n_tokens, vocab, "embedding_backward");
  const int64_t slices = (dim + kColumnSlice - 1) / kColumnSlice;
  const bool parallel = (vocab + n_tokens) * dim >= kParallelElements;
#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < vocab; ++r)
      std::memset(dtable + r * dim, 0, dim * sizeof(T));
#pragma omp for schedule(static)
    for (int64_t sl = 0; sl < slices; ++sl) {
      const int64_t c0 = sl * kColumnSlice;
      const int64_t width = std::min(kColumnSlice, dim - c0);
      for (int64_t t = 0; t < n_tokens; ++t) {
        T *dst = dtable + int64_t(ids[t]) * dim + c0;
        const T *src = dout + t * dim + c0;
#pragma omp simd
        for (int64_t c = 0; c < width; ++c)
          dst[c] += src[c];
      }
    }
  }
}

#define LLAMART_INSTANTIATE(T)                                                 \
  template void embedding_forward<T>(const T *, const int32_t *, T *, int64_t, \
                                     int64_t, int64_t);                        \
  template void embedding_backward<T>(const T *, const int32_t *, T *,         \
                                      int64_t, int64_t, int64_t);
LLAMART_INSTANTIATE(float)
LLAMART_INSTANTIATE(double)
#undef LLAMART_INSTANTIATE

} // namespace llamart::cpu
