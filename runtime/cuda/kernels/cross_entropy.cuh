// Softmax cross-entropy over a vocabulary of V logits per row, the mean over
// the scored rows, and (kGrad) its gradient, in one launch sequence.
//
//   scored row r:  target t_r != ignore, 0 <= t_r < V;  n = #scored rows
//   M_r = max_j x[r, j],  S_r = sum_j exp(x[r, j] - M_r)
//   loss = 1/n * sum_{scored r} (log S_r + M_r - x[r, t_r])    (0 when n == 0;
//          NaN when some target is neither `ignore` nor in [0, V): the
//          trainer's non-finite check stops on it)
//   dlogits[r, j] = grad_scale / n * (exp(x[r, j] - M_r) / S_r - [j == t_r]),
//                   0 on rows that are not scored
//
// Memory traffic per logit, in the storage type T (bf16: 2 bytes):
//   forward: 1 read.
//   kGrad:   1 read + 1 write when the row fits in the threads' registers
//            (V <= 1024 threads x kMaxPacks packs: 32768 bf16, 16384 fp32;
//            LLaMA-2's 32000 bf16 fits). Longer rows are register tiles of
//            1024 x kMaxPacks packs; pass 2 takes the last tile from
//            registers and re-reads the others (from L2: a row is at most a
//            few hundred KB, and its block is the only reader).
//   Exps: 1 per logit in pass 1 (and 1 per thread and tile to rescale the
//   running sum), 1 per logit again in pass 2 (recomputed, not stored).
//   Per row, a target read and one fp32 loss term; the counts and the final
//   sum read `rows` int32 / fp32 values once each.
//
// Pass 1 is an online softmax: each thread keeps a running (m, s) = (max,
// sum of exp(x - m)) over its packs, rescaling s once per register tile;
// partial states merge as
//   (m1, s1) + (m2, s2) -> (m, s1 * e^(m1 - m) + s2 * e^(m2 - m)), m = max(m1, m2)
// across the warp (butterfly shuffles), then across warps in warp order.
// The neutral state is (-FLT_MAX, 0), not -inf: e^(m1 - m) stays finite
// (e^0 = 1 for two idle threads, instead of e^(-inf + inf) = NaN), and a
// logit of -inf contributes e^(-inf) = 0. A NaN logit makes S NaN: loss NaN.
// exp is __expf (ex2.approx after a multiply by log2 e): ~2 ulp, inside the
// test tolerances; log is the accurate logf, once per row.
//
// Launch shape:
//   count: 1 block x 1024 threads over the targets -> n, #bad (int32).
//   rows:  1 block per row, llk::row_threads(packs) threads (a multiple of 32,
//          at most 1024), each thread up to kMaxPacks 16-byte packs per
//          register tile (8 bf16 / 4 fp32; single elements when V is not a
//          multiple of the pack), so a warp reads 512 contiguous bytes per
//          request. A whole block per
//          row because a row is large (tens of thousands of logits) and the
//          block reduction is two barriers; rows are independent blocks.
//   loss:  1 block x 1024 threads sums the per-row terms.
//   The gradient needs n before any row is written, hence the count kernel
//   first (the forward runs it too: the loss reads n and #bad from it); the
//   loss needs every row's term, hence the last kernel.
//
// Determinism: every sum has a fixed order that depends only on the shape:
// a thread's packs in index order, the butterfly (whose two lanes add the
// same two products, so all lanes agree bitwise), the warps in warp order,
// and the rows' terms in block_sum's order (thread-strided, butterfly, warp
// order). Counts are integers. No atomics.
//
// In place: dlogits may be logits. Thread 0 reads the target's logit before
// the block reduction, whose barriers every thread passes before its first
// store; afterwards each thread writes exactly the elements it reads (the
// same index mapping in both passes), after reading them.
//
// Workspace: a 16-byte header {n, #bad} then one fp32 term per row.
#pragma once

#include "runtime/cuda/kernels/common.cuh"

namespace llk {

namespace ce_detail {

/// The running maximum's neutral value: the lowest finite float (see above).
constexpr float kLowest = -3.40282347e+38f;

/// The workspace's header: how many rows are scored and how many targets
/// are neither `ignore` nor a vocabulary index.
struct Counts {
  int32_t scored, bad, unused[2]; // 16 bytes: the terms after it stay aligned
};
static_assert(sizeof(Counts) == 16, "the terms start 16 bytes in");

/// Integer sum over the block (any order gives the same result); every
/// thread must call it and gets the total.
__device__ __forceinline__ int32_t block_count(int32_t v) {
  __shared__ int32_t partial[32];
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads(); // a previous call's readers are done with `partial`
  if ((threadIdx.x & 31) == 0)
    shared_st(partial[threadIdx.x >> 5], v);
  __syncthreads();
  int32_t total = 0;
  for (unsigned w = 0; w < blockDim.x / 32; ++w)
    total += shared_ld(partial[w]);
  return total;
}

/// (m, s) += (m2, s2): the online-softmax merge. Symmetric bitwise: both
/// orders add the same two products (and fmaxf of non-NaN values commutes;
/// m is never NaN, as fmaxf drops NaN operands).
__device__ __forceinline__ void merge(float &m, float &s, float m2, float s2) {
  const float mm = fmaxf(m, m2);
  s = s * __expf(m - mm) + s2 * __expf(m2 - mm);
  m = mm;
}

template <int64_t V>
__global__ void __launch_bounds__(1024)
    ce_count_kernel(const int32_t *__restrict__ targets, int64_t rows, int64_t ignore,
                    Counts *__restrict__ counts) {
  int32_t scored = 0, bad = 0;
  for (int64_t r = threadIdx.x; r < rows; r += 1024) {
    const int64_t t = targets[r];
    if (t == ignore)
      continue;
    if (t < 0 || t >= V)
      ++bad;
    else
      ++scored;
  }
  scored = block_count(scored);
  bad = block_count(bad);
  if (threadIdx.x == 0) {
    counts->scored = scored;
    counts->bad = bad;
  }
}

/// How a row of V logits of T maps onto a block (see the file comment).
template <typename T, int64_t V> struct CeShape {
  static constexpr int kP = kPackFor<T, V>;                 // elements per access
  static constexpr int64_t kPacks = V / kP;                 // accesses per row
  static constexpr int kThreads = row_threads(kPacks);      // threads per row
  static constexpr int64_t kTile = int64_t(kThreads) * kMaxPacks; // packs per tile
  static constexpr int64_t kTiles = ceil_div(kPacks, kTile);
  static constexpr bool kFull = kPacks % kTile == 0;        // no slot past the row
};

/// One block per row: the row's loss term (terms[row]) and, with kGrad, its
/// gradient row. logits and dlogits may be the same buffer (not restrict).
template <typename T, int64_t V, bool kGrad>
__global__ void __launch_bounds__((CeShape<T, V>::kThreads))
    ce_rows_kernel(const T *logits, const int32_t *__restrict__ targets, T *dlogits,
                   const Counts *__restrict__ counts, float *__restrict__ terms,
                   int64_t ignore, float grad_scale, const float *__restrict__ dloss) {
  using S = CeShape<T, V>;
  constexpr int P = S::kP;
  const int64_t row = blockIdx.x;
  const int64_t target = targets[row];
  const T *x = logits + row * V;
  // Uniform over the block: an unscored row returns before any barrier.
  if (target == ignore || target < 0 || target >= V) {
    if constexpr (kGrad) {
      const Pack<T, P> zero = narrow<T>(Floats<P>{});
      for (int64_t j = threadIdx.x; j < S::kPacks; j += S::kThreads)
        store<P>(dlogits + row * V + j * P, zero);
    }
    if (threadIdx.x == 0)
      terms[row] = 0.0f;
    return;
  }
  // Before the reduction's barriers, hence before any store to the row.
  const float target_logit = threadIdx.x == 0 ? to_float(x[target]) : 0.0f;

  // Pass 1: this thread's running (m, s), one register tile at a time. The
  // last tile stays in `tile` for pass 2.
  Pack<T, P> tile[kMaxPacks];
  float m = kLowest, s = 0.0f;
  for (int64_t t = 0; t < S::kTiles; ++t) {
    float tile_max = kLowest;
#pragma unroll
    for (int k = 0; k < kMaxPacks; ++k) {
      const int64_t j = t * S::kTile + k * S::kThreads + threadIdx.x;
      if (S::kFull || j < S::kPacks) {
        tile[k] = load<P>(x + j * P);
        const Floats<P> f = widen(tile[k]);
#pragma unroll
        for (int i = 0; i < P; ++i)
          tile_max = fmaxf(tile_max, f.v[i]);
      }
    }
    const float mm = fmaxf(m, tile_max);
    s *= __expf(m - mm); // one rescale per tile, not per element
    m = mm;
#pragma unroll
    for (int k = 0; k < kMaxPacks; ++k) {
      const int64_t j = t * S::kTile + k * S::kThreads + threadIdx.x;
      if (S::kFull || j < S::kPacks) {
        const Floats<P> f = widen(tile[k]);
#pragma unroll
        for (int i = 0; i < P; ++i)
          s += __expf(f.v[i] - m);
      }
    }
  }
  // Merge: butterfly across the warp, then the warps in warp order.
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
    merge(m, s, m2, s2);
  }
  __shared__ float warp_m[32], warp_s[32];
  if ((threadIdx.x & 31) == 0) {
    shared_st(warp_m[threadIdx.x >> 5], m);
    shared_st(warp_s[threadIdx.x >> 5], s);
  }
  __syncthreads();
  m = shared_ld(warp_m[0]);
  s = shared_ld(warp_s[0]);
  for (int w = 1; w < S::kThreads / 32; ++w)
    merge(m, s, shared_ld(warp_m[w]), shared_ld(warp_s[w]));
  if (threadIdx.x == 0)
    terms[row] = logf(s) + m - target_logit;

  if constexpr (kGrad) {
    // This row is scored, so counts->scored >= 1.
    // The unfused gradient takes its upstream gradient from the device.
    const float coef = grad_scale * (dloss ? *dloss : 1.0f) / float(counts->scored);
    const float scale = coef / s;
    T *d = dlogits + row * V;
    // Last tile first: it is still in registers (the only tile when the row
    // fits); each thread reads, then writes, only its own elements.
    for (int64_t t = S::kTiles - 1; t >= 0; --t) {
#pragma unroll
      for (int k = 0; k < kMaxPacks; ++k) {
        const int64_t j = t * S::kTile + k * S::kThreads + threadIdx.x;
        if (!(S::kFull || j < S::kPacks))
          continue;
        if (t != S::kTiles - 1)
          tile[k] = load<P>(x + j * P);
        Floats<P> g = widen(tile[k]);
#pragma unroll
        for (int i = 0; i < P; ++i) {
          g.v[i] = __expf(g.v[i] - m) * scale;
          if (j * P + i == target)
            g.v[i] -= coef;
        }
        store_floats<P>(d + j * P, g);
      }
    }
  }
}

/// loss[0] from the counts and the per-row terms (rows summed in the fixed
/// order of block_sum: thread-strided, then butterfly, then warp order). A
/// template, like every kernel here, so that including this header in more
/// than one translation unit defines nothing twice.
template <int64_t V>
__global__ void __launch_bounds__(1024)
    ce_loss_kernel(const Counts *__restrict__ counts, const float *__restrict__ terms,
                   int64_t rows, float *__restrict__ loss) {
  float total = 0.0f;
  for (int64_t r = threadIdx.x; r < rows; r += 1024)
    total += terms[r];
  total = block_sum(total);
  if (threadIdx.x == 0) {
    const int32_t n = counts->scored;
    loss[0] = counts->bad > 0 ? __int_as_float(0x7fc00000)
              : n > 0         ? total / float(n)
                              : 0.0f;
  }
}


/// The count of scored rows, then one block per row (its loss term, and
/// with kGrad its gradient, scaled by grad_scale and *dloss when given).
template <typename T, int64_t V, bool kGrad>
float *count_and_rows(const T *logits, const int32_t *targets, T *dlogits, int64_t rows,
                      int64_t ignore, float grad_scale, const float *dloss, void *workspace,
                      cudaStream_t stream) {
  (void)stream; // unused by the emulator's launch
  auto *counts = static_cast<Counts *>(workspace);
  float *terms = reinterpret_cast<float *>(counts + 1);
  auto *count = &ce_count_kernel<V>;
  LLAMA_LAUNCH(count, dim3(1), dim3(1024), stream, targets, rows, ignore, counts);
  if (rows > 0) {
    auto *row_kernel = &ce_rows_kernel<T, V, kGrad>;
    LLAMA_LAUNCH(row_kernel, dim3(unsigned(rows)), dim3(CeShape<T, V>::kThreads), stream,
                 logits, targets, dlogits, counts, terms, ignore, grad_scale, dloss);
  }
  return terms;
}

} // namespace ce_detail

static_assert(sizeof(ce_detail::Counts) == 16, "shapes.h: cross_entropy_workspace_bytes");

/// loss[0] = mean over scored rows of logsumexp(row) - row[target] (NaN on a
/// bad target, 0 with no scored row). kGrad: dlogits = grad_scale *
/// (softmax - onehot) / n, zero rows where not scored; dlogits may be
/// logits. dlogits is unused when !kGrad. workspace: 16-byte aligned,
/// cross_entropy_workspace_bytes(rows).
template <typename T, int64_t V, bool kGrad>
void cross_entropy_fused(const T *logits, const int32_t *targets, float *loss, T *dlogits,
                         int64_t rows, int64_t ignore, float grad_scale, void *workspace,
                         cudaStream_t stream) {
  using namespace ce_detail;
  float *terms = count_and_rows<T, V, kGrad>(logits, targets, dlogits, rows, ignore, grad_scale,
                                             nullptr, workspace, stream);
  auto *loss_kernel = &ce_loss_kernel<V>;
  LLAMA_LAUNCH(loss_kernel, dim3(1), dim3(1024), stream, static_cast<Counts *>(workspace),
               terms, rows, loss);
}

/// The unfused gradient (cross_entropy_grad): dlogits = dloss[0] * (softmax
/// - onehot) / n, zero rows where not scored, with dloss on the device.
/// dlogits may be logits. workspace as cross_entropy_fused's.
template <typename T, int64_t V>
void cross_entropy_backward(const float *dloss, const T *logits, const int32_t *targets,
                            T *dlogits, int64_t rows, int64_t ignore, void *workspace,
                            cudaStream_t stream) {
  ce_detail::count_and_rows<T, V, true>(logits, targets, dlogits, rows, ignore, 1.0f, dloss,
                                        workspace, stream);
}

} // namespace llk
