// Attention of a chunk of new tokens over a KV cache: the decode (chunk 1)
// and chunked-prefill step of generation.
//
// The chunk's keys and values are first copied into the cache rows of their
// positions; each query then attends to cache rows 0 .. its own position
// (causal). A decode step is memory-bound: it reads the whole cache once
// per KV head group, so work is split over (batch, query head) pairs and each
// score row is accumulated in double (the cached path must agree with the
// full-window logits to well below sampling noise).
#include "runtime/cpu/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace llamart::cpu {

template <typename T>
void attention_cached_forward(const T *q, const T *k, const T *v, T *k_cache,
                              T *v_cache, T *out, int64_t batch, int64_t chunk,
                              int64_t heads, int64_t kv_heads, int64_t head_dim,
                              int64_t capacity, int64_t pos0, double scale) {
  if (pos0 < 0 || pos0 + chunk > capacity)
    throw std::runtime_error("attention_cached_forward: positions " +
                             std::to_string(pos0) + ".." +
                             std::to_string(pos0 + chunk - 1) +
                             " exceed the KV cache capacity " + std::to_string(capacity));
  if (kv_heads < 1 || heads % kv_heads != 0)
    throw std::runtime_error("attention_cached_forward: heads do not group over KV heads");
  const int64_t row = kv_heads * head_dim; // one position of one sequence
  for (int64_t b = 0; b < batch; ++b) {
    std::memcpy(k_cache + (b * capacity + pos0) * row, k + b * chunk * row,
                sizeof(T) * chunk * row);
    std::memcpy(v_cache + (b * capacity + pos0) * row, v + b * chunk * row,
                sizeof(T) * chunk * row);
  }
  const int64_t group = heads / kv_heads;
  const int64_t pairs = batch * heads;
#pragma omp parallel
  {
    std::vector<double> score(static_cast<size_t>(pos0 + chunk));
    std::vector<double> acc(static_cast<size_t>(head_dim));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < pairs; ++bh) {
      const int64_t b = bh / heads, h = bh % heads, g = h / group;
      const T *kc = k_cache + b * capacity * row + g * head_dim;
      const T *vc = v_cache + b * capacity * row + g * head_dim;
      for (int64_t i = 0; i < chunk; ++i) {
        const T *qi = q + ((b * chunk + i) * heads + h) * head_dim;
        const int64_t keys = pos0 + i + 1;
        double top = -INFINITY;
        for (int64_t j = 0; j < keys; ++j) {
          const T *kj = kc + j * row;
          double dot = 0.0;
          for (int64_t d = 0; d < head_dim; ++d)
            dot += double(qi[d]) * double(kj[d]);
          score[j] = dot * scale;
          top = std::max(top, score[j]);
        }
        double total = 0.0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < keys; ++j) {
          const double p = std::exp(score[j] - top);
          total += p;
          const T *vj = vc + j * row;
          for (int64_t d = 0; d < head_dim; ++d)
            acc[d] += p * double(vj[d]);
        }
        T *oi = out + ((b * chunk + i) * heads + h) * head_dim;
        for (int64_t d = 0; d < head_dim; ++d)
          oi[d] = static_cast<T>(acc[d] / total);
      }
    }
  }
}

#define LLAMART_INSTANTIATE(T)                                                 \
  template void attention_cached_forward<T>(const T *, const T *, const T *,   \
                                            T *, T *, T *, int64_t, int64_t,   \
                                            int64_t, int64_t, int64_t, int64_t, \
                                            int64_t, double);
LLAMART_INSTANTIATE(float)
LLAMART_INSTANTIATE(double)
#undef LLAMART_INSTANTIATE

} // namespace llamart::cpu
