// Elementwise add, y = a + b: the compiler's explicit gradient accumulation
// and residual connections.
//
// Memory traffic: reads 2n, writes n elements; purely bandwidth bound, so the
// loop is a plain vectorized stream split across threads in large chunks.
// y may alias a or b: each element is read before it is written.
#include "runtime/cpu/kernels.h"

#include "runtime/cpu/parallel.h"

namespace llamart::cpu {

template <typename T> void add(const T *a, const T *b, T *y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelElements)
  for (int64_t i = 0; i < n; ++i)
    y[i] = a[i] + b[i];
}

// y = sum of inputs[0..count), left to right (the order of the add chain it
// replaces, so results are identical); y may alias any input.
template <typename T>
void sum(const T *const *inputs, int64_t count, T *y, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    T acc = inputs[0][i];
    for (int64_t k = 1; k < count; ++k)
      acc += inputs[k][i];
    y[i] = acc;
  }
}

template void sum<float>(const float *const *, int64_t, float *, int64_t);
template void sum<double>(const double *const *, int64_t, double *, int64_t);
template void add<float>(const float *, const float *, float *, int64_t);
template void add<double>(const double *, const double *, double *, int64_t);

} // namespace llamart::cpu
