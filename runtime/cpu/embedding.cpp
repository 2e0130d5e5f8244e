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
// Vocabulary-parallel shards (partitioned programs) use the same loops over
// the rows they hold; ids outside them give zero rows and no gradient.
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

// A table of `rows` rows holding rows [row0, row0 + rows) of a `vocab`-row
// table (the whole table when row0 = 0 and rows = vocab; a vocabulary shard
// in partitioned programs). Ids outside the held rows give zero rows forward
// and are skipped backward.
template <typename T>
void gather_rows(const T *table, const int32_t *ids, T *out, int64_t n_tokens,
                 int64_t vocab, int64_t row0, int64_t rows, int64_t dim,
                 const char *kernel) {
  check_ids(ids, n_tokens, vocab, kernel);
  const bool parallel = n_tokens * dim >= kParallelElements;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t t = 0; t < n_tokens; ++t) {
    const int64_t r = int64_t(ids[t]) - row0;
    if (r >= 0 && r < rows)
      std::memcpy(out + t * dim, table + r * dim, dim * sizeof(T));
    else
      std::memset(out + t * dim, 0, dim * sizeof(T));
  }
}

template <typename T>
void scatter_add_rows(const T *dout, const int32_t *ids, T *dtable,
                      int64_t n_tokens, int64_t vocab, int64_t row0, int64_t rows,
                      int64_t dim, const char *kernel) {
  check_ids(ids, n_tokens, vocab, kernel);
  const int64_t slices = (dim + kColumnSlice - 1) / kColumnSlice;
  const bool parallel = (rows + n_tokens) * dim >= kParallelElements;
#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      std::memset(dtable + r * dim, 0, dim * sizeof(T));
#pragma omp for schedule(static)
    for (int64_t sl = 0; sl < slices; ++sl) {
      const int64_t c0 = sl * kColumnSlice;
      const int64_t width = std::min(kColumnSlice, dim - c0);
      for (int64_t t = 0; t < n_tokens; ++t) {
        const int64_t r = int64_t(ids[t]) - row0;
        if (r < 0 || r >= rows)
          continue;
        T *dst = dtable + r * dim + c0;
        const T *src = dout + t * dim + c0;
#pragma omp simd
        for (int64_t c = 0; c < width; ++c)
          dst[c] += src[c];
      }
    }
  }
}

} // namespace

template <typename T>
void embedding_forward(const T *table, const int32_t *ids, T *out,
                       int64_t n_tokens, int64_t vocab, int64_t dim) {
  gather_rows(table, ids, out, n_tokens, vocab, 0, vocab, dim, "embedding_forward");
}

template <typename T>
void embedding_backward(const T *dout, const int32_t *ids, T *dtable,
                        int64_t n_tokens, int64_t vocab, int64_t dim) {
  scatter_add_rows(dout, ids, dtable, n_tokens, vocab, 0, vocab, dim,
                   "embedding_backward");
}

template <typename T>
void embedding_forward_shard(const T *table, const int32_t *ids, T *out,
                             int64_t n_tokens, int64_t vocab, int64_t row0,
                             int64_t rows, int64_t dim) {
  gather_rows(table, ids, out, n_tokens, vocab, row0, rows, dim,
              "embedding_forward_shard");
}

template <typename T>
void embedding_backward_shard(const T *dout, const int32_t *ids, T *dtable,
                              int64_t n_tokens, int64_t vocab, int64_t row0,
                              int64_t rows, int64_t dim) {
  scatter_add_rows(dout, ids, dtable, n_tokens, vocab, row0, rows, dim,
                   "embedding_backward_shard");
}

#define LLAMART_INSTANTIATE(T)                                                 \
  template void embedding_forward<T>(const T *, const int32_t *, T *, int64_t, \
                                     int64_t, int64_t);                        \
  template void embedding_backward<T>(const T *, const int32_t *, T *,         \
                                      int64_t, int64_t, int64_t);              \
  template void embedding_forward_shard<T>(const T *, const int32_t *, T *,    \
                                           int64_t, int64_t, int64_t, int64_t, \
                                           int64_t);                           \
  template void embedding_backward_shard<T>(const T *, const int32_t *, T *,   \
                                            int64_t, int64_t, int64_t,         \
                                            int64_t, int64_t);
LLAMART_INSTANTIATE(float)
LLAMART_INSTANTIATE(double)
#undef LLAMART_INSTANTIATE

} // namespace llamart::cpu
