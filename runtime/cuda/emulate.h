// Runs generated CUDA kernels on the CPU, for testing their logic where no
// GPU exists (CI, and every machine without one). Compile the generated
// source as C++ with -fopenmp -DLLAMA_CUDA_EMULATE: a launch runs the blocks
// one after another, each block as an OpenMP team of blockDim threads, so
// every thread executes the kernel's own code with its own threadIdx.
//   __syncthreads()      -> an OpenMP barrier of the team
//   __shared__           -> `static` (one instance, shared by the team; blocks
//                           run one at a time so one instance suffices)
//   __shfl_xor_sync      -> an exchange through a shared buffer between two
//                           barriers of the calling warp (every lane of the
//                           warp must call it, as full-mask shuffles require)
//   __nv_bfloat16        -> a 16-bit struct with round-to-nearest-even
// What this cannot show: performance, memory-model races that barriers do
// not order, and the exact results of CUDA's math library (expf, sincos);
// tolerances cover the last.
#pragma once

#include <omp.h>
#include <pthread.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using cudaStream_t = void *;
enum cudaError_t { cudaSuccess = 0 };

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __constant__
#define __launch_bounds__(n)

inline void __syncthreads() {
#pragma omp barrier
}

namespace llama_emu {
// One barrier per warp of the running block: a shuffle synchronizes its own
// warp only, as on the GPU, so warps may take different paths (a causal
// attention row loops over as many keys as its position).
inline pthread_barrier_t warp_barrier[32];
inline void warp_sync() { pthread_barrier_wait(&warp_barrier[threadIdx.x / 32]); }
} // namespace llama_emu

template <typename T> T __shfl_xor_sync(unsigned, T value, int lane_mask, int = 32) {
  static T exchange[1024];
  const unsigned t = threadIdx.x;
  exchange[t] = value;
  llama_emu::warp_sync();
  T other = exchange[t ^ unsigned(lane_mask)];
  llama_emu::warp_sync();
  return other;
}

// Bit l of the result: lane l's predicate, for the lanes of the calling warp.
inline unsigned __ballot_sync(unsigned, int predicate) {
  static int votes[1024];
  const unsigned t = threadIdx.x, first = t & ~31u;
  votes[t] = predicate != 0;
  llama_emu::warp_sync();
  unsigned mask = 0;
  for (unsigned l = 0; l < 32; ++l)
    mask |= unsigned(votes[first + l]) << l;
  llama_emu::warp_sync();
  return mask;
}
inline int __ffs(unsigned x) { return __builtin_ffs(int(x)); }

struct __nv_bfloat16 {
  uint16_t bits;
};
inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) // NaN stays a (quiet) NaN
    return {uint16_t((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return {uint16_t(u >> 16)};
}
inline float __bfloat162float(__nv_bfloat16 h) {
  uint32_t u = uint32_t(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float __int_as_float(int bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline void sincos(double x, double *s, double *c) {
  *s = std::sin(x);
  *c = std::cos(x);
}

namespace llama_emu {
// Runs `body` (the kernel call) for every block of `grid` with `block`
// threads each.
template <typename F> void launch(dim3 grid, dim3 block, F body) {
  if (block.y != 1 || block.z != 1 || block.x > 1024 || block.x == 0)
    throw std::runtime_error("emulate: blocks are 1-D with 1..1024 threads, got " +
                             std::to_string(block.x) + "x" + std::to_string(block.y) +
                             "x" + std::to_string(block.z));
  if (block.x % 32 != 0)
    throw std::runtime_error("emulate: blocks are whole warps, got " +
                             std::to_string(block.x) + " threads");
  omp_set_dynamic(0);
  gridDim = grid;
  blockDim = block;
  for (unsigned w = 0; w < block.x / 32; ++w)
    pthread_barrier_init(&warp_barrier[w], nullptr, 32);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        bool short_team = false;
#pragma omp parallel num_threads(block.x)
        {
          if (omp_get_num_threads() != int(block.x)) {
#pragma omp atomic write
            short_team = true;
          } else {
            threadIdx = dim3(unsigned(omp_get_thread_num()));
            blockIdx = dim3(bx, by, bz);
            body();
          }
        }
        if (short_team)
          throw std::runtime_error("emulate: OpenMP gave fewer than " +
                                   std::to_string(block.x) + " threads");
      }
  for (unsigned w = 0; w < block.x / 32; ++w)
    pthread_barrier_destroy(&warp_barrier[w]);
}
} // namespace llama_emu

#define LLAMA_LAUNCH(kernel, grid, block, stream, ...)                          \
  ::llama_emu::launch((grid), (block), [&] { kernel(__VA_ARGS__); })
