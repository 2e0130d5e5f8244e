// cuBLASLt GEMMs (runtime/cuda/lt_gemm.h) against a float64 CPU product of
// the same bf16-rounded inputs, for every transpose combination, batched,
// with a shared B (folded and strided), fp32 and bf16 outputs, and beta = 1.
// Fresh random inputs per case, outputs poisoned with NaN first; relative
// error ||out - ref|| / ||ref|| under 1e-5 (fp32 out: fp32 accumulation of
// exact bf16 products) or 8e-3 (bf16 out: one rounding). Label `cuda`:
// skipped, with the driver's reason, where no GPU is visible.
#include "runtime/cuda/check.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/lt_gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

using namespace llamart::cuda;

namespace {

uint16_t to_bf16(float f) { // round to nearest even (inputs are finite)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}
float from_bf16(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct Case {
  int64_t batch, m, n, k;
  bool ta, tb, broadcast, accumulate;
  OutType out;
};

class CudaGemm : public ::testing::TestWithParam<Case> {
protected:
  void SetUp() override {
    std::string why;
    if (!probe_device(&why))
      GTEST_SKIP() << "no CUDA device: " << why;
  }
};

TEST_P(CudaGemm, MatchesFloat64Reference) {
  const Case c = GetParam();
  std::mt19937_64 rng(std::hash<std::string>()(
      ::testing::UnitTest::GetInstance()->current_test_info()->name()));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t a_n = c.batch * c.m * c.k;
  const int64_t b_n = (c.broadcast ? 1 : c.batch) * c.k * c.n;
  const int64_t c_n = c.batch * c.m * c.n;
  std::vector<uint16_t> a(a_n), b(b_n);
  for (auto &x : a) x = to_bf16(normal(rng));
  for (auto &x : b) x = to_bf16(normal(rng));
  std::vector<double> start(c_n, 0.0);
  if (c.accumulate)
    for (auto &x : start) x = from_bf16(to_bf16(normal(rng)));

  // Reference: row-major, op() per flag, in float64.
  std::vector<double> ref(c_n);
  for (int64_t bi = 0; bi < c.batch; ++bi)
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) {
        double s = 0.0;
        for (int64_t p = 0; p < c.k; ++p) {
          const uint16_t *ab = a.data() + bi * c.m * c.k;
          const uint16_t *bb = b.data() + (c.broadcast ? 0 : bi * c.k * c.n);
          double av = from_bf16(c.ta ? ab[p * c.m + i] : ab[i * c.k + p]);
          double bv = from_bf16(c.tb ? bb[j * c.k + p] : bb[p * c.n + j]);
          s += av * bv;
        }
        ref[bi * c.m * c.n + i * c.n + j] = start[bi * c.m * c.n + i * c.n + j] + s;
      }

  const size_t out_bytes = c.out == OutType::F32 ? 4 : 2;
  void *da, *db, *dc;
  LLAMART_CUDA_CHECK(cudaMalloc(&da, a_n * 2));
  LLAMART_CUDA_CHECK(cudaMalloc(&db, b_n * 2));
  LLAMART_CUDA_CHECK(cudaMalloc(&dc, c_n * out_bytes));
  LLAMART_CUDA_CHECK(cudaMemcpy(da, a.data(), a_n * 2, cudaMemcpyHostToDevice));
  LLAMART_CUDA_CHECK(cudaMemcpy(db, b.data(), b_n * 2, cudaMemcpyHostToDevice));
  if (c.accumulate) {
    std::vector<float> f(start.begin(), start.end());
    std::vector<uint16_t> h(c_n);
    for (int64_t i = 0; i < c_n; ++i) h[i] = to_bf16(f[i]);
    LLAMART_CUDA_CHECK(cudaMemcpy(dc, c.out == OutType::F32 ? (void *)f.data() : (void *)h.data(),
                                  c_n * out_bytes, cudaMemcpyHostToDevice));
  } else {
    LLAMART_CUDA_CHECK(cudaMemset(dc, 0xff, c_n * out_bytes)); // NaN poison
  }
  LtGemm gemm;
  gemm.matmul(nullptr, da, db, dc, c.out, c.batch, c.m, c.n, c.k, c.ta, c.tb,
              c.broadcast, c.accumulate);
  LLAMART_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> got(c_n);
  if (c.out == OutType::F32) {
    std::vector<float> h(c_n);
    LLAMART_CUDA_CHECK(cudaMemcpy(h.data(), dc, c_n * 4, cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < c_n; ++i) got[i] = h[i];
  } else {
    std::vector<uint16_t> h(c_n);
    LLAMART_CUDA_CHECK(cudaMemcpy(h.data(), dc, c_n * 2, cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < c_n; ++i) got[i] = from_bf16(h[i]);
  }
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
  double diff = 0.0, norm = 0.0;
  for (int64_t i = 0; i < c_n; ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "element " << i << " not written or not finite";
    diff += (got[i] - ref[i]) * (got[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  const double rel = std::sqrt(diff / norm);
  EXPECT_LT(rel, c.out == OutType::F32 ? 1e-5 : 8e-3) << "relative error " << rel;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaGemm,
    ::testing::Values(
        Case{1, 64, 96, 128, false, false, false, false, OutType::F32},
        Case{1, 64, 96, 128, true, false, false, false, OutType::F32},
        Case{1, 64, 96, 128, false, true, false, false, OutType::F32},
        Case{1, 64, 96, 128, true, true, false, false, OutType::F32},
        Case{3, 33, 17, 40, false, false, false, false, OutType::BF16},
        Case{3, 33, 17, 40, true, true, false, false, OutType::BF16},
        Case{4, 48, 64, 32, false, true, true, false, OutType::BF16},  // linear layer
        Case{4, 48, 64, 32, true, false, true, false, OutType::F32},   // shared B, strided
        Case{2, 40, 24, 56, false, true, false, true, OutType::F32},   // beta = 1
        Case{1, 128, 256, 512, false, true, true, true, OutType::BF16}));

} // namespace
