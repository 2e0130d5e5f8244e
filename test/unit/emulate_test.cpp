// The CUDA emulation layer (runtime/cuda/emulate.h) that runs the generated
// kernels on the CPU in every test without a GPU: its fibers, barriers,
// shuffles and ballots, on kernels written here, against sums computed
// directly. The emulated GPU tests trust these properties, above all that a
// kernel missing a barrier gives wrong numbers rather than passing by luck.
#include "runtime/cuda/emulate.h"
#include "runtime/cuda/kernels/common.cuh"

#include <gtest/gtest.h>

#include <cfenv>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

namespace {

// Block-wide sum in shared memory, tree reduction with a barrier per level.
__global__ void block_sum(const float *in, float *out, bool barriers) {
  __shared__ float part[1024];
  const unsigned t = threadIdx.x;
  part[t] = in[blockIdx.x * blockDim.x + t];
  if (barriers)
    __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
    if (t < s)
      part[t] += part[t + s];
    if (barriers)
      __syncthreads();
  }
  if (t == 0)
    out[blockIdx.x] = part[0];
}

std::vector<float> ramp(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = float(i % 97) * 0.25f;
  return v;
}

TEST(Emulate, BarriersMakeABlockReductionExact) {
  for (unsigned threads : {32u, 256u, 1024u}) {
    const unsigned blocks = 3;
    const std::vector<float> in = ramp(size_t(blocks) * threads);
    std::vector<float> out(blocks, -1.0f);
    LLAMA_LAUNCH(block_sum, dim3(blocks), dim3(threads), nullptr, in.data(), out.data(), true);
    for (unsigned b = 0; b < blocks; ++b) {
      // Small integers times 0.25: every partial sum is exact in fp32.
      const float want = std::accumulate(in.begin() + b * threads,
                                         in.begin() + (b + 1) * threads, 0.0f);
      EXPECT_EQ(out[b], want) << threads << " threads, block " << b;
    }
  }
}

TEST(Emulate, AMissingBarrierReadsStaleData) {
  // Threads in a random order between barriers: some thread t reads
  // part[t + s] before thread t + s has added its own partner's value to
  // it, so the sum comes out wrong. (Run highest index first, every such
  // read came after the write and the sum came out right.)
  const unsigned threads = 256;
  const std::vector<float> in = ramp(threads);
  std::vector<float> out(1, -1.0f);
  LLAMA_LAUNCH(block_sum, dim3(1), dim3(threads), nullptr, in.data(), out.data(), false);
  const float want = std::accumulate(in.begin(), in.end(), 0.0f);
  EXPECT_NE(out[0], want);
}

// Warp sums by butterfly shuffles; lanes of warp w loop w + 1 times, so warps
// take paths of different lengths between their own warp barriers.
__global__ void warp_sums(const float *in, float *out, int *ballots) {
  const unsigned t = threadIdx.x, lane = t % 32, warp = t / 32;
  float total = 0.0f;
  for (unsigned r = 0; r <= warp; ++r) {
    float v = in[t] * float(r + 1);
    for (int m = 16; m > 0; m /= 2)
      v += __shfl_xor_sync(0xffffffffu, v, m);
    total += v;
  }
  const unsigned mask = __ballot_sync(0xffffffffu, in[t] > 10.0f);
  if (lane == 0) {
    out[warp] = total;
    ballots[warp] = int(mask);
  }
}

TEST(Emulate, ShufflesAndBallotsPerWarpOnDivergentPaths) {
  const unsigned threads = 128, warps = threads / 32;
  const std::vector<float> in = ramp(threads);
  std::vector<float> out(warps);
  std::vector<int> ballots(warps);
  LLAMA_LAUNCH(warp_sums, dim3(1), dim3(threads), nullptr, in.data(), out.data(),
               ballots.data());
  for (unsigned w = 0; w < warps; ++w) {
    float sum = 0.0f;
    unsigned mask = 0;
    for (unsigned l = 0; l < 32; ++l) {
      sum += in[w * 32 + l];
      mask |= unsigned(in[w * 32 + l] > 10.0f) << l;
    }
    float want = 0.0f;
    for (unsigned r = 0; r <= w; ++r)
      want += sum * float(r + 1);
    EXPECT_FLOAT_EQ(out[w], want) << "warp " << w;
    EXPECT_EQ(unsigned(ballots[w]), mask) << "warp " << w;
  }
}

// Lanes of one warp at different barriers: a hang on a GPU, an error here.
__global__ void divergent(float *out) {
  if (threadIdx.x % 2 == 0)
    __syncthreads();
  else
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

TEST(Emulate, DivergentBarriersThrowInsteadOfHanging) {
  std::vector<float> out(64);
  EXPECT_THROW(LLAMA_LAUNCH(divergent, dim3(2), dim3(64), nullptr, out.data()),
               std::runtime_error);
  // The next launch starts clean.
  const std::vector<float> in = ramp(64);
  std::vector<float> sums(1);
  LLAMA_LAUNCH(block_sum, dim3(1), dim3(64), nullptr, in.data(), sums.data(), true);
  EXPECT_EQ(sums[0], std::accumulate(in.begin(), in.end(), 0.0f));
}

// Every thread keeps its own locals and stack across barriers: a recursion
// 64 frames deep per thread, each frame's local read back after the deeper
// frames and two barriers per level ran every other thread of the block.
__device__ uint64_t deep(uint64_t depth, uint64_t seed) {
  volatile uint64_t mine[64];
  mine[depth % 64] = seed;
  __syncthreads();
  const uint64_t below = depth == 0 ? 0 : deep(depth - 1, seed * 3 + 1);
  __syncthreads();
  return below + mine[depth % 64];
}
__global__ void per_thread_stacks(uint64_t *out) {
  out[blockIdx.x * blockDim.x + threadIdx.x] = deep(64, threadIdx.x + 1000 * blockIdx.x);
}

TEST(Emulate, EachThreadHasItsOwnStackAcrossBarriers) {
  const unsigned threads = 96, blocks = 2;
  std::vector<uint64_t> out(threads * blocks);
  LLAMA_LAUNCH(per_thread_stacks, dim3(blocks), dim3(threads), nullptr, out.data());
  for (unsigned b = 0; b < blocks; ++b)
    for (unsigned t = 0; t < threads; ++t) {
      uint64_t seed = t + 1000 * b, want = 0;
      for (int depth = 64; depth >= 0; --depth) {
        want += seed;
        seed = seed * 3 + 1;
      }
      EXPECT_EQ(out[b * threads + t], want) << "block " << b << " thread " << t;
    }
}

// The floating-point environment is part of a fiber's context: a thread
// that switches rounding mode keeps it across barriers, and the launching
// thread's mode is unchanged afterwards.
__global__ void rounding(float *out) {
  const bool down = threadIdx.x % 2 == 1;
  if (down)
    std::fesetround(FE_DOWNWARD);
  __syncthreads();
  volatile float one = 1.0f, three = 3.0f;
  out[threadIdx.x] = one / three;
  __syncthreads();
  if (down)
    std::fesetround(FE_TONEAREST);
}

TEST(Emulate, RoundingModeIsPerFiber) {
  ASSERT_EQ(std::fegetround(), FE_TONEAREST);
  std::vector<float> out(64);
  LLAMA_LAUNCH(rounding, dim3(1), dim3(64), nullptr, out.data());
  volatile float one = 1.0f, three = 3.0f;
  const float nearest = one / three;
  for (unsigned t = 0; t < 64; ++t)
    if (t % 2)
      EXPECT_LT(out[t], nearest) << t; // 1/3 rounds up to nearest
    else
      EXPECT_EQ(out[t], nearest) << t;
  EXPECT_EQ(std::fegetround(), FE_TONEAREST);
}

TEST(Emulate, RejectsBlocksItCannotRun) {
  std::vector<float> out(64);
  EXPECT_THROW(LLAMA_LAUNCH(divergent, dim3(1), dim3(48), nullptr, out.data()),
               std::runtime_error);
  EXPECT_THROW(LLAMA_LAUNCH(divergent, dim3(1), dim3(2048), nullptr, out.data()),
               std::runtime_error);
  EXPECT_THROW(__syncthreads(), std::runtime_error); // outside a launch
}

// The coalescing counters see through the packed accesses of
// runtime/cuda/kernels: a warp whose lanes read consecutive 16-byte packs
// uses every byte of the 16 sectors it touches; lanes 32 bytes apart touch
// a sector each for 16 useful bytes (50%); lanes reading the same pack (a
// broadcast) touch one sector, which is all they need.
__global__ void strided(const float *in, float *out, int stride) {
  const int i = int(threadIdx.x) * stride;
  llk::store<4>(out + 4 * threadIdx.x, llk::load<4>(in + 4 * i));
}

TEST(Emulate, CoalescingCountersMeasureSectorsPerRequest) {
  llama_emu::set_counting(true);
  llama_emu::coalescing().clear();
  // 64-byte aligned, as the memory plan's buffers (sectors are 32 bytes).
  alignas(64) static float in[64 * 4 * 2], out[64 * 4];
  auto *kernel = &strided;
  LLAMA_LAUNCH(kernel, dim3(1), dim3(64), nullptr, in, out, 1);
  llama_emu::Coalescing c = llama_emu::coalescing()[reinterpret_cast<const void *>(kernel)];
  // 2 warps x (one load, one store), each 32 lanes x 16 bytes = 16 sectors.
  EXPECT_EQ(c.requests, 4u);
  EXPECT_EQ(c.sectors, 4u * 16);
  EXPECT_EQ(c.ideal_sectors, c.sectors);
  llama_emu::coalescing().clear();
  LLAMA_LAUNCH(kernel, dim3(1), dim3(32), nullptr, in, out, 2);
  c = llama_emu::coalescing()[reinterpret_cast<const void *>(kernel)];
  // The load's lanes are 32 bytes apart: 32 sectors for 16 sectors of bytes.
  EXPECT_EQ(c.requests, 2u);
  EXPECT_EQ(c.sectors, 32u + 16);
  EXPECT_EQ(c.ideal_sectors, 16u + 16);
  llama_emu::coalescing().clear();
  LLAMA_LAUNCH(kernel, dim3(1), dim3(32), nullptr, in, out, 0);
  c = llama_emu::coalescing()[reinterpret_cast<const void *>(kernel)];
  // Every lane loads the same pack: one sector, as ideal.
  EXPECT_EQ(c.sectors, 1u + 16);
  EXPECT_EQ(c.ideal_sectors, 1u + 16);
  llama_emu::set_counting(false);
  llama_emu::coalescing().clear();
}

// Shared-memory bank counters: lane l of a warp touches word l * stride of
// a shared array (one 4-byte access), then every lane reads word 0.
__global__ void banked(float *out, int stride) {
  __shared__ float words[32 * 33];
  const unsigned l = threadIdx.x;
  shared_st(words[l * unsigned(stride)], float(l));
  __syncthreads();
  out[l] = shared_ld(words[0]) + shared_ld(words[l * unsigned(stride)]);
}

TEST(Emulate, BankCountersMeasureWavefrontsPerRequest) {
  llama_emu::set_counting(true);
  float out[32];
  auto *kernel = &banked;
  auto run = [&](int stride) {
    llama_emu::banks().clear();
    LLAMA_LAUNCH(kernel, dim3(1), dim3(32), nullptr, out, stride);
    return llama_emu::banks()[reinterpret_cast<const void *>(kernel)];
  };
  // Consecutive words: one wavefront per request (the store, the broadcast
  // read of word 0, the read back), as ideal.
  llama_emu::Banks b = run(1);
  EXPECT_EQ(b.requests, 3u);
  EXPECT_EQ(b.wavefronts, 3u);
  EXPECT_EQ(b.ideal_wavefronts, 3u);
  EXPECT_EQ(out[5], 5.0f);
  // Stride 2: lanes l and l + 16 share a bank: 2-way conflicts on the
  // store and the read back; the broadcast stays one wavefront.
  b = run(2);
  EXPECT_EQ(b.wavefronts, 2u + 1 + 2);
  EXPECT_EQ(b.ideal_wavefronts, 3u);
  // Stride 32: every lane in bank 0, 32-way; stride 33 (the padded
  // transpose) spreads them again.
  b = run(32);
  EXPECT_EQ(b.wavefronts, 32u + 1 + 32);
  b = run(33);
  EXPECT_EQ(b.wavefronts, 3u);
  llama_emu::set_counting(false);
  llama_emu::banks().clear();
}

} // namespace
