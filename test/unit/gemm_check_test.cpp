// ABFT GEMM checks (runtime/cpu/gemm_check.h): the checksum never fires on a
// clean GEMM (random shapes, transposes, batched and broadcast matmuls, data
// chosen to maximise rounding error, float and double), always fires when any
// single output element has a high exponent bit flipped, and the injection
// hook flips exactly one element of exactly one GEMM.
#include "runtime/cpu/gemm_check.h"
#include "runtime/cpu/kernels.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace llamart::cpu {
namespace {

enum class Data { Normal, Positive, Scaled };

template <typename T>
std::vector<T> make(size_t n, Data kind, std::mt19937_64 &rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) {
    double x = normal(rng);
    if (kind == Data::Positive) // no cancellation: rounding errors add up
      x = 1.0 + unit(rng);
    else if (kind == Data::Scaled) // magnitudes over 12 decades
      x *= std::pow(10.0, 12.0 * unit(rng) - 6.0);
    v[i] = static_cast<T>(x);
  }
  return v;
}

struct Case {
  int64_t batch, m, n, k;
  bool ta, tb, broadcast;
};

template <typename T> void expect_clean_never_fires() {
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<int> dim(1, 96);
  std::vector<Case> cases;
  for (int i = 0; i < 120; ++i)
    cases.push_back({1 + i % 3, dim(rng), dim(rng), dim(rng), (i & 1) != 0,
                     (i & 2) != 0, (i & 4) != 0});
  // Model-like shapes: long reductions (weight gradients sum over tokens).
  cases.push_back({1, 64, 256, 4096, false, false, false});
  cases.push_back({1, 128, 96, 4096, true, false, false});
  cases.push_back({4, 128, 352, 128, false, true, true});
  cases.push_back({2, 512, 64, 1024, false, false, true});
  for (const Case &c : cases)
    for (Data data : {Data::Normal, Data::Positive, Data::Scaled}) {
      const int64_t b_count = c.broadcast ? 1 : c.batch;
      const std::vector<T> a = make<T>(size_t(c.batch * c.m * c.k), data, rng);
      const std::vector<T> b = make<T>(size_t(b_count * c.k * c.n), data, rng);
      std::vector<T> out(size_t(c.batch * c.m * c.n));
      gemm_check_begin(true);
      matmul<T>(a.data(), b.data(), out.data(), c.batch, c.m, c.n, c.k, c.ta,
                c.tb, c.broadcast);
      const GemmCheckStats s = gemm_check_end();
      EXPECT_GE(s.checked, 1);
      EXPECT_EQ(s.failed, 0) << "batch " << c.batch << " m " << c.m << " n "
                             << c.n << " k " << c.k << " ta " << c.ta << " tb "
                             << c.tb << " broadcast " << c.broadcast
                             << " data " << int(data);
    }
  // Checks are off again after gemm_check_end.
  std::vector<T> a(4, T(1)), b(4, T(1)), out(4);
  matmul<T>(a.data(), b.data(), out.data(), 1, 2, 2, 2, false, false, false);
  gemm_check_begin(false);
  EXPECT_EQ(gemm_check_end().checked, 0);
}

TEST(GemmCheck, CleanFloatGemmsNeverFire) { expect_clean_never_fires<float>(); }
TEST(GemmCheck, CleanDoubleGemmsNeverFire) { expect_clean_never_fires<double>(); }

// The rounding error actually seen stays well inside the bound, and the bound
// is not vacuous: an error of 100 bound-widths in one element fires.
TEST(GemmCheck, ToleranceIsRigorousAndTight) {
  std::mt19937_64 rng(7);
  const int64_t m = 48, n = 40, k = 2048;
  const std::vector<float> a = make<float>(size_t(m * k), Data::Positive, rng);
  const std::vector<float> b = make<float>(size_t(k * n), Data::Positive, rng);
  std::vector<float> c(size_t(m * n));
  matmul<float>(a.data(), b.data(), c.data(), 1, m, n, k, false, false, false);
  double worst = -1.0;
  EXPECT_TRUE(gemm_checksum_ok<float>(false, false, m, n, k, a.data(), b.data(),
                                      c.data(), &worst));
  EXPECT_GE(worst, 0.0);
  EXPECT_LT(worst, 0.5);
  // Row 0's bound is 2 (gamma_K(2^-24) + gamma_{N+K+1}(2^-53)) p_0 with
  // p_0 <= sum_j r_j (|A||B|)_0j < 2 N max_j |C_0j| (entries are positive).
  float cmax = 0.0f;
  for (int64_t j = 0; j < n; ++j)
    cmax = std::max(cmax, c[size_t(j)]);
  const double u = 0x1p-24;
  const double bound = 2.0 * (k * u / (1 - k * u) + 1e-12) * 2.0 * n * cmax;
  std::vector<float> bad = c;
  bad[3] += static_cast<float>(100.0 * bound);
  EXPECT_FALSE(gemm_checksum_ok<float>(false, false, m, n, k, a.data(), b.data(),
                                       bad.data()));
}

template <typename T> void expect_every_flip_fires() {
  std::mt19937_64 rng(3);
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    const int64_t m = 9, n = 7, k = 300;
    std::vector<T> a = make<T>(size_t(m * k), Data::Normal, rng);
    const std::vector<T> b = make<T>(size_t(k * n), Data::Scaled, rng);
    // Row 4 of op(A) is zero, so row 4 of C is exactly zero: a flip there
    // turns 0 into 2, caught by the absolute term alone.
    for (int64_t kk = 0; kk < k; ++kk)
      a[size_t(ta ? kk * m + 4 : 4 * k + kk)] = T(0);
    std::vector<T> c(size_t(m * n));
    matmul<T>(a.data(), b.data(), c.data(), 1, m, n, k, ta, tb, false);
    ASSERT_TRUE(gemm_checksum_ok<T>(ta, tb, m, n, k, a.data(), b.data(), c.data()));
    for (int64_t e = 0; e < m * n; ++e) {
      std::vector<T> bad = c;
      flip_high_exponent_bit(bad[size_t(e)]);
      ASSERT_NE(std::memcmp(&bad[size_t(e)], &c[size_t(e)], sizeof(T)), 0);
      EXPECT_FALSE(gemm_checksum_ok<T>(ta, tb, m, n, k, a.data(), b.data(),
                                       bad.data()))
          << "element " << e << " (" << c[size_t(e)] << " -> " << bad[size_t(e)]
          << "), ta " << ta << " tb " << tb;
    }
  }
}

TEST(GemmCheck, AnyFlippedFloatElementFires) { expect_every_flip_fires<float>(); }
TEST(GemmCheck, AnyFlippedDoubleElementFires) { expect_every_flip_fires<double>(); }

TEST(GemmCheck, FlipSetsTheHighestClearExponentBit) {
  float f = 0.5f; // exponent 126 = 0b01111110: bit 30 clear -> x 2^128
  flip_high_exponent_bit(f);
  EXPECT_EQ(f, std::ldexp(0.5f, 128));
  f = 3.0f; // exponent 128 = 0b10000000: bit 29 is the highest clear one
  flip_high_exponent_bit(f);
  EXPECT_EQ(f, std::ldexp(3.0f, 64));
  f = 1.0f; // exponent 127 + 128 = 255: infinity
  flip_high_exponent_bit(f);
  EXPECT_TRUE(std::isinf(f));
  f = 0.0f;
  flip_high_exponent_bit(f);
  EXPECT_EQ(f, 2.0f);
  double d = 0.25; // exponent 1021 = 0b01111111101: bit 62 clear -> x 2^1024
  flip_high_exponent_bit(d);
  EXPECT_EQ(d, std::ldexp(0.25, 1024));
  d = -3.0;
  flip_high_exponent_bit(d);
  EXPECT_EQ(d, std::ldexp(-3.0, 512));
}

// The injection hook corrupts exactly one element of the (seed % 4)-th GEMM,
// and verification counts exactly that GEMM as failed.
TEST(GemmCheck, InjectedBitflipHitsOneElementAndIsCaught) {
  std::mt19937_64 rng(11);
  const int64_t batch = 3, m = 17, n = 13, k = 29;
  for (bool broadcast : {false, true})
    for (uint64_t seed = 0; seed < 12; ++seed) {
      const std::vector<float> a = make<float>(size_t(batch * m * k), Data::Normal, rng);
      const std::vector<float> b = make<float>(
          size_t((broadcast ? 1 : batch) * k * n), Data::Normal, rng);
      // Broadcast with a plain A folds the batch into one GEMM per call (4
      // in all); a transposed, unshared A issues one per matrix (12).
      const bool ta = !broadcast;
      std::vector<float> clean(size_t(batch * m * n));
      matmul<float>(a.data(), b.data(), clean.data(), batch, m, n, k, ta, false,
                    broadcast);
      for (bool verify : {false, true}) {
        std::vector<std::vector<float>> outs(4, std::vector<float>(clean.size()));
        gemm_check_begin(verify);
        gemm_inject_bitflip(seed);
        for (auto &o : outs)
          matmul<float>(a.data(), b.data(), o.data(), batch, m, n, k, ta, false,
                        broadcast);
        const GemmCheckStats s = gemm_check_end();
        EXPECT_TRUE(s.bitflip_delivered);
        int64_t differing = 0;
        for (const auto &o : outs)
          for (size_t i = 0; i < o.size(); ++i)
            differing += std::memcmp(&o[i], &clean[i], sizeof(float)) != 0;
        EXPECT_EQ(differing, 1) << "seed " << seed;
        EXPECT_EQ(s.failed, verify ? 1 : 0) << "seed " << seed;
        EXPECT_EQ(s.checked, verify ? (broadcast ? 4 : 12) : 0);
      }
    }
}

} // namespace
} // namespace llamart::cpu
