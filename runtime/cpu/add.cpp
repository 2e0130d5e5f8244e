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

template void add<float>(const float *, const float *, float *, int64_t);
template void add<double>(const double *, const double *, double *, int64_t);

} // namespace llamart::cpu
