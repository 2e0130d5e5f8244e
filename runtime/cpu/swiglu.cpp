// SwiGLU gate of the LLaMA MLP: y = silu(gate) * up, silu(g) = g * sigmoid(g).
//
// Backward, with sig = sigmoid(g):
//   dup   = dy * silu(g)
//   dgate = dy * up * sig * (1 + g * (1 - sig))
// Memory traffic: forward reads 2n and writes n, backward reads 3n and writes
// 2n; one exp per element (vectorized exp_fast), so the loops stay bandwidth
// bound. Nothing is saved between forward and backward: sigmoid is cheaper to
// recompute than to store and reload.
#include "runtime/cpu/kernels.h"

#include "runtime/cpu/parallel.h"
#include "runtime/cpu/vec_math.h"

namespace llamart::cpu {

template <typename T>
void swiglu_forward(const T *gate, const T *up, T *y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i];
    const T sig = T(1) / (T(1) + exp_fast(-g));
    y[i] = g * sig * up[i];
  }
}

template <typename T>
void swiglu_backward(const T *dy, const T *gate, const T *up, T *dgate, T *dup,
                     int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i], u = up[i], d = dy[i];
    const T sig = T(1) / (T(1) + exp_fast(-g));
    const T silu = g * sig;
    dgate[i] = d * u * sig * (T(1) + g * (T(1) - sig));
    dup[i] = d * silu;
  }
}

#define LLAMART_INSTANTIATE(T)                                                 \
  template void swiglu_forward<T>(const T *, const T *, T *, int64_t);         \
  template void swiglu_backward<T>(const T *, const T *, const T *, T *, T *,  \
                                   int64_t);
LLAMART_INSTANTIATE(float)
LLAMART_INSTANTIATE(double)
#undef LLAMART_INSTANTIATE

} // namespace llamart::cpu
