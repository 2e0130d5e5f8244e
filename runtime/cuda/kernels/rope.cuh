// Rotary position embedding (Hugging Face "rotate half" pairing) of q and k
// together, its inverse (the backward), and at a position read from device
// memory (generation's rope_at).
//
//   for position t and i < d/2, angle a = t * f_i (f_i = theta^(-2i/d), or the
//   scaled frequencies of the rope op's inv_freq):
//     y[i]       = s (x[i] cos a - x[i + d/2] sin a)
//     y[i + d/2] = s (x[i + d/2] cos a + x[i] sin a)
//   the inverse rotates by -a (times s). s is YaRN's attention factor
//   (Turns::kScale; 1 when the traits have none).
//
// Memory traffic: x read once, y written once; the angles cost no memory.
// Each thread rotates one 16-byte pack of the first half of a head row
// against the matching pack of the second half (half a multiple of the
// pack; else single elements).
//
// Angles in fp32 without losing the CPU table's accuracy (runtime/cpu/rope.cpp
// computes them in double): the compiler passes each frequency in turns per
// position, f_i / (2 pi), as a pair of floats (hi + lo, 48
// significant bits). For an integer position t < 2^24,
//   t * hi = a + e exactly (a = fl(t * hi), e = fma(t, hi, -a)),
//   frac   = (a - rint(a)) + (e + t * lo)   (a - rint(a) is exact),
// which is the angle modulo one turn to ~2^-25 turns absolute, then
// sincospif(2 frac) (exact range reduction: no slow path, no local memory).
// cos and sin end within ~3e-7 of the double table at any position, where
// the plain fp32 angle fl(t * theta^(-2i/d)) is already ~5e-4 rad off at
// t = 8k (and __sinf adds its own error on top).
// No fp64 instruction on the hot path.
#pragma once

#include "runtime/cuda/kernels/common.cuh"

#include <type_traits>

namespace llk {

/// sin and cos of 2 pi t f for the frequency f = turns.x + turns.y turns.
__device__ __forceinline__ void rope_sincos(int64_t t, float2 turns, float *s, float *c) {
  const float pos = float(t);
  const float a = pos * turns.x;
  const float e = fmaf(pos, turns.x, -a);
  const float frac = (a - rintf(a)) + (e + pos * turns.y);
  sincospif(2.0f * frac, s, c);
}

/// The factor on cos and sin (YaRN's attention factor): Turns::kScale where
/// the traits define it, else 1.
template <typename Turns, typename = void> struct RopeScale {
  static constexpr float value = 1.0f;
};
template <typename Turns> struct RopeScale<Turns, std::void_t<decltype(Turns::kScale)>> {
  static constexpr float value = Turns::kScale;
};

/// Work items per head row: a pack of each half per item, or (half not a
/// whole number of packs) one element per item.
template <typename T, int64_t HD>
constexpr int64_t RopeItems = kPackFor<T, HD / 2> == 1 ? HD : HD / 2 / kPackFor<T, HD / 2>;

/// Rotates `rows` head rows of q and then `k_rows` of k (k may be null with
/// k_rows 0). A row is [batch, seq, heads] flattened; its position is
/// pos0 + (row / heads) % seq, plus *pos_at where given (generation: the
/// position is in device memory, so a captured decode step replays with a
/// new one). Turns::at(i) gives frequency i in turns (see
/// the file comment). sign -1 rotates back (the backward). Outputs must not
/// alias inputs (the single-element path reads elements other threads
/// write; the memory plan never puts a RoPE result in place).
template <typename T, int64_t HD, typename Turns>
__global__ void __launch_bounds__(kElementwiseThreads)
    rope_kernel(const T *q, const T *k, T *qo, T *ko, int64_t q_rows, int64_t k_rows,
                int64_t seq, int64_t q_heads, int64_t k_heads, int64_t pos0,
                const int32_t *pos_at, float sign) {
  constexpr int64_t kHalf = HD / 2;
  constexpr int P = kPackFor<T, kHalf>;
  constexpr int64_t kItems = RopeItems<T, HD>; // per head row
  constexpr float kScale = RopeScale<Turns>::value;
  int64_t item = int64_t(blockIdx.x) * kElementwiseThreads + threadIdx.x;
  const T *in = q;
  T *out = qo;
  int64_t heads = q_heads;
  if (item >= q_rows * kItems) {
    item -= q_rows * kItems;
    if (item >= k_rows * kItems)
      return;
    in = k;
    out = ko;
    heads = k_heads;
  }
  const int64_t row = item / kItems;
  const int64_t pos = pos0 + (pos_at ? int64_t(*pos_at) : 0) + (row / heads) % seq;
  if constexpr (P == 1) {
    // Half a row is not a whole number of packs (tiny head dims): one
    // element per thread, reading its partner in the other half, so that a
    // warp's loads and stores stay contiguous (one element per thread and
    // pair left every other sector half unused).
    const int64_t e = item % HD, i = e % kHalf;
    const float x = to_float(in[row * HD + e]);
    const float partner = to_float(in[row * HD + (e < kHalf ? e + kHalf : e - kHalf)]);
    float s, c;
    rope_sincos(pos, Turns::at(int(i)), &s, &c);
    s *= sign * kScale;
    c *= kScale;
    out[row * HD + e] = from_float<T>(e < kHalf ? x * c - partner * s : x * c + partner * s);
    return;
  }
  const int64_t i0 = (item % kItems) * P;
  const int64_t base = row * HD + i0;
  const Floats<P> x1 = load_floats<P>(in + base);
  const Floats<P> x2 = load_floats<P>(in + base + kHalf);
  Floats<P> y1, y2;
#pragma unroll
  for (int e = 0; e < P; ++e) {
    float s, c;
    rope_sincos(pos, Turns::at(int(i0) + e), &s, &c);
    s *= sign * kScale;
    c *= kScale;
    y1.v[e] = x1.v[e] * c - x2.v[e] * s;
    y2.v[e] = x2.v[e] * c + x1.v[e] * s;
  }
  store_floats<P>(out + base, y1);
  store_floats<P>(out + base + kHalf, y2);
}

/// q [.., q_heads, HD] and k [.., k_heads, HD] of `batch` x `seq` tokens
/// (k may be null with k_heads 0), positions from pos0 (+ *pos_at).
template <typename T, int64_t HD, typename Turns>
void rope(const T *q, const T *k, T *qo, T *ko, int64_t batch, int64_t seq, int64_t q_heads,
          int64_t k_heads, int64_t pos0, bool inverse, cudaStream_t stream,
          const int32_t *pos_at = nullptr) {
  constexpr int64_t kItems = RopeItems<T, HD>;
  const int64_t q_rows = batch * seq * q_heads, k_rows = batch * seq * k_heads;
  auto *kernel = &rope_kernel<T, HD, Turns>;
  LLAMA_LAUNCH(kernel, dim3(unsigned(ceil_div((q_rows + k_rows) * kItems, kElementwiseThreads))),
               dim3(kElementwiseThreads), stream, q, k, qo, ko, q_rows, k_rows, seq,
               q_heads, k_heads == 0 ? 1 : k_heads, pos0, pos_at, inverse ? -1.0f : 1.0f);
}

} // namespace llk
