// Token embedding: the row gather and its gradient (a scatter-add), for a
// whole table or a vocabulary shard (rows [row0, row0 + rows) of a
// `vocab`-row table; row0 = 0 and rows = vocab unsharded).
//
//   forward   out[t, :] = table[ids[t] - row0, :]  when row0 <= ids[t] < row0 + rows
//                       = 0                         for an id another shard holds
//                       = NaN                       for an id outside [0, vocab)
//                         (the loss turns NaN and the trainer stops; never an
//                         out-of-bounds read)
//   backward  dtable[r, :] = sum over positions t with ids[t] - row0 == r of
//                            dout[t, :], added in position order starting
//                            from 0.0f: bitwise the CPU reference's result
//                            (runtime/cpu/embedding.cpp walks the tokens in
//                            order over a zeroed table)
//
// Memory traffic per element (T: the storage type, bf16 2 bytes):
//   forward   1 read of the table row + 1 write of out (16-byte packs, one
//             per thread; single elements when D is not a multiple of the
//             pack). The id is a 4-byte read shared by the row's threads.
//   backward  dout read once, dtable written once (no zero-fill pass: a row
//             without tokens is written as zeros by the same kernel), in
//             16-byte packs. Per token, besides: the stable sort (one 8-byte
//             read and write per 4-bit digit pass, 4 passes for 32000 rows,
//             5 for 128256) and one 4-byte index write per distinct id. Work
//             O(tokens * D + rows * D); the kernel this replaces scanned all
//             tokens for every table row, O(vocab * tokens).
//
// Backward, step by step:
//   1. sort (1 block, 512 threads): a stable LSD radix sort of the positions
//      by key = ids[t] - row0, 4-bit digits. An id outside the shard gets the
//      key `rows`, a sentinel that sorts last and is skipped. Elements are
//      (key << 32 | position) in one uint64, ping-ponged between two
//      workspace buffers. Each thread owns a contiguous range of the input
//      and counts its digits into its own column of a [16][threads] shared
//      histogram; an exclusive scan in (digit, thread) order (digit-major)
//      gives each thread its first output slot per digit; each thread then
//      scatters its range in order. Lower threads' elements land before
//      higher threads' within a digit, and a thread's own in range order:
//      stable, so each key's positions stay ascending. (A warp's reads are
//      32 separate streams, one per thread; each 32-byte sector serves a
//      thread's next four elements from L1.) One block because a
//      multi-block radix sort needs a grid-wide scan (extra launches and
//      their own workspace) for a few tens of thousands of tokens.
//   2. mark (1 thread per sorted element): first[key] = i where element i
//      starts its key's run. Distinct keys: distinct addresses, no races.
//   3. sum (1 block per (table row, column tile)): each thread owns one
//      column pack and adds the run's dout rows in sorted (= position)
//      order, reading 8 rows ahead to keep loads in flight, then writes the
//      row (zeros when the row has no run).
//   `first` is never cleared: row r adds the sorted elements from
//   b = first[r] on while they exist and their key is r. If r has tokens,
//   step 2 wrote b; if not, no element has key r, so whatever an earlier
//   call (or nobody) left there stops the loop at once: a zero row. This
//   saves a launch and a rows-long write per call.
//
// Launch shapes: forward 256 threads, one pack each, a flat grid over all
// (token, pack) pairs. Sort: 1 x 512 (a [16][512] uint32 histogram is 32 KB
// of static shared memory). Mark: 256 threads per block. Sum: the column
// packs of a row in blocks of up to 128 threads (whole warps), grid (rows,
// column tiles).
//
// Worst case, honestly: a token at L positions makes its row a chain of L
// dependent adds per column (the position order is the contract, so the run
// cannot be split along positions), worked by D / pack threads with 8 loads
// in flight each. For D = 4096 bf16 that is 512 threads x 8 x 16 bytes =
// 64 KB in flight: about L / 8 memory latencies, ~1 ms for a run of 16K
// positions (a whole 8 x 2048 batch of one token); the other rows proceed in
// parallel on the other SMs. The sort is one SM's work, O(tokens x passes):
// tens of microseconds at 16K tokens, about a millisecond at 1M.
//
// Determinism: the forward is a copy. The backward's only float arithmetic
// is each element's sum, in position order by construction; the sort and
// marks are integer work with a unique result. No atomics.
//
// Positions are 32-bit: tokens < 2^32 (ids is an int32 array indexed by
// int64, but no batch approaches that).
#pragma once

#include "runtime/cuda/kernels/common.cuh"

namespace llk {

namespace emb_detail {

constexpr int kForwardThreads = 256;
constexpr int kSortThreads = 512;
constexpr int kMarkThreads = 256;
constexpr int kSumMaxThreads = 128;
constexpr int kDigitBits = 4;
constexpr int kDigits = 1 << kDigitBits;
/// Rows of dout the sum loads before adding them (loads in flight per thread).
constexpr int kSumUnroll = 8;

/// A sorted element: the key (table row, or the sentinel `rows`) above the
/// position.
__device__ __forceinline__ int64_t key_of(uint64_t e) { return int64_t(e >> 32); }
__device__ __forceinline__ int64_t position_of(uint64_t e) { return int64_t(uint32_t(e)); }

/// P elements of T at p (P a multiple or a divisor of T's full pack, and
/// p aligned to min(P, kPack<T>) elements) in min(P, kPack<T>)-element
/// accesses: lets a row move as P-element packs of two storage types of
/// different widths (8 bf16 = 16 bytes = two 16-byte fp32 accesses).
template <int P, typename T>
__device__ __forceinline__ Pack<T, P> load_wide(const T *__restrict__ p) {
  constexpr int Q = P < kPack<T> ? P : kPack<T>;
  Pack<T, P> r;
#pragma unroll
  for (int q = 0; q < P / Q; ++q) {
    const Pack<T, Q> part = load<Q>(p + q * Q);
#pragma unroll
    for (int i = 0; i < Q; ++i)
      r.v[q * Q + i] = part.v[i];
  }
  return r;
}
template <int P, typename T>
__device__ __forceinline__ void store_wide(T *p, const Pack<T, P> &v) {
  constexpr int Q = P < kPack<T> ? P : kPack<T>;
#pragma unroll
  for (int q = 0; q < P / Q; ++q) {
    Pack<T, Q> part;
#pragma unroll
    for (int i = 0; i < Q; ++i)
      part.v[i] = v.v[q * Q + i];
    store<Q>(p + q * Q, part);
  }
}

template <typename T, int64_t D>
__global__ void __launch_bounds__(kForwardThreads)
    embedding_forward_kernel(const T *__restrict__ table, const int32_t *__restrict__ ids,
                             T *__restrict__ out, int64_t packs, int64_t rows,
                             int64_t vocab, int64_t row0) {
  constexpr int P = kPackFor<T, D>;
  constexpr int64_t kRowPacks = D / P;
  const int64_t i = int64_t(blockIdx.x) * kForwardThreads + threadIdx.x;
  if (i >= packs)
    return;
  const int64_t token = i / kRowPacks, c = i - token * kRowPacks;
  const int64_t id = ids[token], local = id - row0;
  Pack<T, P> v;
  if (id < 0 || id >= vocab) {
    Floats<P> nan;
#pragma unroll
    for (int e = 0; e < P; ++e)
      nan.v[e] = __int_as_float(0x7fc00000);
    v = narrow<T>(nan);
  } else if (local >= 0 && local < rows) {
    v = load<P>(table + local * D + c * P);
  } else {
    v = narrow<T>(Floats<P>{});
  }
  store<P>(out + token * D + c * P, v);
}

/// Step 1 (see the file comment): the stable sort, in one block. Pass k
/// writes buf[k % 2] (buf0, buf1) from the ids (k = 0) or the other buffer.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    embedding_sort_kernel(const int32_t *__restrict__ ids, uint64_t *buf0, uint64_t *buf1,
                          int64_t tokens, int64_t rows, int64_t row0, int passes) {
  constexpr int kWarps = kThreads / 32;
  // hist[d * kThreads + t]: thread t's count of digit d, then its next slot.
  // Column t is only ever touched by thread t (bank t % 32: no conflicts).
  __shared__ uint32_t hist[kDigits * kThreads];
  __shared__ uint32_t warp_total[kDigits * kWarps];
  const int t = int(threadIdx.x), lane = t & 31, warp = t >> 5;
  const int64_t chunk = ceil_div(tokens, kThreads);
  const int64_t lo = t * chunk < tokens ? t * chunk : tokens;
  const int64_t hi = lo + chunk < tokens ? lo + chunk : tokens;
  for (int pass = 0; pass < passes; ++pass) {
    const uint64_t *src = pass & 1 ? buf0 : buf1; // unused in pass 0
    uint64_t *dst = pass & 1 ? buf1 : buf0;
    const int shift = 32 + kDigitBits * pass;
    auto element = [&](int64_t p) -> uint64_t {
      if (pass > 0)
        return src[p];
      const int64_t local = int64_t(ids[p]) - row0;
      const int64_t key = local >= 0 && local < rows ? local : rows;
      return uint64_t(key) << 32 | uint64_t(p);
    };
    auto digit = [&](uint64_t e) { return int((e >> shift) & (kDigits - 1)); };

#pragma unroll
    for (int d = 0; d < kDigits; ++d)
      shared_st(hist[d * kThreads + t], 0u);
    for (int64_t p = lo; p < hi; ++p) {
      uint32_t &h = hist[digit(element(p)) * kThreads + t];
      shared_st(h, shared_ld(h) + 1u);
    }

    // Exclusive scan over (digit, thread), digit-major. Within the warp: a
    // butterfly that also tracks each lane's prefix (at step o a lane with
    // bit o set adds its partner group's total, the lower one). Then the
    // warps' totals, through shared memory. Integers: any order is exact.
    uint32_t prefix[kDigits];
#pragma unroll
    for (int d = 0; d < kDigits; ++d) {
      uint32_t total = shared_ld(hist[d * kThreads + t]), below = 0;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const uint32_t other = __shfl_xor_sync(0xffffffffu, total, o);
        if (lane & o)
          below += other;
        total += other;
      }
      prefix[d] = below;
      if (lane == 0)
        shared_st(warp_total[d * kWarps + warp], total);
    }
    __syncthreads();
    uint32_t base = 0; // elements of all lower digits
#pragma unroll
    for (int d = 0; d < kDigits; ++d) {
      uint32_t lower_warps = 0, all = 0;
      for (int w = 0; w < kWarps; ++w) {
        const uint32_t n = shared_ld(warp_total[d * kWarps + w]);
        lower_warps += w < warp ? n : 0u;
        all += n;
      }
      shared_st(hist[d * kThreads + t], base + lower_warps + prefix[d]);
      base += all;
    }

    // Scatter this thread's range in order: stable.
    for (int64_t p = lo; p < hi; ++p) {
      const uint64_t e = element(p);
      uint32_t &h = hist[digit(e) * kThreads + t];
      const uint32_t slot = shared_ld(h);
      shared_st(h, slot + 1u);
      dst[slot] = e;
    }
    // dst is complete before the next pass reads it, and every thread has
    // read warp_total before the next pass overwrites it.
    __syncthreads();
  }
}

/// Step 2: first[key] = index of the key's first sorted element.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    embedding_mark_kernel(const uint64_t *__restrict__ sorted, uint32_t *__restrict__ first,
                          int64_t tokens, int64_t rows) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= tokens)
    return;
  const int64_t key = key_of(sorted[i]);
  if (key < rows && (i == 0 || key_of(sorted[i - 1]) != key))
    first[key] = uint32_t(i);
}

/// How a table row maps onto the sum's threads: packs of P elements, P the
/// narrower of the two types' packs (bf16 gradients into an fp32 table: 4
/// elements, an 8-byte load and a 16-byte store per lane). With the wider
/// pack each lane stored 32 bytes as two 16-byte halves, so every warp
/// request left half of each 32-byte sector unused (the emulator's
/// coalescing counters: 53%).
template <typename TIn, typename TOut, int64_t D> struct SumShape {
  static constexpr int kP =
      kPackFor<TIn, D> < kPackFor<TOut, D> ? kPackFor<TIn, D> : kPackFor<TOut, D>;
  static constexpr int64_t kPacks = D / kP;
  static constexpr int kThreads =
      kPacks >= kSumMaxThreads ? kSumMaxThreads : int(ceil_div(kPacks, 32) * 32);
  static constexpr int64_t kColumnTiles = ceil_div(kPacks, kThreads);
};

/// Step 3: dtable row blockIdx.x, column tile blockIdx.y.
template <typename TIn, typename TOut, int64_t D>
__global__ void __launch_bounds__((SumShape<TIn, TOut, D>::kThreads))
    embedding_sum_kernel(const TIn *__restrict__ dout, const uint64_t *__restrict__ sorted,
                         const uint32_t *__restrict__ first, TOut *__restrict__ dtable,
                         int64_t tokens) {
  using S = SumShape<TIn, TOut, D>;
  constexpr int P = S::kP;
  const int64_t row = blockIdx.x;
  const int64_t c = int64_t(blockIdx.y) * S::kThreads + threadIdx.x;
  if (c >= S::kPacks)
    return; // no barriers in this kernel
  Floats<P> acc{}; // 0.0f, as the CPU's zeroed table
  // first[row] is garbage unless the row has tokens; the loop then stops at
  // its first element (past the end, or another key: file comment).
  for (int64_t i = first[row];; i += kSumUnroll) {
    // The run's elements are a prefix of these (the keys are sorted).
    uint64_t e[kSumUnroll];
    bool in_run[kSumUnroll];
#pragma unroll
    for (int u = 0; u < kSumUnroll; ++u) {
      e[u] = i + u < tokens ? sorted[i + u] : ~uint64_t(0);
      in_run[u] = key_of(e[u]) == row;
    }
    Pack<TIn, P> x[kSumUnroll];
#pragma unroll
    for (int u = 0; u < kSumUnroll; ++u)
      if (in_run[u])
        x[u] = load_wide<P>(dout + position_of(e[u]) * D + c * P);
#pragma unroll
    for (int u = 0; u < kSumUnroll; ++u)
      if (in_run[u]) {
        const Floats<P> f = widen(x[u]);
#pragma unroll
        for (int k = 0; k < P; ++k)
          acc.v[k] += f.v[k];
      }
    if (!in_run[kSumUnroll - 1])
      break;
  }
  store_wide<P>(dtable + row * D + c * P, narrow<TOut>(acc));
}

} // namespace emb_detail

/// out[t, :] = the table row of ids[t] (see the file comment for shards and
/// bad ids). table, out: 16-byte aligned.
template <typename T, int64_t D>
void embedding_forward(const T *table, const int32_t *ids, T *out, int64_t tokens,
                       int64_t rows, int64_t vocab, int64_t row0, cudaStream_t stream) {
  using namespace emb_detail;
  (void)stream; // unused by the emulator's launch
  const int64_t packs = tokens * (D / kPackFor<T, D>);
  if (packs == 0)
    return;
  auto *kernel = &embedding_forward_kernel<T, D>;
  LLAMA_LAUNCH(kernel, dim3(unsigned(ceil_div(packs, kForwardThreads))),
               dim3(kForwardThreads), stream, table, ids, out, packs, rows, vocab, row0);
}


/// dtable [rows, D] (overwritten) = the position-order sum of the dout rows
/// of each row's tokens (see the file comment). dout, dtable, workspace:
/// 16-byte aligned; workspace of embedding_backward_workspace_bytes.
template <typename TIn, typename TOut, int64_t D>
void embedding_backward(const TIn *dout, const int32_t *ids, TOut *dtable, int64_t tokens,
                        int64_t rows, int64_t row0, void *workspace, cudaStream_t stream) {
  using namespace emb_detail;
  using S = SumShape<TIn, TOut, D>;
  (void)stream; // unused by the emulator's launch
  if (rows <= 0)
    return;
  auto *buf0 = static_cast<uint64_t *>(workspace);
  uint64_t *buf1 = buf0 + tokens;
  auto *first = reinterpret_cast<uint32_t *>(buf1 + tokens);
  const uint64_t *sorted = buf0;
  if (tokens > 0) {
    int passes = 0; // hex digits of the largest key, the sentinel `rows`
    for (int64_t v = rows; v > 0; v >>= kDigitBits)
      ++passes;
    auto *sort = &embedding_sort_kernel<kSortThreads>;
    LLAMA_LAUNCH(sort, dim3(1), dim3(kSortThreads), stream, ids, buf0, buf1, tokens, rows,
                 row0, passes);
    sorted = (passes - 1) & 1 ? buf1 : buf0;
    auto *mark = &embedding_mark_kernel<kMarkThreads>;
    LLAMA_LAUNCH(mark, dim3(unsigned(ceil_div(tokens, kMarkThreads))), dim3(kMarkThreads),
                 stream, sorted, first, tokens, rows);
  }
  auto *sum = &embedding_sum_kernel<TIn, TOut, D>;
  LLAMA_LAUNCH(sum, dim3(unsigned(rows), unsigned(S::kColumnTiles)), dim3(S::kThreads),
               stream, dout, sorted, first, dtable, tokens);
}

} // namespace llk
