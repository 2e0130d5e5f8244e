// Tensor-core and asynchronous-copy building blocks (sm_80 and later) for
// the tiled kernels (flash_attention.cuh): one function per PTX instruction,
// inline PTX on a GPU and runtime/cuda/emulate.h's warp-collective
// emulation of the same instruction under LLAMA_CUDA_EMULATE, so a kernel
// runs the same code in both places.
//
//   mma_bf16_16816   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
//   ldmatrix<N>      ldmatrix.sync.aligned.m8n8.x{1,2,4}.shared.b16
//   ldmatrix_t<N>    the same with .trans
//   cp_async16       cp.async.cg.shared.global, 16 bytes, zero-filled when
//                    the source is out of bounds
//   cp_async_commit, cp_async_wait<N>
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"), with
// g = lane / 4, t = lane % 4, the lower half of a 32-bit register holding the
// element of lower index:
//   A 16x16 row-major: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..],
//                      a3 = A[g+8][2t+8..]
//   B 16x8 col-major:  b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C, D 16x8 fp32:    c0, c1 = C[g][2t], C[g][2t+1]; c2, c3 = C[g+8][2t], C[g+8][2t+1]
// ldmatrix.x4 of the four 8x8 quadrants of a row-major 16x16 tile (lanes
// 0-7 rows 0-7 col 0, 8-15 rows 8-15 col 0, 16-23 rows 0-7 col 8, 24-31
// rows 8-15 col 8) gives exactly a0..a3; of row-major K (keys x dims) it
// gives B = K^T fragments, and with .trans of row-major V (keys x dims) the
// B fragments of V. The C layout of S = Q K^T is the A layout of P for
// P V (two n-tiles of 8 keys make one k-step of 16): P never leaves the
// registers.
#pragma once

#include "runtime/cuda/kernels/common.cuh"

#ifdef LLAMA_CUDA_EMULATE
// The launch's dynamic shared memory, 128-byte aligned.
#define LLK_DYNAMIC_SHARED(name) unsigned char *name = ::llama_emu::dynamic_shared()
#else
#define LLK_DYNAMIC_SHARED(name) extern __shared__ __align__(128) unsigned char name[]
#define LLAMA_LAUNCH_SMEM(kernel, grid, block, smem, stream, ...)               \
  kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#endif

namespace llk {

/// Two fp32 values as a bf16x2 register (round to nearest even), `lo` in
/// the lower half: one cvt.rn.bf16x2.f32 on a GPU.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
#ifdef LLAMA_CUDA_EMULATE
  return uint32_t(__float2bfloat16(lo).bits) | uint32_t(__float2bfloat16(hi).bits) << 16;
#else
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#endif
}

/// d = a b + c (d may be c) for the warp: one m16n8k16 tensor-core MMA.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4],
                                               const uint32_t (&b)[2], const float (&c)[4]) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::mma_m16n8k16_bf16(d, a, b, c);
#else
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                 "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}

#ifndef LLAMA_CUDA_EMULATE
__device__ __forceinline__ uint32_t shared_address(const void *p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
#endif

/// N (1, 2 or 4) 8x8 bf16 matrices from shared memory; this lane gives the
/// address of row lane % 8 of matrix lane / 8 (16-byte aligned).
template <int N> __device__ __forceinline__ void ldmatrix(uint32_t (&r)[N], const void *row) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::ldmatrix<N>(r, row, false);
#else
  const uint32_t a = shared_address(row);
  if constexpr (N == 1)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a));
  else if constexpr (N == 2)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
#endif
}
/// The same, each matrix transposed (.trans).
template <int N> __device__ __forceinline__ void ldmatrix_t(uint32_t (&r)[N], const void *row) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::ldmatrix<N>(r, row, true);
#else
  const uint32_t a = shared_address(row);
  if constexpr (N == 1)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
                 : "=r"(r[0])
                 : "r"(a));
  else if constexpr (N == 2)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
#endif
}

/// 16 bytes from global `src` to shared `dst` without passing through
/// registers (L2 only: .cg); with `valid` false no byte is read and `dst`
/// gets zeros (a tile row past the end of the sequence). Completes at the
/// cp_async_wait that covers its group.
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::cp_async(dst, src, 16, valid ? 16 : 0);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)),
               "l"(src), "r"(valid ? 16 : 0));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
/// Waits until at most N of this thread's committed groups are in flight.
/// Other threads' copies are visible only after a __syncthreads() that
/// follows their own waits.
template <int N> __device__ __forceinline__ void cp_async_wait() {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::cp_async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

} // namespace llk
