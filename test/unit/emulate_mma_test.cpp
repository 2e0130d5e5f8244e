// The emulator's tensor-core and asynchronous-copy instructions
// (runtime/cuda/emulate.h through runtime/cuda/kernels/mma.cuh) against
// plain matrix products: mma.sync m16n8k16 with operands placed by the PTX
// ISA's fragment layouts (a kernel that places one register wrongly gets a
// wrong product), ldmatrix x1/x2/x4 with and without .trans feeding the same
// MMA, cp.async's groups (data arrives at the wait that covers it, zeros for
// an invalid source, no copy may outlive its thread), and the bank counters
// on ldmatrix (unpadded rows conflict 8 ways, padded rows not at all).
#include "runtime/cuda/kernels/mma.cuh"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

namespace {

using bf16 = __nv_bfloat16;

/// Random bf16 values with their exact values in double.
struct Matrix {
  int rows, cols;
  std::vector<bf16> v;
  std::vector<double> d;
  Matrix(int r, int c, unsigned seed) : rows(r), cols(c), v(size_t(r * c)), d(v.size()) {
    std::mt19937 rng{seed};
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (size_t i = 0; i < v.size(); ++i) {
      v[i] = __float2bfloat16(n(rng));
      d[i] = __bfloat162float(v[i]);
    }
  }
  uint32_t pair(int r, int c) const { // elements (r, c) and (r, c + 1)
    return uint32_t(v[size_t(r * cols + c)].bits) | uint32_t(v[size_t(r * cols + c + 1)].bits) << 16;
  }
  uint32_t pair_down(int r, int c) const { // elements (r, c) and (r + 1, c)
    return uint32_t(v[size_t(r * cols + c)].bits) | uint32_t(v[size_t((r + 1) * cols + c)].bits) << 16;
  }
};

/// D = A (16x16) B (16x8) + C in double.
std::vector<double> product(const Matrix &a, const Matrix &b, const std::vector<float> &c) {
  std::vector<double> d(16 * 8);
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j) {
      double s = c[size_t(i * 8 + j)];
      for (int k = 0; k < 16; ++k)
        s += a.d[size_t(i * 16 + k)] * b.d[size_t(k * 8 + j)];
      d[size_t(i * 8 + j)] = s;
    }
  return d;
}

double max_error(const std::vector<float> &got, const std::vector<double> &want) {
  double e = 0.0;
  for (size_t i = 0; i < want.size(); ++i)
    e = std::max(e, std::isfinite(got[i]) ? std::fabs(got[i] - want[i]) : INFINITY);
  return e;
}

/// Element (row, col) of a 16x8 fp32 C/D tile (row-major at d) held by
/// fragment register i of `lane` (c0, c1: row g; c2, c3: row g + 8).
template <typename F> __device__ F &c_element(F *d, int lane, int i) {
  return d[(lane / 4 + 8 * (i / 2)) * 8 + 2 * (lane % 4) + (i & 1)];
}

// One warp: fragments straight from the PTX ISA's tables, then one MMA.
// `swap` exchanges a1 and a2 (a plausible mistake: rows 8-15 vs columns
// 8-15), which must give a wrong product.
__global__ void mma_direct(const Matrix *a, const Matrix *b, const float *c, float *d,
                           bool swap) {
  const int lane = int(threadIdx.x), g = lane / 4, t = lane % 4;
  uint32_t af[4] = {a->pair(g, 2 * t), a->pair(g + 8, 2 * t), a->pair(g, 2 * t + 8),
                    a->pair(g + 8, 2 * t + 8)};
  if (swap)
    std::swap(af[1], af[2]);
  const uint32_t bf[2] = {b->pair_down(2 * t, g), b->pair_down(2 * t + 8, g)};
  float cf[4], df[4];
  for (int i = 0; i < 4; ++i)
    cf[i] = c_element(c, lane, i);
  llk::mma_bf16_16816(df, af, bf, cf);
  for (int i = 0; i < 4; ++i)
    c_element(d, lane, i) = df[i];
}

TEST(EmulateMma, M16N8K16MatchesTheProductWithThePtxLayouts) {
  const Matrix a(16, 16, 1), b(16, 8, 2);
  std::vector<float> c(128);
  for (size_t i = 0; i < c.size(); ++i)
    c[i] = float(i % 7) - 3.0f;
  const std::vector<double> want = product(a, b, c);
  std::vector<float> d(128, NAN);
  LLAMA_LAUNCH(mma_direct, dim3(1), dim3(32), nullptr, &a, &b, c.data(), d.data(), false);
  // Exact products, one fp32 rounding of sums of magnitude ~10.
  EXPECT_LE(max_error(d, want), 1e-5);
  LLAMA_LAUNCH(mma_direct, dim3(1), dim3(32), nullptr, &a, &b, c.data(), d.data(), true);
  EXPECT_GT(max_error(d, want), 0.1);
}

// A in shared memory row-major (16x16, row stride `lda` elements) through
// ldmatrix.x4; B row-major [k][n] (16x8) through ldmatrix_t.x2 (the V
// operand), or stored as B^T [n][k] (8x16, the K operand) through
// ldmatrix.x2, or (x1) one 8x8 half at a time. Four warps; each computes
// the same product, warp w with its operands at a different offset.
__global__ void mma_ldmatrix(const Matrix *a, const Matrix *b, float *d, int mode) {
  alignas(16) __shared__ bf16 sa[16 * 24], sb[16 * 24], sbt[8 * 24];
  const int lane = int(threadIdx.x) & 31;
  if (threadIdx.x < 32) {
    for (int i = lane; i < 256; i += 32)
      sa[(i / 16) * 24 + i % 16] = a->v[size_t(i)];
    for (int i = lane; i < 128; i += 32) {
      sb[(i / 8) * 24 + i % 8] = b->v[size_t(i)];
      sbt[(i % 8) * 24 + i / 8] = b->v[size_t(i)]; // B^T
    }
  }
  __syncthreads();
  uint32_t af[4];
  // Lane l: row l % 16, column 8 (l / 16).
  llk::ldmatrix<4>(af, &sa[(lane % 16) * 24 + (lane / 16) * 8]);
  uint32_t bf[2];
  if (mode == 0) {
    llk::ldmatrix_t<2>(bf, &sb[(lane % 16) * 24]);  // rows k 0-7, then 8-15
  } else if (mode == 1) {
    llk::ldmatrix<2>(bf, &sbt[(lane % 8) * 24 + (lane / 8 % 2) * 8]); // B^T cols 0-7, 8-15
  } else {
    uint32_t lo[1], hi[1];
    llk::ldmatrix_t<1>(lo, &sb[(lane % 8) * 24]);
    llk::ldmatrix_t<1>(hi, &sb[(lane % 8 + 8) * 24]);
    bf[0] = lo[0];
    bf[1] = hi[0];
  }
  const float zero[4] = {0, 0, 0, 0};
  float df[4];
  llk::mma_bf16_16816(df, af, bf, zero);
  for (int i = 0; i < 4; ++i)
    c_element(d + 128 * (threadIdx.x / 32), lane, i) = df[i];
}

TEST(EmulateMma, LdmatrixFeedsTheMmaInEveryForm) {
  const Matrix a(16, 16, 3), b(16, 8, 4);
  const std::vector<double> want = product(a, b, std::vector<float>(128, 0.0f));
  for (int mode : {0, 1, 2}) {
    std::vector<float> d(4 * 128, NAN);
    LLAMA_LAUNCH(mma_ldmatrix, dim3(1), dim3(128), nullptr, &a, &b, d.data(), mode);
    for (int w = 0; w < 4; ++w)
      EXPECT_LE(max_error(std::vector<float>(d.begin() + 128 * w, d.begin() + 128 * (w + 1)),
                          want),
                1e-5)
          << "mode " << mode << " warp " << w;
  }
}

// The register contents of ldmatrix directly: element (r, c) of an 8x8
// matrix i holds the value 64 i + 8 r + c; without .trans lane l gets row
// l / 4, elements 2 (l % 4) and 2 (l % 4) + 1; with .trans the transpose.
__global__ void ldmatrix_raw(uint32_t *out, bool trans) {
  alignas(16) __shared__ uint16_t m[4 * 64];
  const unsigned lane = threadIdx.x;
  for (unsigned i = lane; i < 256; i += 32)
    m[i] = uint16_t(i);
  __syncthreads();
  uint32_t r[4];
  if (trans)
    llk::ldmatrix_t<4>(r, &m[lane * 8]);
  else
    llk::ldmatrix<4>(r, &m[lane * 8]);
  for (int i = 0; i < 4; ++i)
    out[lane * 4 + unsigned(i)] = r[i];
}

TEST(EmulateMma, LdmatrixRegisterLayout) {
  for (bool trans : {false, true}) {
    std::vector<uint32_t> out(128);
    LLAMA_LAUNCH(ldmatrix_raw, dim3(1), dim3(32), nullptr, out.data(), trans);
    for (unsigned l = 0; l < 32; ++l)
      for (unsigned i = 0; i < 4; ++i) {
        const unsigned r0 = trans ? 2 * (l % 4) : l / 4, c0 = trans ? l / 4 : 2 * (l % 4);
        const unsigned r1 = trans ? r0 + 1 : r0, c1 = trans ? c0 : c0 + 1;
        const uint32_t want = (64 * i + 8 * r0 + c0) | (64 * i + 8 * r1 + c1) << 16;
        EXPECT_EQ(out[l * 4 + i], want) << "lane " << l << " matrix " << i << " trans " << trans;
      }
  }
}

// cp.async: a thread's copy is not there before its wait; wait_group<1>
// completes all but the newest group; an invalid source gives zeros; after
// a barrier every thread sees every copy.
__global__ void async_copies(const float *src, float *out) {
  alignas(16) __shared__ float s[3 * 32 * 4];
  const unsigned t = threadIdx.x;
  float *mine = &s[t * 4];
  for (int i = 0; i < 4; ++i) {
    mine[i] = -1.0f;
    mine[128 + i] = -2.0f;
  }
  llk::cp_async16(mine, src + t * 4, true);
  llk::cp_async_commit();
  llk::cp_async16(mine + 128, src + 128 + t * 4, true);
  llk::cp_async_commit();
  llk::cp_async16(mine + 256, src, false); // zero-fill
  llk::cp_async_commit();
  out[t] = mine[0];                        // before any wait: the old value
  llk::cp_async_wait<2>();                 // the first group only
  out[32 + t] = mine[0];
  out[64 + t] = mine[128 + 1];             // the second group is still in flight
  llk::cp_async_wait<0>();
  __syncthreads();
  out[96 + t] = s[((t + 1) % 32) * 4 + 128 + 2]; // another thread's copy
  out[128 + t] = s[((t + 5) % 32) * 4 + 256 + 3];
}

TEST(EmulateMma, CpAsyncCompletesAtItsWait) {
  std::vector<float> src(256), out(160, NAN);
  for (size_t i = 0; i < src.size(); ++i)
    src[i] = float(i);
  LLAMA_LAUNCH(async_copies, dim3(1), dim3(32), nullptr, src.data(), out.data());
  for (unsigned t = 0; t < 32; ++t) {
    EXPECT_EQ(out[t], -1.0f);
    EXPECT_EQ(out[32 + t], float(t * 4));
    EXPECT_EQ(out[64 + t], -2.0f);
    EXPECT_EQ(out[96 + t], float(128 + ((t + 1) % 32) * 4 + 2));
    EXPECT_EQ(out[128 + t], 0.0f);
  }
}

__global__ void copy_never_waited(const float *src) {
  alignas(16) __shared__ float s[4 * 32];
  llk::cp_async16(&s[threadIdx.x * 4], src + threadIdx.x * 4, true);
  llk::cp_async_commit();
}

TEST(EmulateMma, ACopyOutlivingItsThreadThrows) {
  std::vector<float> src(128);
  EXPECT_THROW(LLAMA_LAUNCH(copy_never_waited, dim3(1), dim3(32), nullptr, src.data()),
               std::runtime_error);
}

// ldmatrix.x4 over rows of `stride` bf16, one request per matrix: 64 (128
// bytes) puts the 8 rows of a matrix in the same 4 banks (8 wavefronts
// each); 72 (16 bytes of padding) spreads them over all 32 (one each, as
// ideal).
__global__ void ldmatrix_banks(uint32_t *out, int stride) {
  LLK_DYNAMIC_SHARED(smem);
  auto *tile = reinterpret_cast<bf16 *>(smem);
  const unsigned lane = threadIdx.x;
  for (int i = int(lane); i < 32 * stride; i += 32)
    tile[i] = __float2bfloat16(1.0f);
  __syncthreads();
  uint32_t r[4];
  llk::ldmatrix<4>(r, &tile[int(lane % 16) * stride + int(lane / 16) * 8]);
  out[lane] = r[0] ^ r[3];
}

TEST(EmulateMma, BankCountersSeeLdmatrixConflicts) {
  llama_emu::set_counting(true);
  uint32_t out[32];
  auto *kernel = &ldmatrix_banks;
  auto run = [&](int stride) {
    llama_emu::banks().clear();
    LLAMA_LAUNCH_SMEM(kernel, dim3(1), dim3(32), size_t(32 * stride * 2), nullptr, out, stride);
    return llama_emu::banks()[reinterpret_cast<const void *>(kernel)];
  };
  llama_emu::Banks b = run(64);
  EXPECT_EQ(b.requests, 4u);
  EXPECT_EQ(b.wavefronts, 32u);
  EXPECT_EQ(b.ideal_wavefronts, 4u);
  b = run(72);
  EXPECT_EQ(b.wavefronts, 4u);
  EXPECT_EQ(b.ideal_wavefronts, 4u);
  llama_emu::set_counting(false);
  llama_emu::banks().clear();
}

// Dynamic shared memory starts as a NaN pattern in every block, and a launch
// asking for more than a block may have is refused.
__global__ void read_fresh(float *out) {
  LLK_DYNAMIC_SHARED(smem);
  if (blockIdx.x == 0)
    reinterpret_cast<float *>(smem)[threadIdx.x] = 1.0f;
  __syncthreads();
  out[blockIdx.x * 32 + threadIdx.x] = reinterpret_cast<float *>(smem)[threadIdx.x];
}

TEST(EmulateMma, DynamicSharedMemoryIsPoisonedPerBlock) {
  std::vector<float> out(64);
  LLAMA_LAUNCH_SMEM(read_fresh, dim3(2), dim3(32), 128, nullptr, out.data());
  EXPECT_EQ(out[3], 1.0f);
  EXPECT_TRUE(std::isnan(out[32 + 3]));
  EXPECT_THROW(LLAMA_LAUNCH_SMEM(read_fresh, dim3(1), dim3(32), size_t(228) * 1024, nullptr,
                                 out.data()),
               std::runtime_error);
}

} // namespace
