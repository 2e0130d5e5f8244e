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
// and, for sm_90a (the warpgroup MMA of the FA3-style kernels), with the
// shared memory layouts described at wgmma_desc:
//   wgmma_desc       a 64-bit shared memory matrix descriptor
//   wgmma_rs<N, TB>  wgmma.mma_async m64nNk16 bf16 -> fp32, A in registers
//   wgmma_ss<N, TA, TB>  the same, A in shared memory
//   wgmma_fence, wgmma_commit, wgmma_wait<N>, fence_proxy_async
//   mbarrier_init, mbarrier_arrive, mbarrier_arrive_expect_tx,
//   mbarrier_wait, cp_async_mbarrier_arrive, bulk_copy (the producer /
//   consumer handshakes of warp-specialized kernels)
//   TensorMap, make_tensor_map (host), tensor_copy<R>  TMA's tiled copies
//   named_barrier_sync / named_barrier_arrive  bar.sync / bar.arrive id, n
//   setmaxnreg_inc<N> / setmaxnreg_dec<N>  register reallocation
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

#ifndef LLAMA_CUDA_EMULATE
#include <cuda.h> // CUtensorMap and its enums (no libcuda call: see make_tensor_map)
#endif
#include <stdexcept>
#include <string>

#ifdef LLAMA_CUDA_EMULATE
// The launch's dynamic shared memory, 1024-byte aligned (the period of the
// 128-byte swizzle, which TMA and wgmma apply to shared addresses).
#define LLK_DYNAMIC_SHARED(name) unsigned char *name = ::llama_emu::dynamic_shared()
#else
#define LLK_DYNAMIC_SHARED(name) extern __shared__ __align__(1024) unsigned char name[]
#define LLAMA_LAUNCH_SMEM(kernel, grid, block, smem, stream, ...)               \
  kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#endif

namespace llk {

/// Allows `Kernel` `bytes` of dynamic shared memory (the opt-in above 48 KiB,
/// made once; a failure shows as the launch's error). Nothing to do under
/// the emulator.
template <auto Kernel> void allow_dynamic_shared(size_t bytes) {
#ifndef LLAMA_CUDA_EMULATE
  static const cudaError_t opted =
      cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  (void)opted;
#else
  (void)bytes;
#endif
}

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

// ---- warpgroup MMA (sm_90a) -------------------------------------------------
// wgmma is issued by the 128 threads of a warpgroup together and runs
// asynchronously: wgmma_fence() before the first wgmma that reads registers
// written since (its accumulators, an A fragment), wgmma_commit() to close a
// group, wgmma_wait<N>() until at most N groups are in flight; only then may
// the accumulators be read, or the shared memory operands be overwritten.
// Shared memory written by ordinary stores must be made visible to the
// tensor cores (the async proxy) with fence_proxy_async() and a barrier.
//
// Accumulator layout, m64nNk16: thread (warp w of the warpgroup, lane l;
// g = l / 4, t = l % 4) holds D[16w + g + 8 ((i / 2) % 2)][8 (i / 4) + 2t + i % 2]
// in d[i], i < N / 2: each 16-row slice of a warp is mma.m16n8k16's C layout
// repeated over N / 8 column blocks, so an S tile from Q K^T converts to the
// A fragments of P V in registers as with mma.sync. An A fragment in
// registers (wgmma_rs) is mma.m16n8k16's A layout for rows 16w..16w+15.
// Only sm_90a has these instructions. nvcc -arch=sm_90a also compiles a
// compute_90 pass (the PTX embedded for JIT) without __CUDA_ARCH_FEAT_SM90_ALL:
// there the wrappers trap, and an H100 runs the sm_90a code.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LLK_SM90A 1
#endif

/// Swizzle modes of a shared memory operand (descriptor bits 62-63).
enum class SmemSwizzle : uint32_t { None = 0, B128 = 1, B64 = 2, B32 = 3 };

/// The descriptor of a bf16 operand at `smem` (dynamic shared memory, 16-byte
/// aligned; swizzled operands 1024-byte aligned for B128). In 16-byte chunks
/// of 8 elements (PTX ISA "Shared memory matrix layout"; CUTLASS's
/// GMMA::Layout_{K,MN}_*_Atom):
///   K-major (rows of M or N, K contiguous; trans = false):
///     None:  8-row core matrices of 8 x 16 contiguous bytes; the next 8 rows
///            `sbo` bytes on, the next 8 of K `lbo` bytes on;
///     B128:  rows of 128 bytes (64 elements of K), 8 rows = 1024 bytes, the
///            next 8 rows `sbo` bytes on (1024 when packed); a k-step of 16
///            starts 32 bytes further (lbo unused);
///   MN-major (M or N contiguous; trans = true):
///     None:  core matrices of 8 k-rows x 16 bytes of MN; the next 8 of MN
///            `sbo` bytes on, the next 8 of K `lbo` bytes on;
///     B128:  k-rows of 128 bytes (64 elements of MN), the next 64 of MN
///            `lbo` bytes on, the next 8 of K `sbo` bytes on;
///   the swizzle: within every 1024 bytes the 16-byte chunk c of 128-byte
///   line r sits at chunk c ^ (r % 8) (B64, B32: the same over 512 and 256
///   bytes, 4 and 2 chunks) - the layout TMA's SWIZZLE_128B writes.
__device__ __forceinline__ uint64_t wgmma_desc(const void *smem, uint32_t lbo_bytes,
                                               uint32_t sbo_bytes, SmemSwizzle swizzle) {
#ifdef LLAMA_CUDA_EMULATE
  const uint32_t addr = llama_emu::shared_offset(smem);
#else
  const uint32_t addr = shared_address(smem);
#endif
  return uint64_t((addr >> 4) & 0x3fffu) | uint64_t((lbo_bytes >> 4) & 0x3fffu) << 16 |
         uint64_t((sbo_bytes >> 4) & 0x3fffu) << 32 | uint64_t(swizzle) << 62;
}

#ifdef LLK_SM90A
#define LLK_WGMMA_D8(i)                                                          \
  "+f"(d[(i) + 0]), "+f"(d[(i) + 1]), "+f"(d[(i) + 2]), "+f"(d[(i) + 3]),        \
      "+f"(d[(i) + 4]), "+f"(d[(i) + 5]), "+f"(d[(i) + 6]), "+f"(d[(i) + 7])
namespace detail {

template <bool TransB>
__device__ __forceinline__ void wgmma_rs_64(float (&d)[32], const uint32_t (&a)[4],
                                           uint64_t desc_b, bool accumulate) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
                 "{%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
               : LLK_WGMMA_D8(0), LLK_WGMMA_D8(8), LLK_WGMMA_D8(16), LLK_WGMMA_D8(24)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b),
                 "r"(int(accumulate)), "n"(int(TransB)));
}
template <bool TransA, bool TransB>
__device__ __forceinline__ void wgmma_ss_64(float (&d)[32], uint64_t desc_a, uint64_t desc_b,
                                           bool accumulate) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
                 "%32, %33, p, 1, 1, %35, %36;\n}\n"
               : LLK_WGMMA_D8(0), LLK_WGMMA_D8(8), LLK_WGMMA_D8(16), LLK_WGMMA_D8(24)
               : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)), "n"(int(TransA)),
                 "n"(int(TransB)));
}

template <bool TransB>
__device__ __forceinline__ void wgmma_rs_128(float (&d)[64], const uint32_t (&a)[4],
                                           uint64_t desc_b, bool accumulate) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
                 "{%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
               : LLK_WGMMA_D8(0), LLK_WGMMA_D8(8), LLK_WGMMA_D8(16), LLK_WGMMA_D8(24), LLK_WGMMA_D8(32), LLK_WGMMA_D8(40), LLK_WGMMA_D8(48), LLK_WGMMA_D8(56)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b),
                 "r"(int(accumulate)), "n"(int(TransB)));
}
template <bool TransA, bool TransB>
__device__ __forceinline__ void wgmma_ss_128(float (&d)[64], uint64_t desc_a, uint64_t desc_b,
                                           bool accumulate) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
                 "%64, %65, p, 1, 1, %67, %68;\n}\n"
               : LLK_WGMMA_D8(0), LLK_WGMMA_D8(8), LLK_WGMMA_D8(16), LLK_WGMMA_D8(24), LLK_WGMMA_D8(32), LLK_WGMMA_D8(40), LLK_WGMMA_D8(48), LLK_WGMMA_D8(56)
               : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)), "n"(int(TransA)),
                 "n"(int(TransB)));
}
} // namespace detail
#undef LLK_WGMMA_D8
#endif

/// d (+)= A B for the warpgroup: A (64 x 16) from this thread's fragment `a`,
/// B (16 x N) from shared memory (desc_b: N x 16 K-major, or MN-major when
/// TransB). N is 64 or 128 on a GPU.
template <int N, bool TransB>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4],
                                         uint64_t desc_b, bool accumulate) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::wgmma_bf16(d, N, a, 0, desc_b, false, TransB, accumulate);
#else
  static_assert(N == 64 || N == 128, "wgmma_rs: N is 64 or 128");
#ifdef LLK_SM90A
  if constexpr (N == 64)
    detail::wgmma_rs_64<TransB>(d, a, desc_b, accumulate);
  else
    detail::wgmma_rs_128<TransB>(d, a, desc_b, accumulate);
#else
  __trap();
#endif
#endif
}
/// The same with A (64 x 16) from shared memory (desc_a: K-major, or
/// MN-major when TransA).
template <int N, bool TransA, bool TransB>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b,
                                         bool accumulate) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::wgmma_bf16(d, N, nullptr, desc_a, desc_b, TransA, TransB, accumulate);
#else
  static_assert(N == 64 || N == 128, "wgmma_ss: N is 64 or 128");
#ifdef LLK_SM90A
  if constexpr (N == 64)
    detail::wgmma_ss_64<TransA, TransB>(d, desc_a, desc_b, accumulate);
  else
    detail::wgmma_ss_128<TransA, TransB>(d, desc_a, desc_b, accumulate);
#else
  __trap();
#endif
#endif
}

/// wgmma.fence.sync.aligned: orders this warpgroup's register accesses before
/// the wgmma operations that follow.
__device__ __forceinline__ void wgmma_fence() {
#ifdef LLK_SM90A
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::wgmma_commit();
#elif defined(LLK_SM90A)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
/// Waits until at most N of the warpgroup's committed groups are in flight.
template <int N> __device__ __forceinline__ void wgmma_wait() {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::wgmma_wait(N);
#elif defined(LLK_SM90A)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
/// Keeps the compiler from moving accesses of `d` across the asynchronous
/// wgmma operations that write it (a no-op instruction-wise).
template <int M> __device__ __forceinline__ void wgmma_fence_operands(float (&d)[M]) {
#ifndef LLAMA_CUDA_EMULATE
#pragma unroll
  for (int i = 0; i < M; ++i)
    asm volatile("" : "+f"(d[i])::"memory");
#endif
}
/// fence.proxy.async.shared::cta: this thread's ordinary shared memory
/// stores become visible to the tensor cores' reads (after a barrier).
__device__ __forceinline__ void fence_proxy_async() {
#ifdef LLK_SM90A
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}


// ---- mbarriers and bulk copies (sm_90) --------------------------------------
// An mbarrier is a 64-bit word of shared memory (8-byte aligned; dynamic
// shared memory under the emulator). A phase completes when `count` arrivals
// have arrived and the transaction bytes announced by expect_tx have landed;
// threads wait for the completion of the phase of a parity (0, 1, 0, ...).
// Initialization must be followed by a barrier before other threads use it.

__device__ __forceinline__ void mbarrier_init(uint64_t *bar, unsigned count) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::mbarrier_init(bar, count);
#elif defined(LLK_SM90A)
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(bar)),
               "r"(count)
               : "memory");
#else
  __trap();
#endif
}
/// fence.mbarrier_init.release.cluster: this thread's mbarrier.init become
/// visible to the copy engine's complete_tx (before the barrier that
/// publishes them to the block).
__device__ __forceinline__ void fence_mbarrier_init() {
#ifdef LLK_SM90A
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
/// One arrival.
__device__ __forceinline__ void mbarrier_arrive(uint64_t *bar) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::mbarrier_arrive(bar);
#elif defined(LLK_SM90A)
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(shared_address(bar))
               : "memory");
#else
  __trap();
#endif
}
/// Announces `bytes` of copies completing on `bar` in this phase, and arrives
/// (the producer's side of a bulk copy).
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t *bar, uint32_t bytes) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::mbarrier_expect_tx(bar, bytes);
  llama_emu::mbarrier_arrive(bar);
#elif defined(LLK_SM90A)
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(
                   shared_address(bar)),
               "r"(bytes)
               : "memory");
#else
  __trap();
#endif
}
/// Waits until the phase of parity `parity` of `bar` has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t *bar, unsigned parity) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::mbarrier_wait(bar, parity);
#elif defined(LLK_SM90A)
  uint32_t done = 0;
  while (!done)
    asm volatile("{\n.reg .pred p;\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                 "selp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done)
                 : "r"(shared_address(bar)), "r"(parity)
                 : "memory");
#else
  __trap();
#endif
}
/// This thread's cp.async copies issued so far arrive on `bar` once they
/// have landed (.noinc: `bar`'s count includes this arrival).
__device__ __forceinline__ void cp_async_mbarrier_arrive(uint64_t *bar) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::cp_async_mbarrier_arrive(bar);
#elif defined(LLK_SM90A)
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(
                   shared_address(bar))
               : "memory");
#else
  __trap();
#endif
}
/// `bytes` (a multiple of 16; 16-byte aligned addresses) from global `src`
/// to shared `dst` by the copy engine (TMA's bulk copy), completing that
/// many transaction bytes on `bar`.
__device__ __forceinline__ void bulk_copy(void *dst, const void *src, uint32_t bytes,
                                          uint64_t *bar) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::bulk_copy(dst, src, bytes, bar);
#elif defined(LLK_SM90A)
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::
          "r"(shared_address(dst)),
      "l"(src), "r"(bytes), "r"(shared_address(bar))
      : "memory");
#else
  __trap();
#endif
}


// ---- tensor maps and TMA copies (sm_90) -------------------------------------
// A tiled tensor map of a bf16 tensor in global memory: what the copy engine
// needs to move a box of it into shared memory in one instruction. Encoded on
// the host (make_tensor_map) and passed to the kernel by value as a
// `const __grid_constant__` parameter.
#ifdef LLAMA_CUDA_EMULATE
using TensorMap = llama_emu::TensorMap;
#else
using TensorMap = CUtensorMap;
#endif

/// Encodes `map` for the bf16 tensor at `base` (16-byte aligned) of `rank`
/// dims (innermost first) `dims`, `strides` the bytes between consecutive
/// indices of dims 1.. (multiples of 16), copied in boxes of `box` elements
/// (box[0] * 2 bytes a multiple of 16, and at most `swizzle_bytes` when
/// swizzled: 0, 32, 64 or 128). Out-of-bounds elements read as zeros. On a
/// GPU, the driver's cuTensorMapEncodeTiled, reached through the runtime's
/// entry point query (no link against libcuda); it throws when that fails.
inline void make_tensor_map(TensorMap *map, const void *base, unsigned rank,
                            const uint64_t *dims, const uint64_t *strides, const uint32_t *box,
                            unsigned swizzle_bytes) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::encode_tensor_map(map, base, rank, 2, dims, strides, box, swizzle_bytes);
#else
  using Encode = CUresult (*)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                              const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
                              const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                              CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
  static const Encode encode = [] {
    void *fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                         cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
      fn = nullptr;
    return reinterpret_cast<Encode>(fn);
  }();
  if (!encode)
    throw std::runtime_error("llk: the CUDA driver has no cuTensorMapEncodeTiled (the TMA "
                             "kernels need a CUDA 12 driver or later)");
  const cuuint32_t ones[5] = {1, 1, 1, 1, 1};
  const CUtensorMapSwizzle swizzle = swizzle_bytes == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                                     : swizzle_bytes == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                     : swizzle_bytes == 32 ? CU_TENSOR_MAP_SWIZZLE_32B
                                                           : CU_TENSOR_MAP_SWIZZLE_NONE;
  const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, rank, const_cast<void *>(base),
                            dims, strides, box, ones, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw std::runtime_error("llk: cuTensorMapEncodeTiled failed (CUresult " +
                             std::to_string(int(r)) + ") for a rank-" + std::to_string(rank) +
                             " bf16 map");
#endif
}

/// TMA's tiled copy: the box of `map` starting at element `coords` (R of
/// them, innermost first; signed) into shared memory at `dst` (128-byte
/// aligned; 1024 under the 128-byte swizzle), completing its bytes on `bar`.
/// Issued by one thread.
template <int R>
__device__ __forceinline__ void tensor_copy(void *dst, const TensorMap &map,
                                            const int32_t (&coords)[R], uint64_t *bar) {
  static_assert(R >= 1 && R <= 5, "TMA copies tensors of rank 1 to 5");
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::tensor_copy(dst, &map, coords, bar);
#elif defined(LLK_SM90A)
  static_assert(R == 4, "mma.cuh wraps the 4-d copy (the attention kernels' rank)");
  asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
               " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(shared_address(dst)),
               "l"(reinterpret_cast<uint64_t>(&map)), "r"(coords[0]), "r"(coords[1]),
               "r"(coords[2]), "r"(coords[3]), "r"(shared_address(bar))
               : "memory");
#else
  __trap();
#endif
}

/// bar.sync id, count: waits until `count` threads (a multiple of 32) have
/// arrived at named barrier `id` (1-15: 0 is __syncthreads').
__device__ __forceinline__ void named_barrier_sync(unsigned id, unsigned count) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::named_barrier(id, count, true);
#else
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
#endif
}
/// bar.arrive id, count: arrives at named barrier `id` without waiting.
__device__ __forceinline__ void named_barrier_arrive(unsigned id, unsigned count) {
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::named_barrier(id, count, false);
#else
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
#endif
}

/// setmaxnreg: the calling warpgroup (all of it) holds N registers a thread
/// from here on; dec gives registers back to the SM's file, inc takes them
/// (waiting until some other warpgroup has given them back).
template <int N> __device__ __forceinline__ void setmaxnreg_dec() {
  static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg takes multiples of 8, 24-256");
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::setmaxnreg(N, false);
#elif defined(LLK_SM90A)
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#else
  __trap();
#endif
}
template <int N> __device__ __forceinline__ void setmaxnreg_inc() {
  static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg takes multiples of 8, 24-256");
#ifdef LLAMA_CUDA_EMULATE
  llama_emu::setmaxnreg(N, true);
#elif defined(LLK_SM90A)
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#else
  __trap();
#endif
}

} // namespace llk
