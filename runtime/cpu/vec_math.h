// Vector-friendly math for the CPU kernels.
//
// std::exp on float is an opaque libm call that stops the vectorizer; the
// softmax-type kernels (attention, cross-entropy, SwiGLU) evaluate one exp per
// element and would be bound by it. exp_fast(float) is a branch-free Cephes
// style expf (Cody-Waite range reduction + degree-6 minimax polynomial), max
// relative error 8e-8 (~1 ulp), that GCC vectorizes inside `#pragma omp simd`
// loops at whatever width the enclosing function targets. The double overload
// is the exact libm exp: double is the gradient-check type, where accuracy is
// the whole point.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "runtime/cpu/isa.h"

namespace llamart::cpu {

// exp(x) for float. Below -87 it returns 0 (the true value is subnormal, far
// below anything a softmax sum can see); above 88 it saturates at exp(88)
// (~1.65e38) instead of +inf, which keeps 1/(1+exp(-x)) exact at the edges.
// NaN in, NaN out, so divergence stays visible in the loss.
LLAMART_INLINE float exp_fast(float x) {
  const float lo = -87.0f, hi = 88.0f;
  float xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  // Round x / ln2 to the nearest integer n with the 1.5 * 2^23 trick: adding
  // it pushes the fraction bits out of the mantissa (round-to-nearest), and
  // the low mantissa bits then hold n itself.
  const float shifter = 12582912.0f;
  const float t = xc * 1.44269504088896341f + shifter;
  const float n = t - shifter;
  // r = x - n ln2, with ln2 split in two so n * ln2_hi is exact.
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  // 2^n assembled in the exponent field; n is in [-125, 127] after clamping.
  int32_t tbits;
  std::memcpy(&tbits, &t, sizeof t);
  const int32_t nbits = (tbits - 0x4B400000) + 127;
  // Shifted unsigned: for a NaN x (returned below) nbits is garbage, and a
  // signed shift overflowing int32 would be UB (found by tools/sanitize).
  const uint32_t scale_bits = static_cast<uint32_t>(nbits) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  float result = er * scale;
  result = x < lo ? 0.0f : result;
  return x != x ? x : result;
}

LLAMART_INLINE double exp_fast(double x) { return std::exp(x); }

// A GCC/Clang vector of VecBytes bytes of T that may alias T and needs only
// T's alignment, so it can load and store at any element of a row.
template <typename T, int VecBytes> struct Simd {
  static constexpr int kWidth = VecBytes / static_cast<int>(sizeof(T));
  typedef T Vec
      __attribute__((vector_size(VecBytes), aligned(sizeof(T)), may_alias));
};

} // namespace llamart::cpu
