// sm_90a's warpgroup MMA and mbarrier wrappers of runtime/cuda/kernels/mma.cuh, as the
// FA3-style kernels use them, for the static audit (kernel_audit.sh): S =
// Q K^T over a 64-wide K in four k-steps with both operands in 128-byte
// swizzled shared memory (m64n128k16, K-major), then O += P V with P's A
// fragment in registers and V MN-major (m64n64k16, transposed B). P's
// k-step ks (keys 16ks..16ks+15) is S's accumulators 8ks..8ks+7, in order:
// wgmma's accumulator layout is mma.m16n8k16's C layout per 8 columns.
#include "runtime/cuda/kernels/mma.cuh"

// dynamic shared memory: wgmma_probe 32768
__global__ void __launch_bounds__(128) wgmma_probe(float *out, const uint4 *in) {
  LLK_DYNAMIC_SHARED(smem);
  for (int i = threadIdx.x; i < 32768 / 16; i += 128)
    reinterpret_cast<uint4 *>(smem)[i] = in[i];
  llk::fence_proxy_async();
  __syncthreads();
  float s[64];
  llk::wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) {
    const uint64_t dq = llk::wgmma_desc(smem + 32 * ks, 0, 1024, llk::SmemSwizzle::B128);
    const uint64_t dk = llk::wgmma_desc(smem + 8192 + 32 * ks, 0, 1024, llk::SmemSwizzle::B128);
    llk::wgmma_ss<128, false, false>(s, dq, dk, ks > 0);
  }
  llk::wgmma_commit();
  llk::wgmma_wait<0>();
  llk::wgmma_fence_operands(s);
  float o[32];
#pragma unroll
  for (int i = 0; i < 32; ++i)
    o[i] = 0.0f;
  llk::wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < 8; ++ks) {
    const uint32_t p[4] = {llk::pack_bf16x2(s[8 * ks], s[8 * ks + 1]),
                           llk::pack_bf16x2(s[8 * ks + 2], s[8 * ks + 3]),
                           llk::pack_bf16x2(s[8 * ks + 4], s[8 * ks + 5]),
                           llk::pack_bf16x2(s[8 * ks + 6], s[8 * ks + 7])};
    // V: 128 rows of keys of 128 bytes (64 dims), 16 keys a k-step.
    const uint64_t dv = llk::wgmma_desc(smem + 16384 + 2048 * ks, 0, 1024, llk::SmemSwizzle::B128);
    llk::wgmma_rs<64, true>(o, p, dv, true);
  }
  llk::wgmma_commit();
  llk::wgmma_wait<0>();
  llk::wgmma_fence_operands(o);
#pragma unroll
  for (int i = 0; i < 32; ++i)
    out[threadIdx.x * 32 + i] = o[i];
}

// The mbarrier handshakes of a warp-specialized kernel: warpgroup 1's first
// thread bulk-copies 4 KiB tiles into a two-stage ring on `full`, the
// consumers (warpgroup 0) wait, read, and release the stage on `empty`; and
// a cp.async hand-off (cp.async.mbarrier.arrive.noinc).
// dynamic shared memory: mbarrier_probe 9216
__global__ void __launch_bounds__(256) mbarrier_probe(const float4 *src, float *out, int tiles) {
  LLK_DYNAMIC_SHARED(smem);
  uint64_t *full = reinterpret_cast<uint64_t *>(smem), *empty = full + 2, *copied = full + 4;
  float4 *buf = reinterpret_cast<float4 *>(smem + 1024);
  if (threadIdx.x == 0) {
    for (int s = 0; s < 2; ++s) {
      llk::mbarrier_init(&full[s], 1);
      llk::mbarrier_init(&empty[s], 128);
    }
    llk::mbarrier_init(copied, 128);
  }
  __syncthreads();
  if (threadIdx.x >= 128) {
    if (threadIdx.x == 128)
      for (int i = 0; i < tiles; ++i) {
        if (i >= 2)
          llk::mbarrier_wait(&empty[i % 2], unsigned(i / 2 - 1) & 1u);
        llk::mbarrier_arrive_expect_tx(&full[i % 2], 4096);
        llk::bulk_copy(buf + 256 * (i % 2), src + 256 * i, 4096, &full[i % 2]);
      }
    return;
  }
  float sum = 0.0f;
  for (int i = 0; i < tiles; ++i) {
    llk::mbarrier_wait(&full[i % 2], unsigned(i / 2) & 1u);
    const float4 x = buf[256 * (i % 2) + 2 * threadIdx.x];
    sum += x.x + x.y + x.z + x.w;
    llk::mbarrier_arrive(&empty[i % 2]);
  }
  llk::cp_async16(buf + threadIdx.x, src + threadIdx.x, true);
  llk::cp_async_mbarrier_arrive(copied);
  llk::mbarrier_wait(copied, 0);
  out[threadIdx.x] = sum + buf[(threadIdx.x + 1) % 128].x;
}

// The warp specialization of the FA3-style attention forward: warpgroup 0
// gives its registers back and its first thread copies 64 x 64 bf16 boxes of
// a tensor map (TMA, 128-byte swizzle) into a two-stage ring; warpgroups 1
// and 2 take the registers, wait, and take turns (named barriers 1 and 2)
// before reading each stage, then release it.
// dynamic shared memory: tma_probe 17408
__global__ void __launch_bounds__(384, 1)
    tma_probe(const __grid_constant__ llk::TensorMap map, float *out, int tiles) {
  LLK_DYNAMIC_SHARED(smem);
  uint64_t *full = reinterpret_cast<uint64_t *>(smem + 16384), *empty = full + 2;
  if (threadIdx.x == 0) {
    for (int s = 0; s < 2; ++s) {
      llk::mbarrier_init(&full[s], 1);
      llk::mbarrier_init(&empty[s], 8);
    }
    llk::fence_mbarrier_init();
  }
  __syncthreads();
  const int wg = __shfl_sync(0xffffffffu, int(threadIdx.x) / 128, 0);
  if (wg == 0) {
    llk::setmaxnreg_dec<24>();
    if (threadIdx.x == 0)
      for (int i = 0; i < tiles; ++i) {
        if (i >= 2)
          llk::mbarrier_wait(&empty[i % 2], unsigned(i / 2 - 1) & 1u);
        llk::mbarrier_arrive_expect_tx(&full[i % 2], 8192);
        const int32_t at[4] = {0, 0, 64 * i, 0};
        llk::tensor_copy<4>(smem + 8192 * (i % 2), map, at, &full[i % 2]);
      }
    return;
  }
  llk::setmaxnreg_inc<240>();
  const unsigned mine = unsigned(wg), theirs = 3u - unsigned(wg);
  if (wg == 2)
    llk::named_barrier_arrive(theirs, 256);
  float sum = 0.0f;
  for (int i = 0; i < tiles; ++i) {
    llk::mbarrier_wait(&full[i % 2], unsigned(i / 2) & 1u);
    llk::named_barrier_sync(mine, 256);
    sum += __bfloat162float(reinterpret_cast<const __nv_bfloat16 *>(smem + 8192 * (i % 2))[threadIdx.x]);
    if (wg == 1 || i + 1 < tiles)
      llk::named_barrier_arrive(theirs, 256);
    if (threadIdx.x % 32 == 0)
      llk::mbarrier_arrive(&empty[i % 2]);
  }
  out[threadIdx.x] = sum;
}
