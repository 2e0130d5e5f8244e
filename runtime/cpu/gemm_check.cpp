// ABFT checksums for GEMMs (see gemm_check.h for the identity and the bound).
//
// Work per GEMM: op(B) r and |op(B)| r (2KN), then per row op(A) v, |op(A)| w
// and C r (2MK + MN), all in double with a fixed summation order per output
// so that the verdict is the same on every run and thread count. Loops read
// the stored matrices contiguously in both transpose cases.
//
// Serial on purpose: OpenBLAS's threads keep spinning for a while after each
// GEMM returns, and an OpenMP team started right then competes with them for
// the cores (measured on the 2-core development machine: no faster on
// average and at times 30x slower). The check is 1-25% of its GEMM's time
// serially (tools/bench/gemm_verify_cost, docs/reliability.md).
#include "runtime/cpu/gemm_check.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace llamart::cpu {
namespace {

std::atomic<bool> g_verify{false};
std::atomic<int64_t> g_checked{0}, g_failed{0};
std::atomic<int64_t> g_flip_countdown{-1}; // GEMMs to let pass; -1 = disarmed
std::atomic<uint64_t> g_flip_seed{0};
std::atomic<bool> g_flip_delivered{false};

uint64_t mix64(uint64_t x) { // splitmix64's finalizer
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Scratch reused across calls (one set per thread that calls matmul); it
// only grows, so steady-state checks allocate nothing. r_j depends on j only,
// so the filled prefix stays valid.
struct Scratch {
  std::vector<double> r, v, w, t, p;
};
Scratch &scratch() {
  thread_local Scratch s;
  return s;
}

void ensure_weights(std::vector<double> &r, int64_t n) {
  const size_t old = r.size();
  if (static_cast<size_t>(n) <= old)
    return;
  r.resize(static_cast<size_t>(n));
  for (size_t j = old; j < r.size(); ++j) // in [1, 2): never zero, exact in double
    r[j] = 1.0 + static_cast<double>(mix64(j) >> 11) * 0x1p-53;
}

// gamma_n = n u / (1 - n u); infinite where the bound stops being meaningful
// (n u >= 1/2 would need K in the millions for fp32).
double gamma(int64_t n, double u) {
  const double nu = static_cast<double>(n) * u;
  return nu >= 0.5 ? std::numeric_limits<double>::infinity() : nu / (1.0 - nu);
}

// sum_j x_j y_j and sum_j |x_j| z_j in double. Four interleaved partial sums
// break the add-latency chain (and let the vectorizer pair them) while the
// order stays fixed, so the result is the same on every run; the rounding
// bound (gemm_check.h) holds for any summation order.
template <typename T>
void dot_pair(const T *x, const double *y, const double *z, int64_t n, double &xy,
              double &axz) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0, a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const double x0 = x[j], x1 = x[j + 1], x2 = x[j + 2], x3 = x[j + 3];
    s0 += x0 * y[j];
    s1 += x1 * y[j + 1];
    s2 += x2 * y[j + 2];
    s3 += x3 * y[j + 3];
    a0 += std::fabs(x0) * z[j];
    a1 += std::fabs(x1) * z[j + 1];
    a2 += std::fabs(x2) * z[j + 2];
    a3 += std::fabs(x3) * z[j + 3];
  }
  for (; j < n; ++j) {
    s0 += static_cast<double>(x[j]) * y[j];
    a0 += std::fabs(static_cast<double>(x[j])) * z[j];
  }
  xy = (s0 + s1) + (s2 + s3);
  axz = (a0 + a1) + (a2 + a3);
}

template <typename T> double dot(const T *x, const double *y, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    s0 += static_cast<double>(x[j]) * y[j];
    s1 += static_cast<double>(x[j + 1]) * y[j + 1];
    s2 += static_cast<double>(x[j + 2]) * y[j + 2];
    s3 += static_cast<double>(x[j + 3]) * y[j + 3];
  }
  for (; j < n; ++j)
    s0 += static_cast<double>(x[j]) * y[j];
  return (s0 + s1) + (s2 + s3);
}

constexpr int64_t kBlock = 256;

} // namespace

template <typename T>
bool gemm_checksum_ok(bool transpose_a, bool transpose_b, int64_t m, int64_t n,
                      int64_t k, const T *a, const T *b, const T *c,
                      double *worst) {
  if (worst)
    *worst = 0.0;
  if (m <= 0 || n <= 0)
    return true;
  Scratch &s = scratch();
  ensure_weights(s.r, n);
  const size_t kk_size = static_cast<size_t>(std::max<int64_t>(k, 1));
  if (s.v.size() < kk_size) {
    s.v.resize(kk_size);
    s.w.resize(kk_size);
  }
  const double *r = s.r.data();
  double *v = s.v.data(), *w = s.w.data();

  // v = op(B) r, w = |op(B)| r.
  if (!transpose_b) { // B is K x N: row kk is contiguous
    for (int64_t kk = 0; kk < k; ++kk)
      dot_pair(b + kk * n, r, r, n, v[kk], w[kk]);
  } else { // B is stored N x K: accumulate rows into a block of v
    const int64_t blocks = (k + kBlock - 1) / kBlock;
    for (int64_t bi = 0; bi < blocks; ++bi) {
      const int64_t lo = bi * kBlock, hi = std::min(k, lo + kBlock);
      for (int64_t kk = lo; kk < hi; ++kk)
        v[kk] = w[kk] = 0.0;
      for (int64_t j = 0; j < n; ++j) {
        const T *row = b + j * k;
        for (int64_t kk = lo; kk < hi; ++kk) {
          const double x = static_cast<double>(row[kk]);
          v[kk] += x * r[j];
          w[kk] += std::fabs(x) * r[j];
        }
      }
    }
  }

  // t = op(A) v, p = |op(A)| w; for a transposed A the columns of the stored
  // K x M matrix are accumulated a block of rows at a time.
  if (s.t.size() < static_cast<size_t>(m)) {
    s.t.resize(static_cast<size_t>(m));
    s.p.resize(static_cast<size_t>(m));
  }
  double *t = s.t.data(), *p = s.p.data();
  if (!transpose_a) {
    for (int64_t i = 0; i < m; ++i)
      dot_pair(a + i * k, v, w, k, t[i], p[i]);
  } else {
    const int64_t blocks = (m + kBlock - 1) / kBlock;
    for (int64_t bi = 0; bi < blocks; ++bi) {
      const int64_t lo = bi * kBlock, hi = std::min(m, lo + kBlock);
      for (int64_t i = lo; i < hi; ++i)
        t[i] = p[i] = 0.0;
      for (int64_t kk = 0; kk < k; ++kk) {
        const T *row = a + kk * m;
        for (int64_t i = lo; i < hi; ++i) {
          const double x = static_cast<double>(row[i]);
          t[i] += x * v[kk];
          p[i] += std::fabs(x) * w[kk];
        }
      }
    }
  }

  // Tolerance (gemm_check.h): twice the rounding bound of the GEMM in T and
  // of the double evaluation, plus underflow: each of the K products of an
  // element may lose up to one denormal step, weighted by r_j < 2.
  const double u = std::is_same_v<T, float> ? 0x1p-24 : 0x1p-53;
  const double rel = 2.0 * (gamma(k, u) + gamma(n + k + 1, 0x1p-53));
  const double abs_slack = 4.0 * static_cast<double>(n) *
                           static_cast<double>(k + 1) *
                           static_cast<double>(std::numeric_limits<T>::denorm_min());
  double worst_ratio = 0.0;
  int64_t bad_rows = 0;
  for (int64_t i = 0; i < m; ++i) {
    // Non-finite inputs leave the identity without information (both sides
    // overflow): the row is not judged; non-finite detection downstream sees it.
    if (!std::isfinite(t[i]) || !std::isfinite(p[i]))
      continue;
    const double sc = dot(c + i * n, r, n);
    const double diff = std::fabs(sc - t[i]);
    const double tol = rel * p[i] + abs_slack;
    if (!(diff <= tol)) { // also true for a NaN / Inf checksum
      ++bad_rows;
      worst_ratio = std::numeric_limits<double>::infinity();
      continue;
    }
    worst_ratio = std::max(worst_ratio, tol > 0 ? diff / tol : 0.0);
  }
  if (worst)
    *worst = worst_ratio;
  return bad_rows == 0;
}

template <typename T> void flip_high_exponent_bit(T &x) {
  using Bits = std::conditional_t<std::is_same_v<T, float>, uint32_t, uint64_t>;
  constexpr int kMantissa = std::numeric_limits<T>::digits - 1; // 23 / 52
  constexpr int kTop = sizeof(T) * 8 - 2;                        // 30 / 62
  Bits bits;
  std::memcpy(&bits, &x, sizeof bits);
  int bit = kTop;
  while (bit >= kMantissa && (bits >> bit) & 1u)
    --bit;
  if (bit < kMantissa) // exponent all ones (Inf / NaN): clear the top bit
    bit = kTop;
  bits ^= Bits(1) << bit;
  std::memcpy(&x, &bits, sizeof bits);
}

void gemm_check_begin(bool verify) {
  g_checked.store(0);
  g_failed.store(0);
  g_flip_countdown.store(-1);
  g_flip_delivered.store(false);
  g_verify.store(verify);
}

void gemm_inject_bitflip(uint64_t seed) {
  g_flip_seed.store(seed);
  g_flip_delivered.store(false);
  g_flip_countdown.store(static_cast<int64_t>(seed % 4));
}

GemmCheckStats gemm_check_end() {
  GemmCheckStats s;
  s.checked = g_checked.load();
  s.failed = g_failed.load();
  s.bitflip_delivered = g_flip_delivered.load();
  g_verify.store(false);
  g_flip_countdown.store(-1);
  return s;
}

template <typename T>
void after_gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n,
                int64_t k, const T *a, const T *b, T *c) {
  if (m <= 0 || n <= 0)
    return;
  const int64_t countdown = g_flip_countdown.load(std::memory_order_relaxed);
  if (countdown == 0) {
    const uint64_t pick = mix64(g_flip_seed.load()) % static_cast<uint64_t>(m * n);
    flip_high_exponent_bit(c[pick]);
    g_flip_delivered.store(true);
    g_flip_countdown.store(-1);
  } else if (countdown > 0) {
    g_flip_countdown.store(countdown - 1);
  }
  if (!g_verify.load(std::memory_order_relaxed))
    return;
  g_checked.fetch_add(1);
  if (!gemm_checksum_ok(transpose_a, transpose_b, m, n, k, a, b, c))
    g_failed.fetch_add(1);
}

template bool gemm_checksum_ok<float>(bool, bool, int64_t, int64_t, int64_t,
                                      const float *, const float *,
                                      const float *, double *);
template bool gemm_checksum_ok<double>(bool, bool, int64_t, int64_t, int64_t,
                                       const double *, const double *,
                                       const double *, double *);
template void flip_high_exponent_bit<float>(float &);
template void flip_high_exponent_bit<double>(double &);
template void after_gemm<float>(bool, bool, int64_t, int64_t, int64_t,
                                const float *, const float *, float *);
template void after_gemm<double>(bool, bool, int64_t, int64_t, int64_t,
                                 const double *, const double *, double *);

} // namespace llamart::cpu
