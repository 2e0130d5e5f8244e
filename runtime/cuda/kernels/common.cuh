// The pieces every generated-kernel family shares: storage types, 16-byte
// packed global accesses, and deterministic warp/block reductions.
//
// Storage is fp32 or bf16; every kernel computes in fp32. Memory-bound
// kernels move 16 bytes per access (8 bf16 or 4 fp32 values: `Pack<T>`), the
// widest load a thread can issue (ld.global.v4.b32), so a warp touches 512
// contiguous bytes per request. A row whose width is not a multiple of the
// pack uses one-element packs instead (`kPackFor<T, D>`): no tail handling in
// the hot loop, and the kernel audit (tools/bench/kernel_audit) shows which
// instantiations those are. LLaMA widths (multiples of 64) always pack.
//
// Alignment: a 16-byte access needs a 16-byte aligned address. Buffers come
// from the memory plan (64-byte aligned offsets) or the parameter and
// gradient buffers (offsets the compiler checks, EmitCuda.cpp), and rows of a
// packed width start at multiples of 16 bytes. Under the emulator every
// packed access checks its alignment and throws, so a misaligned buffer
// fails the tests instead of faulting on a GPU.
//
// Reductions: shuffles within a warp, then every thread adds the warp
// partials in warp order. The order never depends on timing: the results are
// bitwise reproducible (no atomics on floats anywhere in these kernels).
#pragma once

#ifdef LLAMA_CUDA_EMULATE
#include "runtime/cuda/emulate.h"
#else
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#define LLAMA_LAUNCH(kernel, grid, block, stream, ...)                          \
  kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif
#include "runtime/cuda/kernels/shapes.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

// Scalar element access in fp32 (the string-emitted kernels use these).
__device__ __forceinline__ float ld(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float ld(const __nv_bfloat16 *p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void st(float *p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(__nv_bfloat16 *p, int64_t i, float v) {
  p[i] = __float2bfloat16(v);
}

// Sum over the 32 lanes of a warp; every lane gets the same value.
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = other > v ? other : v;
  }
  return v;
}

// Shared-memory accesses that the emulator's bank-conflict counters see
// (LLAMA_EMULATE_COUNT=1; runtime/cuda/emulate.h): plain accesses on a GPU.
template <typename T> __device__ __forceinline__ T shared_ld(const T &x) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::record_shared(&x, sizeof(T));
#endif
  return x;
}
template <typename T> __device__ __forceinline__ void shared_st(T &x, const T &v) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::record_shared(&x, sizeof(T));
#endif
  x = v;
}

// Sum (max) over the block: shuffles within each warp, then every thread
// adds the warp partials in warp order, so all threads get the same value
// and the order never depends on timing. Every thread must call these.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  v = warp_sum(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0)
    shared_st(partial[threadIdx.x >> 5], v);
  __syncthreads();
  float total = 0.0f;
  for (unsigned w = 0; w < blockDim.x / 32; ++w)
    total += shared_ld(partial[w]);
  return total;
}
__device__ __forceinline__ float block_max(float v) {
  __shared__ float partial[32];
  v = warp_max(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0)
    shared_st(partial[threadIdx.x >> 5], v);
  __syncthreads();
  float m = shared_ld(partial[0]);
  for (unsigned w = 1; w < blockDim.x / 32; ++w) {
    const float p = shared_ld(partial[w]);
    m = p > m ? p : m;
  }
  return m;
}

namespace llk {

// ---- packed accesses ------------------------------------------------------

/// N consecutive elements of T, aligned to their size up to 16 bytes: one
/// access moves them all (16 bytes: 8 bf16 or 4 fp32 when N is the full
/// pack); a pack of fp32 partner values of a bf16 pack (32 bytes) moves in
/// two.
template <typename T, int N>
struct alignas(sizeof(T) * N < 16 ? sizeof(T) * N : 16) Pack {
  T v[N];
};

/// The full pack of T: 16 bytes.
template <typename T> constexpr int kPack = pack_of(int(sizeof(T)));
/// The pack a row of D elements uses (shapes.h: pack_for).
template <typename T, int64_t D> constexpr int kPackFor = pack_for(int(sizeof(T)), D);

template <typename T, int N>
__device__ __forceinline__ void check_aligned(const T *p) {
#ifdef LLAMA_CUDA_EMULATE
  if (reinterpret_cast<uintptr_t>(p) % alignof(Pack<T, N>) != 0)
    throw std::runtime_error("llk: a " + std::to_string(alignof(Pack<T, N>)) +
                             "-byte access at a misaligned address");
  llama_emu::record_global(p, sizeof(Pack<T, N>)); // coalescing counters
#else
  (void)p;
#endif
}

/// 32-bit words of packed elements, built with integer operations: a
/// memcpy between a bf16 struct and an int4 lets nvcc split a 16-byte store
/// into 2-byte ones again (seen in the PTX), words never.
__device__ __forceinline__ uint32_t word_of(const float *v) { return __float_as_uint(v[0]); }
__device__ __forceinline__ uint32_t word_of(const __nv_bfloat16 *v) {
  return uint32_t(__bfloat16_as_ushort(v[0])) | uint32_t(__bfloat16_as_ushort(v[1])) << 16;
}
__device__ __forceinline__ void from_word(uint32_t w, float *v) { v[0] = __uint_as_float(w); }
__device__ __forceinline__ void from_word(uint32_t w, __nv_bfloat16 *v) {
  v[0] = __ushort_as_bfloat16(static_cast<unsigned short>(w & 0xffffu));
  v[1] = __ushort_as_bfloat16(static_cast<unsigned short>(w >> 16));
}

/// Loads N elements at p (aligned as Pack<T, N>) in as few accesses as the
/// hardware has: 16 bytes at a time (ld.global.v4.b32), then 8, else the
/// elements as they are.
template <int N, typename T>
__device__ __forceinline__ Pack<T, N> load(const T *__restrict__ p) {
  check_aligned<T, N>(p);
  Pack<T, N> r;
  constexpr int kPerWord = int(4 / sizeof(T));
  if constexpr (sizeof(r) % 16 == 0) {
#pragma unroll
    for (int i = 0; i < int(sizeof(r) / 16); ++i) {
      const int4 raw = reinterpret_cast<const int4 *>(p)[i];
      T *out = r.v + i * 4 * kPerWord;
      from_word(uint32_t(raw.x), out);
      from_word(uint32_t(raw.y), out + kPerWord);
      from_word(uint32_t(raw.z), out + 2 * kPerWord);
      from_word(uint32_t(raw.w), out + 3 * kPerWord);
    }
  } else if constexpr (sizeof(r) == 8) {
    const int2 raw = *reinterpret_cast<const int2 *>(p);
    from_word(uint32_t(raw.x), r.v);
    from_word(uint32_t(raw.y), r.v + kPerWord);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i)
      r.v[i] = p[i];
  }
  return r;
}
template <int N, typename T>
__device__ __forceinline__ void store(T *p, const Pack<T, N> &v) {
  check_aligned<T, N>(p);
  constexpr int kPerWord = int(4 / sizeof(T));
  if constexpr (sizeof(v) % 16 == 0) {
#pragma unroll
    for (int i = 0; i < int(sizeof(v) / 16); ++i) {
      const T *in = v.v + i * 4 * kPerWord;
      // __stwb is st.global.wb.v4 in inline PTX: a plain int4 store was
      // still split into four 4-byte stores where nvcc could not prove the
      // alignment (seen in the PTX).
      __stwb(reinterpret_cast<int4 *>(p) + i,
             int4{int(word_of(in)), int(word_of(in + kPerWord)),
                  int(word_of(in + 2 * kPerWord)), int(word_of(in + 3 * kPerWord))});
    }
  } else if constexpr (sizeof(v) == 8) {
    __stwb(reinterpret_cast<int2 *>(p), int2{int(word_of(v.v)), int(word_of(v.v + kPerWord))});
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i)
      p[i] = v.v[i];
  }
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

/// A pack widened to fp32, and back (round to nearest even for bf16).
template <int N> struct Floats {
  float v[N];
};
template <int N, typename T>
__device__ __forceinline__ Floats<N> widen(const Pack<T, N> &p) {
  Floats<N> f;
#pragma unroll
  for (int i = 0; i < N; ++i)
    f.v[i] = to_float(p.v[i]);
  return f;
}
template <typename T, int N>
__device__ __forceinline__ Pack<T, N> narrow(const Floats<N> &f) {
  Pack<T, N> p;
#pragma unroll
  for (int i = 0; i < N; ++i)
    p.v[i] = from_float<T>(f.v[i]);
  return p;
}
template <int N, typename T>
__device__ __forceinline__ Floats<N> load_floats(const T *__restrict__ p) {
  return widen(load<N>(p));
}
template <int N, typename T>
__device__ __forceinline__ void store_floats(T *p, const Floats<N> &f) {
  store<N>(p, narrow<T>(f));
}

} // namespace llk
