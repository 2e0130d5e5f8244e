// The emulator's warpgroup MMA (runtime/cuda/emulate.h through
// runtime/cuda/kernels/mma.cuh: wgmma_desc, wgmma_ss, wgmma_rs and their
// fence/commit/wait) against plain matrix products. The shared memory images
// are built here from the layouts as the PTX ISA and TMA describe them,
// independently of the emulator's address function:
//   - K-major without swizzle: 8 x 16-byte core matrices at the descriptor's
//     leading (K) and stride (M/N) byte offsets;
//   - K-major with the 128-byte swizzle: the tile as TMA's SWIZZLE_128B
//     writes it (row r of 128 bytes, 16-byte chunk c stored at c ^ (r % 8)),
//     walked over K = 64 in four k-steps of 32 bytes;
//   - MN-major (transposed) with the 128-byte swizzle: a V-like tile, rows of
//     K holding 64 elements of N, the second 64 columns LBO bytes on;
//   - A from registers in mma.m16n8k16's A layout per warp;
// and D is read back through the accumulator layout of the PTX ISA's table.
// A descriptor that misnames the layout (no swizzle on swizzled data, LBO and
// SBO swapped) gives a wrong product; D is untouched until the wait; a warp
// that issues a different operation, or a group never waited for, throws.
// And the mbarriers of warp-specialized kernels: a producer warpgroup's bulk
// copies into a two-stage ring (full/empty barriers, parities flipping per
// round) feed consumers exactly the data of each tile; cp.async copies arrive
// on a barrier once landed; a wait nothing will complete, or an arrival
// beyond the count, throws.
// And TMA's tiled copies: a box of a 4-d bf16 tensor (the attention kernels'
// [batch, seq, heads, dim] maps) lands packed, 16-byte chunk c of 128-byte
// row r at c ^ (r % 8) under the 128-byte swizzle and in place without it,
// out-of-bounds rows (past the end, before the start) zero, only at the
// barrier's completion; encodings the driver refuses throw. Named barriers
// order two warpgroups' turns (strict alternation), and an unbalanced
// arrival or mismatched counts throw; setmaxnreg.inc waits for the
// registers another warpgroup's setmaxnreg.dec gives back.
#include "runtime/cuda/kernels/mma.cuh"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <stdexcept>
#include <vector>

namespace {

using bf16 = __nv_bfloat16;

/// A rows x cols matrix of random bf16 values, with their exact values.
struct Matrix {
  int rows, cols;
  std::vector<bf16> v;
  Matrix(int r, int c, unsigned seed) : rows(r), cols(c), v(size_t(r * c)) {
    std::mt19937 rng{seed};
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (bf16 &x : v)
      x = __float2bfloat16(n(rng));
  }
  double at(int r, int c) const { return __bfloat162float(v[size_t(r * cols + c)]); }
  uint16_t bits(int r, int c) const { return v[size_t(r * cols + c)].bits; }
};

/// A (M x K) times B given as Bt (N x K), in double.
std::vector<double> product(const Matrix &a, const Matrix &bt) {
  std::vector<double> d(size_t(a.rows * bt.rows));
  for (int m = 0; m < a.rows; ++m)
    for (int n = 0; n < bt.rows; ++n) {
      double s = 0;
      for (int k = 0; k < a.cols; ++k)
        s += a.at(m, k) * bt.at(n, k);
      d[size_t(m * bt.rows + n)] = s;
    }
  return d;
}

double max_error(const std::vector<float> &got, const std::vector<double> &want) {
  double e = 0.0;
  for (size_t i = 0; i < want.size(); ++i)
    e = std::max(e, std::isfinite(got[i]) ? std::fabs(got[i] - want[i]) : INFINITY);
  return e;
}

void put(std::vector<uint8_t> &image, size_t offset, uint16_t bits) {
  ASSERT_LE(offset + 2, image.size());
  std::memcpy(image.data() + offset, &bits, 2);
}

// 16-byte chunk c of 128-byte line r, as TMA's SWIZZLE_128B stores it.
size_t sw128(size_t line, size_t chunk) { return line * 128 + ((chunk ^ (line % 8)) * 16); }

/// What a test kernel does: operand placement and descriptors.
struct Plan {
  enum Kind {
    KMajorNone,     // A and Bt K-major core matrices, K = 16, N = 64
    KMajorSw128,    // A (64 x 64) and Bt (N x 64) as TMA writes them, 4 k-steps
    MnMajorSw128,   // A K-major sw128; B (K x N) MN-major sw128, N = 128
    RegsA           // A from registers; Bt K-major sw128, K = 64, N = 64
  } kind;
  bool lie = false;     // describe the data wrongly (the test expects failure)
  int stray_warp = -1;  // this warp issues another descriptor (must throw)
  bool read_early = false; // copy D out before the wait as well
  bool no_wait = false; // never wait (must throw)
};

constexpr uint32_t kBBase = 16384; // B's image starts here (1024-aligned)

/// The accumulators of thread (w, lane) to row-major D (64 x N).
__device__ void store_d(const float *acc, int n, float *d) {
  const int t = int(threadIdx.x), w = t / 32, lane = t % 32, g = lane / 4, q = lane % 4;
  for (int i = 0; i < n / 2; ++i)
    d[(16 * w + g + 8 * ((i / 2) % 2)) * n + 8 * (i / 4) + 2 * q + i % 2] = acc[i];
}

template <int N>
__global__ void wgmma_kernel(const uint8_t *image, size_t image_bytes, const Matrix *a,
                             Plan plan, float *d, float *early) {
  LLK_DYNAMIC_SHARED(smem);
  const int t = int(threadIdx.x), w = t / 32, lane = t % 32, g = lane / 4, q = lane % 4;
  for (size_t i = size_t(t); i < image_bytes; i += 128)
    smem[i] = image[i];
  llk::fence_proxy_async();
  __syncthreads();
  float acc[N / 2];
  for (float &x : acc)
    x = -7.0f; // overwritten by the first (non-accumulating) step
  const uint8_t *A = smem, *B = smem + kBBase;
  using llk::SmemSwizzle;
  llk::wgmma_fence();
  switch (plan.kind) {
  case Plan::KMajorNone: {
    // Core matrices: the two K halves 1024 bytes apart (LBO), 8-row groups
    // 128 bytes apart (SBO).
    uint64_t da = llk::wgmma_desc(A, 1024, 128, SmemSwizzle::None);
    uint64_t db = llk::wgmma_desc(B, 1024, 128, SmemSwizzle::None);
    if (plan.lie) { // LBO and SBO swapped
      da = llk::wgmma_desc(A, 128, 1024, SmemSwizzle::None);
      db = llk::wgmma_desc(B, 128, 1024, SmemSwizzle::None);
    }
    if (w == plan.stray_warp)
      db = llk::wgmma_desc(B + 16, 1024, 128, SmemSwizzle::None);
    llk::wgmma_ss<N, false, false>(acc, da, db, false);
    break;
  }
  case Plan::KMajorSw128:
  case Plan::MnMajorSw128: {
    const SmemSwizzle sw = plan.lie ? SmemSwizzle::None : SmemSwizzle::B128;
    for (int ks = 0; ks < 4; ++ks) {
      const uint64_t da = llk::wgmma_desc(A + 32 * ks, 0, 1024, sw);
      if (plan.kind == Plan::KMajorSw128) {
        const uint64_t db = llk::wgmma_desc(B + 32 * ks, 0, 1024, sw);
        llk::wgmma_ss<N, false, false>(acc, da, db, ks > 0);
      } else {
        // 16 rows of K (2048 bytes) a k-step; the next 8 rows of K at SBO
        // 1024; the second 64 columns of N at LBO 8192 (64 rows of K on).
        const uint64_t db = llk::wgmma_desc(B + 2048 * ks, 8192, 1024, sw);
        llk::wgmma_ss<N, false, true>(acc, da, db, ks > 0);
      }
    }
    break;
  }
  case Plan::RegsA:
    for (int ks = 0; ks < 4; ++ks) {
      // mma.m16n8k16's A fragment of rows 16w..16w+15, columns 16ks..16ks+15.
      auto pair = [&](int r, int c) {
        return uint32_t(a->bits(16 * w + r, 16 * ks + c)) |
               uint32_t(a->bits(16 * w + r, 16 * ks + c + 1)) << 16;
      };
      const uint32_t frag[4] = {pair(g, 2 * q), pair(g + 8, 2 * q), pair(g, 2 * q + 8),
                                pair(g + 8, 2 * q + 8)};
      const uint64_t db = llk::wgmma_desc(B + 32 * ks, 0, 1024, SmemSwizzle::B128);
      llk::wgmma_rs<N, false>(acc, frag, db, ks > 0);
    }
    break;
  }
  llk::wgmma_commit();
  if (plan.read_early)
    store_d(acc, N, early);
  if (plan.no_wait)
    return;
  llk::wgmma_wait<0>();
  llk::wgmma_fence_operands(acc);
  store_d(acc, N, d);
}

struct Result {
  std::vector<float> d, early;
};

template <int N>
Result run(std::vector<uint8_t> image, const Matrix &a, const Plan &plan) {
  // Room past the operands (the NaN pattern of fresh shared memory), so that
  // a descriptor that misnames the layout reads garbage rather than leaving
  // the allocation.
  image.resize(kBBase + 65536, 0xff);
  Result r{std::vector<float>(size_t(64 * N), NAN), std::vector<float>(size_t(64 * N), NAN)};
  LLAMA_LAUNCH_SMEM(wgmma_kernel<N>, dim3(1), dim3(128), image.size(), nullptr, image.data(),
                    image.size(), &a, plan, r.d.data(), r.early.data());
  return r;
}

// A (64 x 16) and Bt (64 x 16), K-major core matrices: element (row, k) at
// (row % 8) * 16 + (row / 8) * SBO + (k / 8) * LBO + (k % 8) * 2.
std::vector<uint8_t> core_matrix_image(const Matrix &a, const Matrix &bt) {
  std::vector<uint8_t> image(kBBase + 2048, 0xff);
  auto place = [&](const Matrix &m, size_t base) {
    for (int r = 0; r < m.rows; ++r)
      for (int k = 0; k < 16; ++k)
        put(image, base + (r % 8) * 16 + (r / 8) * 128 + (k / 8) * 1024 + (k % 8) * 2,
            m.bits(r, k));
  };
  place(a, 0);
  place(bt, kBBase);
  return image;
}

// A (64 x 64) and, from kBBase, Bt (rows x 64) as TMA's SWIZZLE_128B tiles.
std::vector<uint8_t> sw128_k_image(const Matrix &a, const Matrix &bt) {
  std::vector<uint8_t> image(kBBase + size_t(bt.rows) * 128, 0xff);
  auto place = [&](const Matrix &m, size_t base) {
    for (int r = 0; r < m.rows; ++r)
      for (int k = 0; k < 64; ++k)
        put(image, base + sw128(size_t(r), size_t(k / 8)) + (k % 8) * 2, m.bits(r, k));
  };
  place(a, 0);
  place(bt, kBBase);
  return image;
}

TEST(EmulateWgmma, KMajorCoreMatricesMatchTheProduct) {
  const Matrix a(64, 16, 11), bt(64, 16, 12);
  const std::vector<double> want = product(a, bt);
  const std::vector<uint8_t> image = core_matrix_image(a, bt);
  // Exact products summed once: fp32 rounding of sums of magnitude ~10.
  EXPECT_LE(max_error(run<64>(image, a, {Plan::KMajorNone}).d, want), 1e-5);
  Plan lie{Plan::KMajorNone};
  lie.lie = true;
  EXPECT_GT(max_error(run<64>(image, a, lie).d, want), 0.1);
}

TEST(EmulateWgmma, KMajorSwizzled128WalksKInFourSteps) {
  const Matrix a(64, 64, 21), bt(128, 64, 22);
  const std::vector<double> want = product(a, bt);
  const std::vector<uint8_t> image = sw128_k_image(a, bt);
  EXPECT_LE(max_error(run<128>(image, a, {Plan::KMajorSw128}).d, want), 3e-5);
  Plan lie{Plan::KMajorSw128};
  lie.lie = true; // the same bytes described as unswizzled
  EXPECT_GT(max_error(run<128>(image, a, lie).d, want), 0.1);
  // N = 64 reads the first 64 rows of Bt only.
  const Matrix bt64(64, 64, 22);
  EXPECT_LE(max_error(run<64>(sw128_k_image(a, bt64), a, {Plan::KMajorSw128}).d,
                      product(a, bt64)),
            3e-5);
}

TEST(EmulateWgmma, MnMajorSwizzled128IsTheTransposedOperand) {
  // B (64 x 128, K x N) stored N-contiguous like a V tile: rows of K hold 64
  // columns of N as one swizzled 128-byte line; columns 64-127 follow 64
  // rows of K later (8192 bytes).
  const Matrix a(64, 64, 31), b(64, 128, 32);
  Matrix bt(128, 64, 0);
  for (int k = 0; k < 64; ++k)
    for (int n = 0; n < 128; ++n)
      bt.v[size_t(n * 64 + k)] = b.v[size_t(k * 128 + n)];
  std::vector<uint8_t> image = sw128_k_image(a, Matrix(0, 64, 0));
  image.resize(kBBase + 16384, 0xff);
  for (int k = 0; k < 64; ++k)
    for (int n = 0; n < 128; ++n)
      put(image, kBBase + size_t(n / 64) * 8192 + sw128(size_t(k), size_t(n % 64 / 8)) +
                     (n % 8) * 2,
          b.bits(k, n));
  const std::vector<double> want = product(a, bt);
  EXPECT_LE(max_error(run<128>(image, a, {Plan::MnMajorSw128}).d, want), 3e-5);
  Plan lie{Plan::MnMajorSw128};
  lie.lie = true;
  EXPECT_GT(max_error(run<128>(image, a, lie).d, want), 0.1);
}

TEST(EmulateWgmma, AFromRegistersUsesTheMmaALayoutPerWarp) {
  const Matrix a(64, 64, 41), bt(64, 64, 42);
  const std::vector<double> want = product(a, bt);
  EXPECT_LE(max_error(run<64>(sw128_k_image(a, bt), a, {Plan::RegsA}).d, want), 3e-5);
}

TEST(EmulateWgmma, AccumulatorsChangeOnlyAtTheWait) {
  const Matrix a(64, 16, 51), bt(64, 16, 52);
  Plan plan{Plan::KMajorNone};
  plan.read_early = true;
  const Result r = run<64>(core_matrix_image(a, bt), a, plan);
  for (float x : r.early)
    ASSERT_EQ(x, -7.0f); // what the registers held before the wgmma
  EXPECT_LE(max_error(r.d, product(a, bt)), 1e-5);
}

TEST(EmulateWgmma, WarpgroupCollectiveRulesAreEnforced) {
  const Matrix a(64, 16, 61), bt(64, 16, 62);
  const std::vector<uint8_t> image = core_matrix_image(a, bt);
  Plan stray{Plan::KMajorNone};
  stray.stray_warp = 2;
  EXPECT_THROW(run<64>(image, a, stray), std::runtime_error);
  Plan no_wait{Plan::KMajorNone};
  no_wait.no_wait = true;
  EXPECT_THROW(run<64>(image, a, no_wait), std::runtime_error);
}

// ---- mbarriers -------------------------------------------------------------

constexpr int kTiles = 7, kTileFloats = 1024, kStages = 2;

// Warpgroup 1's first thread copies tile i into stage i % 2 with a bulk copy
// on full[stage] (after the consumers released the stage through
// empty[stage]); warpgroup 0 waits on full[stage], sums 8 floats a thread and
// arrives on empty[stage]. `wrong_parity`: the consumers wait for the other
// parity of full (a classic off-by-one: the first wait returns at once).
__global__ void pipeline_kernel(const float *src, float *out, bool wrong_parity) {
  LLK_DYNAMIC_SHARED(smem);
  uint64_t *full = reinterpret_cast<uint64_t *>(smem), *empty = full + kStages;
  float *buf = reinterpret_cast<float *>(smem + 1024);
  const int t = int(threadIdx.x);
  if (t == 0)
    for (int s = 0; s < kStages; ++s) {
      llk::mbarrier_init(&full[s], 1);
      llk::mbarrier_init(&empty[s], 128);
    }
  __syncthreads();
  if (t >= 128) {
    if (t == 128)
      for (int i = 0; i < kTiles; ++i) {
        const int s = i % kStages;
        if (i >= kStages)
          llk::mbarrier_wait(&empty[s], unsigned(i / kStages - 1) & 1u);
        llk::mbarrier_arrive_expect_tx(&full[s], kTileFloats * 4);
        llk::bulk_copy(buf + s * kTileFloats, src + i * kTileFloats, kTileFloats * 4, &full[s]);
      }
    return;
  }
  for (int i = 0; i < kTiles; ++i) {
    const int s = i % kStages;
    llk::mbarrier_wait(&full[s], unsigned(i / kStages + (wrong_parity ? 1 : 0)) & 1u);
    float sum = 0.0f;
    for (int e = 0; e < 8; ++e)
      sum += buf[s * kTileFloats + 8 * t + e];
    out[i * 128 + t] = sum;
    llk::mbarrier_arrive(&empty[s]);
  }
}

/// How many of the consumers' sums are wrong.
int run_pipeline(bool wrong_parity) {
  std::vector<float> src(size_t(kTiles * kTileFloats)), out(size_t(kTiles * 128), NAN);
  for (size_t i = 0; i < src.size(); ++i)
    src[i] = float(i % 977) * 0.25f;
  LLAMA_LAUNCH_SMEM(pipeline_kernel, dim3(1), dim3(256), 1024 + kStages * kTileFloats * 4,
                    nullptr, src.data(), out.data(), wrong_parity);
  std::vector<float> want(out.size());
  for (int i = 0; i < kTiles; ++i)
    for (int t = 0; t < 128; ++t) {
      float sum = 0.0f;
      for (int e = 0; e < 8; ++e)
        sum += src[size_t(i * kTileFloats + 8 * t + e)];
      want[size_t(i * 128 + t)] = sum;
    }
  int wrong = 0;
  for (size_t i = 0; i < out.size(); ++i)
    wrong += !(out[i] == want[i]);
  return wrong;
}

TEST(EmulateMbarrier, BulkCopiesThroughATwoStageRing) {
  EXPECT_EQ(run_pipeline(false), 0);
  // Waiting for the wrong phase, the consumers read a stage before its tile
  // lands: wrong sums, or a wait that can never complete (the emulator
  // throws), whichever comes first.
  bool caught = false;
  try {
    caught = run_pipeline(true) > 0;
  } catch (const std::runtime_error &) {
    caught = true;
  }
  EXPECT_TRUE(caught);
}

// Every thread copies one 16-byte chunk with cp.async and hands it to the
// barrier (count 128); after the wait each reads its neighbour's chunk.
__global__ void cp_async_barrier_kernel(const int4 *src, int4 *out) {
  LLK_DYNAMIC_SHARED(smem);
  uint64_t *bar = reinterpret_cast<uint64_t *>(smem);
  int4 *chunks = reinterpret_cast<int4 *>(smem + 128);
  const int t = int(threadIdx.x);
  if (t == 0)
    llk::mbarrier_init(bar, 128);
  __syncthreads();
  llk::cp_async16(&chunks[t], &src[t], true);
  llk::cp_async_mbarrier_arrive(bar);
  llk::mbarrier_wait(bar, 0);
  out[t] = chunks[(t + 1) % 128];
}

TEST(EmulateMbarrier, CpAsyncArrivesOnceLanded) {
  std::vector<int4> src(128), out(128, int4{-1, -1, -1, -1});
  for (int i = 0; i < 128; ++i)
    src[size_t(i)] = int4{i, 2 * i, 3 * i, 4 * i};
  LLAMA_LAUNCH_SMEM(cp_async_barrier_kernel, dim3(1), dim3(128), 128 + 128 * 16, nullptr,
                    src.data(), out.data());
  for (int i = 0; i < 128; ++i) {
    const int j = (i + 1) % 128;
    ASSERT_EQ(out[size_t(i)].x, j);
    ASSERT_EQ(out[size_t(i)].w, 4 * j);
  }
}

// mode 0: one arrival on a barrier of count 2, then everyone waits (never
// completes); mode 1: an arrival on a barrier never initialized.
__global__ void bad_barrier_kernel(int mode) {
  LLK_DYNAMIC_SHARED(smem);
  uint64_t *bar = reinterpret_cast<uint64_t *>(smem);
  if (threadIdx.x == 0)
    llk::mbarrier_init(bar, 2);
  __syncthreads();
  if (mode == 0) {
    if (threadIdx.x == 0)
      llk::mbarrier_arrive(bar);
    llk::mbarrier_wait(bar, 0);
  } else if (threadIdx.x == 0) {
    llk::mbarrier_arrive(bar + 1);
  }
}

TEST(EmulateMbarrier, ImpossibleWaitsAndExtraArrivalsThrow) {
  EXPECT_THROW(LLAMA_LAUNCH_SMEM(bad_barrier_kernel, dim3(1), dim3(32), 64, nullptr, 0),
               std::runtime_error);
  EXPECT_THROW(LLAMA_LAUNCH_SMEM(bad_barrier_kernel, dim3(1), dim3(32), 64, nullptr, 1),
               std::runtime_error);
}


// ---- TMA tiled copies ------------------------------------------------------
constexpr int kTB = 2, kTSeq = 100, kTHeads = 3, kTDim = 128; // [batch, seq, heads, dim]

bf16 tensor_value(int b, int r, int h, int c) {
  return __float2bfloat16(float((b * 7 + r * 3 + h * 5 + c) % 251) - 125.0f);
}

// Thread 0 copies box {64 dims, 1 head, 64 rows, 1 batch} at `at` into
// shared memory at 1024 and reads the first 16 bytes back before waiting
// (`early`); then everyone waits and the 8 KiB are copied out.
__global__ void tma_kernel(const __grid_constant__ llk::TensorMap map, int dim0, int head,
                           int row, int batch, uint8_t *out, uint8_t *early) {
  LLK_DYNAMIC_SHARED(smem);
  uint64_t *bar = reinterpret_cast<uint64_t *>(smem);
  if (threadIdx.x == 0) {
    llk::mbarrier_init(bar, 1);
    llk::fence_mbarrier_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    llk::mbarrier_arrive_expect_tx(bar, 64 * 64 * 2);
    const int32_t at[4] = {dim0, head, row, batch};
    llk::tensor_copy<4>(smem + 1024, map, at, bar);
    std::memcpy(early, smem + 1024, 16);
  }
  llk::mbarrier_wait(bar, 0);
  for (int i = int(threadIdx.x); i < 64 * 64 * 2; i += 32)
    out[i] = smem[1024 + i];
}

/// The box's shared memory image, built from the layout rule: element
/// (row rr, dim cc) of the box at byte 128 rr + 2 cc, its 16-byte chunk
/// moved to cc / 8 ^ rr % 8 when swizzled.
std::vector<uint8_t> tma_image(int dim0, int head, int row, int batch, bool swizzled) {
  std::vector<uint8_t> image(64 * 128, 0);
  for (int rr = 0; rr < 64; ++rr)
    for (int cc = 0; cc < 64; ++cc) {
      const int r = row + rr;
      if (r < 0 || r >= kTSeq)
        continue; // zeros
      const size_t chunk = size_t(cc / 8), at = swizzled ? sw128(size_t(rr), chunk)
                                                          : size_t(rr) * 128 + chunk * 16;
      put(image, at + size_t(cc % 8) * 2, tensor_value(batch, r, head, dim0 + cc).bits);
    }
  return image;
}

TEST(EmulateTma, TiledCopiesLandSwizzledWithZerosOutOfBounds) {
  std::vector<bf16> x(size_t(kTB * kTSeq * kTHeads * kTDim));
  for (int b = 0; b < kTB; ++b)
    for (int r = 0; r < kTSeq; ++r)
      for (int h = 0; h < kTHeads; ++h)
        for (int c = 0; c < kTDim; ++c)
          x[size_t(((b * kTSeq + r) * kTHeads + h) * kTDim + c)] = tensor_value(b, r, h, c);
  const uint64_t dims[4] = {kTDim, kTHeads, kTSeq, kTB};
  const uint64_t strides[3] = {kTDim * 2, kTHeads * kTDim * 2, kTSeq * kTHeads * kTDim * 2};
  const uint32_t box[4] = {64, 1, 64, 1};
  struct Case {
    int dim0, head, row, batch;
    unsigned swizzle;
  } cases[] = {{64, 2, 60, 1, 128}, // rows 100-123 past seq
               {0, 1, -3, 0, 128},  // rows -3..-1 before the start
               {64, 0, 10, 1, 0}};  // no swizzle: rows in place
  for (const Case &k : cases) {
    SCOPED_TRACE("row " + std::to_string(k.row) + " swizzle " + std::to_string(k.swizzle));
    llk::TensorMap map;
    llk::make_tensor_map(&map, x.data(), 4, dims, strides, box, k.swizzle);
    std::vector<uint8_t> out(64 * 128, 0xaa), early(16, 0);
    LLAMA_LAUNCH_SMEM(tma_kernel, dim3(1), dim3(32), 1024 + 64 * 128, nullptr, map, k.dim0,
                      k.head, k.row, k.batch, out.data(), early.data());
    EXPECT_EQ(out, tma_image(k.dim0, k.head, k.row, k.batch, k.swizzle != 0));
    // Not there before the barrier completes: the emulator's fill (0xff).
    EXPECT_EQ(early, std::vector<uint8_t>(16, 0xff));
  }
  // The swizzled and the plain images differ (the check above can fail).
  EXPECT_NE(tma_image(64, 2, 60, 1, true), tma_image(64, 2, 60, 1, false));
}

TEST(EmulateTma, EncodingsTheDriverRefusesThrow) {
  std::vector<bf16> x(4096);
  llk::TensorMap map;
  const uint64_t dims[2] = {64, 64};
  const uint64_t good_stride[1] = {128}, odd_stride[1] = {120};
  const uint32_t box[2] = {64, 64}, wide_box[2] = {128, 64}, tall_box[2] = {64, 300};
  EXPECT_NO_THROW(llk::make_tensor_map(&map, x.data(), 2, dims, good_stride, box, 128));
  EXPECT_THROW(llk::make_tensor_map(&map, x.data(), 2, dims, odd_stride, box, 128),
               std::runtime_error); // stride not a multiple of 16
  EXPECT_THROW(llk::make_tensor_map(&map, x.data(), 2, dims, good_stride, wide_box, 128),
               std::runtime_error); // 256-byte rows under a 128-byte swizzle
  EXPECT_THROW(llk::make_tensor_map(&map, x.data(), 2, dims, good_stride, tall_box, 128),
               std::runtime_error); // a box dim over 256
  EXPECT_THROW(llk::make_tensor_map(&map, x.data() + 1, 2, dims, good_stride, box, 0),
               std::runtime_error); // base not 16-byte aligned
}

// ---- named barriers and setmaxnreg ----------------------------------------
// Two warpgroups take `turns` turns each, as the attention consumers do:
// wait at barrier 1 + wg, log, let the other go at 2 - wg (warpgroup 1
// arrives for warpgroup 0 first and skips its arrival after its last turn).
// mode 1: warpgroup 1 does not skip it (an unbalanced arrival); mode 2:
// warpgroup 0 names a different count.
__global__ void turns_kernel(int turns, int mode, int *log) {
  LLK_DYNAMIC_SHARED(smem);
  int *next = reinterpret_cast<int *>(smem);
  const int wg = int(threadIdx.x) / 128;
  if (threadIdx.x == 0)
    *next = 0;
  __syncthreads();
  const unsigned mine = 1u + unsigned(wg), theirs = 2u - unsigned(wg);
  if (wg == 1)
    llk::named_barrier_arrive(theirs, 256);
  for (int i = 0; i < turns; ++i) {
    llk::named_barrier_sync(mine, mode == 2 && wg == 0 ? 224 : 256);
    if (threadIdx.x % 128 == 0)
      log[(*next)++] = wg;
    if (wg == 0 || i + 1 < turns || mode == 1)
      llk::named_barrier_arrive(theirs, 256);
  }
}

TEST(EmulateNamedBarrier, TurnsAlternateAndUnbalancedArrivalsThrow) {
  std::vector<int> log(12, -1);
  LLAMA_LAUNCH_SMEM(turns_kernel, dim3(1), dim3(256), 64, nullptr, 6, 0, log.data());
  for (size_t i = 0; i < log.size(); ++i)
    EXPECT_EQ(log[i], int(i % 2)) << "turn " << i;
  EXPECT_THROW(LLAMA_LAUNCH_SMEM(turns_kernel, dim3(1), dim3(256), 64, nullptr, 6, 1,
                                 log.data()),
               std::runtime_error);
  EXPECT_THROW(LLAMA_LAUNCH_SMEM(turns_kernel, dim3(1), dim3(256), 64, nullptr, 6, 2,
                                 log.data()),
               std::runtime_error);
}

// 384 threads start with 168 registers each (65536 / 384, a multiple of 8).
// Warpgroups 1 and 2 ask for 240; warpgroup 0 gives back down to 24 unless
// `hoard`, and then they can never have them.
__global__ void registers_kernel(bool hoard, int *done) {
  const int wg = int(threadIdx.x) / 128;
  if (wg == 0) {
    if (!hoard)
      llk::setmaxnreg_dec<24>();
    return;
  }
  llk::setmaxnreg_inc<240>();
  if (threadIdx.x % 128 == 0)
    done[wg - 1] = 1;
}

TEST(EmulateSetmaxnreg, IncreasesWaitForRegistersGivenBack) {
  std::vector<int> done(2, 0);
  LLAMA_LAUNCH(registers_kernel, dim3(1), dim3(384), nullptr, false, done.data());
  EXPECT_EQ(done, (std::vector<int>{1, 1}));
  EXPECT_THROW(LLAMA_LAUNCH(registers_kernel, dim3(1), dim3(384), nullptr, true, done.data()),
               std::runtime_error);
}

} // namespace
