// ABFT checks of the GEMMs of a generated CUDA step (--verify-gemm-every on a
// --target cuda binary): the identity and bound of runtime/cpu/gemm_check.h,
// evaluated on the device in fp64, one warp per row. For C = op(A) op(B) (M x K times K x N)
// and fixed weights r_j in [1, 2) (the CPU check's), every row must satisfy
//     |sum_j C_ij r_j - sum_k op(A)_ik (op(B) r)_k|
//         <= rel * sum_k |op(A)_ik| (|op(B)| r)_k + out_u * sum_j |C_ij| r_j + slack
// with rel = 2 (gamma_K(2^-24) + gamma_{N+K+1}(2^-53)): cuBLASLt accumulates
// in fp32 whatever the storage (bf16 x bf16 products are exact in fp32), so a
// clean GEMM can never fail. out_u covers the rounding of a bf16 C (2 x
// 2^-8; 0 for fp32 C, whose rounding is the accumulation's). A flipped high
// exponent bit moves a row by far more than that; a non-finite element always
// fails.
//
// Included by the generated source after its prelude (ld, st, launches), so
// the same code runs on a GPU and under the CPU emulation. Each row is
// reduced by one warp in a fixed order; the only atomic is the integer
// failure count, whose value does not depend on order. The state is the
// device session's (session.cu); with none (or checks off) the hook below
// costs one branch per GEMM.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace llama_abft {

// One warp per row: a butterfly of shuffles sums it in a fixed order and
// leaves the total in every lane.
constexpr int kThreads = 32;

struct State {
  bool verify = false;     // check every GEMM of the step
  int64_t inject_at = -1;  // the GEMM whose output gets a flipped bit
  uint64_t inject_seed = 0;
  bool delivered = false;  // the flip happened
  int64_t gemms = 0;       // GEMMs issued since the step began (host count)
  int64_t checked = 0;     // of those, checked
  double *r = nullptr;     // weights, `capacity` of them
  double *w = nullptr, *wa = nullptr, *t = nullptr, *tabs = nullptr; // scratch
  unsigned *failures = nullptr; // device counter
  int64_t capacity = 0;    // the largest M, N or K of the program's GEMMs
};
inline State *state = nullptr; // set by the session while checks or an injection are on

// The CPU check's weights: 1 + (splitmix64 finalizer of j) / 2^53, in [1, 2).
inline double weight(uint64_t j) {
  uint64_t x = j;
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return 1.0 + double(x >> 11) * 0x1p-53;
}

__device__ __forceinline__ double warp_total(double v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// w_q = sum_j op(B)_qj r_j, wa_q = sum_j |op(B)_qj| r_j: one block per q < K.
template <typename TB>
__global__ void __launch_bounds__(kThreads)
    w_k(const TB *__restrict__ b, const double *__restrict__ r, double *__restrict__ w,
        double *__restrict__ wa, int64_t k, int64_t n, bool tb) {
  const int64_t q = blockIdx.x;
  double s = 0.0, a = 0.0;
  for (int64_t j = threadIdx.x; j < n; j += kThreads) {
    const double x = double(ld(b, tb ? j * k + q : q * n + j));
    s += x * r[j];
    a += (x < 0 ? -x : x) * r[j];
  }
  s = warp_total(s);
  a = warp_total(a);
  if (threadIdx.x == 0) {
    w[q] = s;
    wa[q] = a;
  }
}

// t_i = sum_j C_ij r_j, tabs_i = sum_j |C_ij| r_j: one block per row.
template <typename TC>
__global__ void __launch_bounds__(kThreads)
    t_k(const TC *__restrict__ c, const double *__restrict__ r, double *__restrict__ t,
        double *__restrict__ tabs, int64_t n) {
  const int64_t i = blockIdx.x;
  double s = 0.0, a = 0.0;
  for (int64_t j = threadIdx.x; j < n; j += kThreads) {
    const double x = double(ld(c, i * n + j));
    s += x * r[j];
    a += (x < 0 ? -x : x) * r[j];
  }
  s = warp_total(s);
  a = warp_total(a);
  if (threadIdx.x == 0) {
    t[i] = s;
    tabs[i] = a;
  }
}

// Row i: v = sum_q op(A)_iq w_q against t_i, within the bound.
template <typename TA>
__global__ void __launch_bounds__(kThreads)
    v_k(const TA *__restrict__ a, const double *__restrict__ w,
        const double *__restrict__ wa, const double *__restrict__ t,
        const double *__restrict__ tabs, int64_t m, int64_t k, bool ta, double rel,
        double out_u, double slack, unsigned *failures) {
  const int64_t i = blockIdx.x;
  double s = 0.0, p = 0.0;
  for (int64_t q = threadIdx.x; q < k; q += kThreads) {
    const double x = double(ld(a, ta ? q * m + i : i * k + q));
    s += x * w[q];
    p += (x < 0 ? -x : x) * wa[q];
  }
  s = warp_total(s);
  p = warp_total(p);
  if (threadIdx.x == 0) {
    const double diff = t[i] > s ? t[i] - s : s - t[i];
    if (!(diff <= rel * p + out_u * tabs[i] + slack)) // NaN fails too
      atomicAdd(failures, 1u);
  }
}

// Turns on the highest clear exponent bit of element `index` (the CPU
// injection's flip_high_exponent_bit): a value below 2 in magnitude grows by
// 2^64 or more.
__device__ __forceinline__ void flip(float *c, int64_t index) {
  uint32_t u;
  memcpy(&u, c + index, 4);
  for (int bit = 30; bit >= 23; --bit)
    if (!(u & (1u << bit))) {
      u |= 1u << bit;
      break;
    }
  memcpy(c + index, &u, 4);
}
__device__ __forceinline__ void flip(__nv_bfloat16 *c, int64_t index) {
  // A bf16 is the high half of a float: the same exponent bits, 14..7.
  float f = __bfloat162float(c[index]);
  flip(&f, 0);
  c[index] = __float2bfloat16(f);
}
template <typename TC>
__global__ void __launch_bounds__(32) flip_k(TC *c, int64_t index) {
  if (threadIdx.x == 0)
    flip(c, index);
}

inline double gamma(double n, double u) {
  const double nu = n * u;
  return nu >= 0.5 ? HUGE_VAL : nu / (1.0 - nu);
}

// The hook every generated GEMM call makes after its GEMM (C: batch x M x N,
// A and B as op() expects, B shared by the batch when `shared`).
template <typename TA, typename TB, typename TC>
void after_gemm(cudaStream_t s, const TA *a, const TB *b, TC *c, int64_t batch,
                int64_t m, int64_t n, int64_t k, bool ta, bool tb, bool shared) {
  State *st = state;
  if (!st || m <= 0 || n <= 0)
    return;
  const int64_t index = st->gemms++;
  if (index == st->inject_at) {
    const uint64_t pick = st->inject_seed % uint64_t(batch * m * n);
    LLAMA_LAUNCH(flip_k<TC>, dim3(1), dim3(32), s, c, int64_t(pick));
    st->delivered = true;
  }
  if (!st->verify)
    return;
  if (m > st->capacity || n > st->capacity || k > st->capacity)
    throw std::runtime_error("ABFT: a GEMM of " + std::to_string(m) + "x" +
                             std::to_string(n) + "x" + std::to_string(k) +
                             " exceeds the check's scratch");
  const double rel = 2.0 * (gamma(double(k), 0x1p-24) + gamma(double(n + k + 1), 0x1p-53));
  const double out_u = sizeof(TC) == 2 ? 2.0 * 0x1p-8 : 0.0;
  const double slack = 4.0 * double(n) * double(k + 1) * 0x1p-149; // fp32 denorm_min
  for (int64_t bi = 0; bi < batch; ++bi) {
    const TA *ab = a + bi * m * k;
    const TB *bb = b + (shared ? 0 : bi * k * n);
    const TC *cb = c + bi * m * n;
    LLAMA_LAUNCH(w_k<TB>, dim3(unsigned(k)), dim3(kThreads), s, bb, st->r, st->w, st->wa,
                 k, n, tb);
    LLAMA_LAUNCH(t_k<TC>, dim3(unsigned(m)), dim3(kThreads), s, cb, st->r, st->t,
                 st->tabs, n);
    LLAMA_LAUNCH(v_k<TA>, dim3(unsigned(m)), dim3(kThreads), s, ab, st->w, st->wa,
                 st->t, st->tabs, m, k, ta, rel, out_u, slack, st->failures);
  }
  ++st->checked;
}

} // namespace llama_abft
