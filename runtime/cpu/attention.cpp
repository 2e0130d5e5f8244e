// Causal grouped-query attention, forward and backward, flash-style on CPU.
//
// Math (per batch b, query head h, kv head g = h / (n_heads / n_kv_heads)):
//   s_ij = scale * q_i . k_j  for j <= i,   lse_i = log sum_j exp(s_ij),
//   p_ij = exp(s_ij - lse_i),  out_i = sum_j p_ij v_j.
// Backward, with D_i = dout_i . out_i (= sum_j p_ij dp_ij):
//   dp_ij = dout_i . v_j,  ds_ij = p_ij (dp_ij - D_i),
//   dq_i = scale sum_j ds_ij k_j,  dk_j = scale sum_{i, heads of g} ds_ij q_i,
//   dv_j = sum_{i, heads of g} p_ij dout_i.
//
// Memory traffic: the seq x seq score matrix never exists. The forward walks
// one 64-row query block against 64-key blocks with an online softmax
// (running max m and sum l, rescaling the output accumulator when m grows),
// so per task it reads Q once and K/V once per block of keys <= its last row,
// and writes out + lse once. Every tile (packed Q^T, scores, output
// accumulator) lives in a per-thread scratch of O(block * head_dim) that stays
// in L2. The backward recomputes p from the stored lse instead of keeping the
// probabilities: one extra Q K^T tile product buys O(seq) instead of
// O(seq^2) saved memory. It walks key blocks in the outer loop, so the dk/dv
// accumulators of a block stay in scratch and K^T, V^T are packed once per
// block; Q and dO blocks stream through it, dq accumulates in place.
// Next blocks are software-prefetched: one head's rows are a few cache lines
// each, a whole token row apart, which hardware prefetchers do not follow.
//
// Parallelism: forward tasks are (batch, head, query block), largest blocks
// first for load balance. Backward tasks are (batch, kv head): a task owns the
// dk/dv rows of its kv head and the dq rows of its query heads, so nothing is
// shared between threads and the result is deterministic. This matches
// PyTorch's CPU flash attention granularity for multi-head attention; with
// few kv heads and many cores a task split along keys (plus a separate dq
// pass) would scale further.
//
// The tile products use tile_gemm.h and are compiled for SSE, AVX2 and
// AVX-512; the widest one the CPU supports is chosen per call (isa.h).
#include "runtime/cpu/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "runtime/cpu/isa.h"
#include "runtime/cpu/scratch.h"
#include "runtime/cpu/tile_gemm.h"
#include "runtime/cpu/vec_math.h"

namespace llamart::cpu {
namespace {

// 64 x 64 score tiles: with head_dim 128 a forward task's float tiles take
// 80 KiB and a backward task's 192 KiB, inside the L2 of current server cores.
constexpr int64_t kBlockQ = 64;
constexpr int64_t kBlockK = 64;

struct Shape {
  int64_t batch, seq, n_heads, n_kv_heads, head_dim;
  int64_t heads_per_group; // query heads sharing one kv head
  double scale;
  int64_t q_row() const { return n_heads * head_dim; }     // q/out row stride
  int64_t kv_row() const { return n_kv_heads * head_dim; } // k/v row stride
};

Shape make_shape(int64_t batch, int64_t seq, int64_t n_heads,
                 int64_t n_kv_heads, int64_t head_dim, double scale,
                 const char *kernel) {
  if (batch < 0 || seq < 0 || n_heads <= 0 || n_kv_heads <= 0 ||
      head_dim <= 0 || n_heads % n_kv_heads != 0)
    throw std::runtime_error(
        std::string(kernel) + ": invalid shape (batch " +
        std::to_string(batch) + ", seq " + std::to_string(seq) + ", n_heads " +
        std::to_string(n_heads) + ", n_kv_heads " + std::to_string(n_kv_heads) +
        ", head_dim " + std::to_string(head_dim) +
        "); n_heads must be a positive multiple of n_kv_heads");
  return Shape{batch, seq, n_heads, n_kv_heads, head_dim, n_heads / n_kv_heads,
               scale};
}

// Keys j0..j0+cols-1 that query row i may attend to (j <= i).
inline int64_t causal_keys(int64_t i, int64_t j0, int64_t cols) {
  return std::clamp<int64_t>(i - j0 + 1, 0, cols);
}

// Query and key blocks share one grid, so a key block is either entirely
// visible from a query block (it lies before it) or is its diagonal block:
// square, key jj visible from query r iff jj <= r. Tile products on the
// diagonal are cut into slabs of kDiagSlab rows, and each slab multiplies
// only the keys (or queries) it can see: that skips ~3/4 of the masked half
// of the block, which at seq 256 is 15% of all the attention FLOPs.
static_assert(kBlockQ == kBlockK, "the causal block logic needs square blocks");
constexpr int64_t kDiagSlab = 16; // a multiple of every Tiles::kRows

// Rows per slab: the whole block off the diagonal.
inline int64_t slab_rows(bool diagonal, int64_t n) {
  return diagonal ? kDiagSlab : n;
}

// Starts loading `n` rows of `len` elements, `stride` apart, into cache, so
// that the misses of a whole block overlap instead of stalling the packing
// loops and tile products one after another.
template <typename T>
LLAMART_INLINE void prefetch_rows(const T *base, int64_t stride, int64_t n,
                                  int64_t len) {
  constexpr int64_t kLine = 64 / sizeof(T);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < len; c += kLine)
      __builtin_prefetch(base + r * stride + c);
}

// K^T (or V^T) block of `cols` keys of kv head g, packed head_dim x kBlockK
// so the score product reads contiguous rows of B.
template <typename T>
LLAMART_INLINE void pack_transposed(const T *src, int64_t row_stride,
                                    int64_t cols, int64_t head_dim, T *dst) {
  for (int64_t jj = 0; jj < cols; ++jj) {
    const T *row = src + jj * row_stride;
    for (int64_t c = 0; c < head_dim; ++c)
      dst[c * kBlockK + jj] = row[c];
  }
}

// Q block times scale, packed rows x head_dim.
template <typename T>
LLAMART_INLINE void pack_scaled(const T *src, int64_t row_stride, int64_t rows,
                                int64_t head_dim, T scale, T *dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const T *row = src + r * row_stride;
    T *out = dst + r * head_dim;
#pragma omp simd
    for (int64_t c = 0; c < head_dim; ++c)
      out[c] = row[c] * scale;
  }
}

// ---------------------------------------------------------------- forward --

template <typename T> struct ForwardArgs {
  const T *q, *k, *v;
  T *out, *lse;
  Shape s;
};

// One query block of one head. Scores are kept transposed, St[key][query]:
// the packed operand is then Q^T, built once per task, instead of a K^T
// block per key block, and the online softmax runs down the columns, so the
// max / exp / sum of every query row are plain vector ops across queries.
template <typename T, typename Tiles>
LLAMART_INLINE void forward_block(const ForwardArgs<T> &a, int64_t b, int64_t h,
                                  int64_t qb) {
  const Shape &s = a.s;
  const int64_t D = s.head_dim, g = h / s.heads_per_group;
  const int64_t i0 = qb * kBlockQ, rows = std::min(kBlockQ, s.seq - i0);
  const int64_t last_row = i0 + rows - 1;
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();

  ScratchLayout layout;
  layout.count<T>(D * kBlockQ);       // qt: scaled Q^T
  layout.count<T>(kBlockK * kBlockQ); // st: scores^T, then probabilities^T
  layout.count<T>(kBlockQ * D);       // o: unnormalized output
  layout.count<T>(kBlockQ);           // m: running max per query
  layout.count<T>(kBlockQ);           // m_new
  layout.count<T>(kBlockQ);           // alpha: rescale of the old terms
  layout.count<double>(kBlockQ);      // l: running sum per query
  layout.count<double>(kBlockQ);      // block_sum
  ScratchCarver carve(thread_scratch(layout.bytes()));
  T *qt = carve.take<T>(D * kBlockQ);
  T *st = carve.take<T>(kBlockK * kBlockQ);
  T *o = carve.take<T>(kBlockQ * D);
  T *m = carve.take<T>(kBlockQ);
  T *m_new = carve.take<T>(kBlockQ);
  T *alpha = carve.take<T>(kBlockQ);
  double *l = carve.take<double>(kBlockQ);
  double *block_sum = carve.take<double>(kBlockQ);

  const T scale = static_cast<T>(s.scale);
  const T *qblk = a.q + ((b * s.seq + i0) * s.n_heads + h) * D;
  const T *k_head = a.k + (b * s.seq * s.n_kv_heads + g) * D;
  const T *v_head = a.v + (b * s.seq * s.n_kv_heads + g) * D;
  prefetch_rows(qblk, s.q_row(), rows, D);
  prefetch_rows(k_head, s.kv_row(), std::min(kBlockK, rows), D);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < D; ++c)
      qt[c * kBlockQ + r] = qblk[r * s.q_row() + c] * scale;
  std::fill(o, o + rows * D, T(0));
  std::fill(m, m + rows, kNegInf);
  std::fill(l, l + rows, 0.0);

  for (int64_t j0 = 0; j0 <= last_row; j0 += kBlockK) {
    const int64_t cols = std::min(kBlockK, last_row + 1 - j0);
    const T *kblk = k_head + j0 * s.kv_row();
    const T *vblk = v_head + j0 * s.kv_row();
    const bool diagonal = j0 == i0;
    // V of this block is needed after the softmax, K of the next one after
    // that: both stream in while this block's scores are computed.
    prefetch_rows(vblk, s.kv_row(), cols, D);
    if (j0 + kBlockK <= last_row)
      prefetch_rows(kblk + kBlockK * s.kv_row(), s.kv_row(),
                    std::min(kBlockK, last_row + 1 - j0 - kBlockK), D);
    // St = K Q^T (cols x rows); on the diagonal a slab of keys starting at
    // key a0 only meets the queries r >= a0.
    for (int64_t a0 = 0; a0 < cols; a0 += slab_rows(diagonal, cols)) {
      const int64_t len = std::min(slab_rows(diagonal, cols), cols - a0);
      const int64_t first = diagonal ? a0 : 0;
      tile::gemm<T, Tiles>(len, rows - first, D, kblk + a0 * s.kv_row(),
                           s.kv_row(), 1, qt + first, kBlockQ,
                           st + a0 * kBlockQ + first, kBlockQ, false);
    }
    // Causal mask: key j0 + jj is visible from query rows i >= j0 + jj (this
    // also covers the entries the slabs skipped). Only the diagonal block
    // has masked entries, and every query has seen key 0 in the first
    // block, so m stays finite.
    for (int64_t jj = 0; jj < cols; ++jj) {
      const int64_t first_visible =
          std::min(rows, std::max<int64_t>(0, j0 + jj - i0));
      std::fill(st + jj * kBlockQ, st + jj * kBlockQ + first_visible, kNegInf);
    }
    std::copy(m, m + rows, m_new);
    for (int64_t jj = 0; jj < cols; ++jj) {
      const T *srow = st + jj * kBlockQ;
#pragma omp simd
      for (int64_t r = 0; r < rows; ++r)
        m_new[r] = srow[r] > m_new[r] ? srow[r] : m_new[r];
    }
    std::fill(block_sum, block_sum + rows, 0.0);
    for (int64_t jj = 0; jj < cols; ++jj) {
      T *srow = st + jj * kBlockQ;
#pragma omp simd
      for (int64_t r = 0; r < rows; ++r) {
        const T e = exp_fast(srow[r] - m_new[r]); // masked: exp(-inf) = 0
        srow[r] = e;
        block_sum[r] += e;
      }
    }
    // Rescale what was accumulated under the old max (exp(-inf) = 0 on the
    // first block, where o and l are still zero).
#pragma omp simd
    for (int64_t r = 0; r < rows; ++r) {
      alpha[r] = exp_fast(m[r] - m_new[r]);
      l[r] = l[r] * alpha[r] + block_sum[r];
      m[r] = m_new[r];
    }
    for (int64_t r = 0; r < rows; ++r)
      if (alpha[r] != T(1)) {
        T *orow = o + r * D;
        const T ar = alpha[r];
#pragma omp simd
        for (int64_t c = 0; c < D; ++c)
          orow[c] *= ar;
      }
    // O += P V, reading P = St^T through A's strides; on the diagonal a slab
    // of queries [a0, a0 + len) only needs the keys before a0 + len.
    for (int64_t a0 = 0; a0 < rows; a0 += slab_rows(diagonal, rows)) {
      const int64_t len = std::min(slab_rows(diagonal, rows), rows - a0);
      const int64_t keys = diagonal ? std::min(cols, a0 + len) : cols;
      tile::gemm<T, Tiles>(len, D, keys, st + a0, 1, kBlockQ, vblk, s.kv_row(),
                           o + a0 * D, D, true);
    }
  }

  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r;
    const T inv = static_cast<T>(1.0 / l[r]);
    T *dst = a.out + ((b * s.seq + i) * s.n_heads + h) * D;
    const T *orow = o + r * D;
#pragma omp simd
    for (int64_t c = 0; c < D; ++c)
      dst[c] = orow[c] * inv;
    a.lse[(b * s.n_heads + h) * s.seq + i] =
        static_cast<T>(static_cast<double>(m[r]) + std::log(l[r]));
  }
}

template <typename T>
using ForwardBlockFn = void (*)(const ForwardArgs<T> &, int64_t, int64_t,
                                int64_t);

template <typename T>
void forward_block_baseline(const ForwardArgs<T> &a, int64_t b, int64_t h,
                            int64_t qb) {
  forward_block<T, tile::BaselineTiles>(a, b, h, qb);
}
#if LLAMART_HAVE_ISA_VARIANTS
template <typename T>
LLAMART_TARGET_AVX2 void forward_block_avx2(const ForwardArgs<T> &a, int64_t b,
                                            int64_t h, int64_t qb) {
  forward_block<T, tile::Avx2Tiles>(a, b, h, qb);
}
template <typename T>
LLAMART_TARGET_AVX512 void forward_block_avx512(const ForwardArgs<T> &a,
                                                int64_t b, int64_t h,
                                                int64_t qb) {
  forward_block<T, tile::Avx512Tiles>(a, b, h, qb);
}
#endif

template <typename T> ForwardBlockFn<T> pick_forward(Isa isa) {
#if LLAMART_HAVE_ISA_VARIANTS
  if (isa == Isa::kAvx512)
    return &forward_block_avx512<T>;
  if (isa == Isa::kAvx2)
    return &forward_block_avx2<T>;
#endif
  (void)isa;
  return &forward_block_baseline<T>;
}

// --------------------------------------------------------------- backward --

template <typename T> struct BackwardArgs {
  const T *dout, *q, *k, *v, *out, *lse;
  T *dq, *dk, *dv;
  Shape s;
};

// Everything that depends on one (batch, kv head): dk and dv of that head,
// dq of its query heads.
template <typename T, typename Tiles>
LLAMART_INLINE void backward_group(const BackwardArgs<T> &a, int64_t b,
                                   int64_t g) {
  const Shape &s = a.s;
  const int64_t D = s.head_dim, S = s.seq, hpg = s.heads_per_group;
  const int64_t h_first = g * hpg;
  const T scale = static_cast<T>(s.scale);

  ScratchLayout layout;
  layout.count<T>(D * kBlockK);       // kt: K^T block
  layout.count<T>(D * kBlockK);       // vt: V^T block
  layout.count<T>(kBlockK * D);       // dk_acc
  layout.count<T>(kBlockK * D);       // dv_acc
  layout.count<T>(kBlockQ * D);       // qs: scaled queries
  layout.count<T>(kBlockQ * kBlockK); // p: probabilities
  layout.count<T>(kBlockQ * kBlockK); // ds: dP, then dS
  layout.count<T>(hpg * S);           // delta: D_i per head and row
  ScratchCarver carve(thread_scratch(layout.bytes()));
  T *kt = carve.take<T>(D * kBlockK);
  T *vt = carve.take<T>(D * kBlockK);
  T *dk_acc = carve.take<T>(kBlockK * D);
  T *dv_acc = carve.take<T>(kBlockK * D);
  T *qs = carve.take<T>(kBlockQ * D);
  T *p = carve.take<T>(kBlockQ * kBlockK);
  T *ds = carve.take<T>(kBlockQ * kBlockK);
  T *delta = carve.take<T>(hpg * S);

  // dq accumulates over key blocks in place; D_i = dout_i . out_i in double.
  for (int64_t i = 0; i < S; ++i)
    for (int64_t hh = 0; hh < hpg; ++hh) {
      const int64_t row = ((b * S + i) * s.n_heads + h_first + hh) * D;
      std::fill(a.dq + row, a.dq + row + D, T(0));
      const T *dout_i = a.dout + row, *out_i = a.out + row;
      double dot = 0.0;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < D; ++c)
        dot += static_cast<double>(dout_i[c]) * out_i[c];
      delta[hh * S + i] = static_cast<T>(dot);
    }

  for (int64_t j0 = 0; j0 < S; j0 += kBlockK) {
    const int64_t cols = std::min(kBlockK, S - j0);
    const T *kblk = a.k + ((b * S + j0) * s.n_kv_heads + g) * D;
    const T *vblk = a.v + ((b * S + j0) * s.n_kv_heads + g) * D;
    pack_transposed(kblk, s.kv_row(), cols, D, kt);
    pack_transposed(vblk, s.kv_row(), cols, D, vt);
    if (j0 + kBlockK < S) { // the next key block loads during this one
      const int64_t next = std::min(kBlockK, S - j0 - kBlockK);
      prefetch_rows(kblk + kBlockK * s.kv_row(), s.kv_row(), next, D);
      prefetch_rows(vblk + kBlockK * s.kv_row(), s.kv_row(), next, D);
    }
    std::fill(dk_acc, dk_acc + cols * D, T(0));
    std::fill(dv_acc, dv_acc + cols * D, T(0));

    for (int64_t hh = 0; hh < hpg; ++hh) {
      const int64_t h = h_first + hh;
      const T *lse_h = a.lse + (b * s.n_heads + h) * S;
      // Query blocks that see this key block: its diagonal one and later.
      for (int64_t i0 = j0; i0 < S; i0 += kBlockQ) {
        const int64_t rows = std::min(kBlockQ, S - i0);
        const int64_t qrow0 = ((b * S + i0) * s.n_heads + h) * D;
        const T *doblk = a.dout + qrow0;
        const bool diagonal = i0 == j0;
        const int64_t step = slab_rows(diagonal, rows);
        prefetch_rows(doblk, s.q_row(), rows, D);
        pack_scaled(a.q + qrow0, s.q_row(), rows, D, scale, qs);

        // S = (scale Q) K^T and dP = dO V^T; on the diagonal a slab of
        // queries [a0, a0 + len) only sees the keys before a0 + len. What is
        // skipped is masked below.
        for (int64_t a0 = 0; a0 < rows; a0 += step) {
          const int64_t len = std::min(step, rows - a0);
          const int64_t keys = diagonal ? std::min(cols, a0 + len) : cols;
          tile::gemm<T, Tiles>(len, keys, D, qs + a0 * D, D, 1, kt, kBlockK,
                               p + a0 * kBlockK, kBlockK, false);
          tile::gemm<T, Tiles>(len, keys, D, doblk + a0 * s.q_row(), s.q_row(),
                               1, vt, kBlockK, ds + a0 * kBlockK, kBlockK,
                               false);
        }
        // P = exp(S - lse), dS = P (dP - D_i); zero where masked.
        for (int64_t r = 0; r < rows; ++r) {
          T *pr = p + r * kBlockK;
          const int64_t valid = causal_keys(i0 + r, j0, cols);
          const T lse_i = lse_h[i0 + r];
          T *dsr = ds + r * kBlockK;
          const T delta_i = delta[hh * S + i0 + r];
#pragma omp simd
          for (int64_t jj = 0; jj < valid; ++jj) {
            const T pij = exp_fast(pr[jj] - lse_i);
            pr[jj] = pij;
            dsr[jj] = pij * (dsr[jj] - delta_i);
          }
          std::fill(pr + valid, pr + cols, T(0));
          std::fill(dsr + valid, dsr + cols, T(0));
        }
        // dV += P^T dO and dK += dS^T (scale Q): on the diagonal a slab of
        // keys starting at a0 only meets the queries r >= a0.
        for (int64_t a0 = 0; a0 < cols; a0 += slab_rows(diagonal, cols)) {
          const int64_t len = std::min(slab_rows(diagonal, cols), cols - a0);
          const int64_t first = diagonal ? a0 : 0;
          tile::gemm<T, Tiles>(len, D, rows - first, p + first * kBlockK + a0,
                               1, kBlockK, doblk + first * s.q_row(), s.q_row(),
                               dv_acc + a0 * D, D, true);
          tile::gemm<T, Tiles>(len, D, rows - first, ds + first * kBlockK + a0,
                               1, kBlockK, qs + first * D, D, dk_acc + a0 * D,
                               D, true);
        }
        // dQ += dS K (scaled once at the end): queries [a0, a0 + len) only
        // need the keys before a0 + len.
        for (int64_t a0 = 0; a0 < rows; a0 += step) {
          const int64_t len = std::min(step, rows - a0);
          const int64_t keys = diagonal ? std::min(cols, a0 + len) : cols;
          tile::gemm<T, Tiles>(len, D, keys, ds + a0 * kBlockK, kBlockK, 1,
                               kblk, s.kv_row(), a.dq + qrow0 + a0 * s.q_row(),
                               s.q_row(), true);
        }
      }
    }

    for (int64_t jj = 0; jj < cols; ++jj) {
      const int64_t row = ((b * S + j0 + jj) * s.n_kv_heads + g) * D;
      std::memcpy(a.dk + row, dk_acc + jj * D, D * sizeof(T));
      std::memcpy(a.dv + row, dv_acc + jj * D, D * sizeof(T));
    }
  }

  for (int64_t i = 0; i < S; ++i)
    for (int64_t hh = 0; hh < hpg; ++hh) {
      T *dst = a.dq + ((b * S + i) * s.n_heads + h_first + hh) * D;
#pragma omp simd
      for (int64_t c = 0; c < D; ++c)
        dst[c] *= scale;
    }
}

template <typename T>
using BackwardGroupFn = void (*)(const BackwardArgs<T> &, int64_t, int64_t);

template <typename T>
void backward_group_baseline(const BackwardArgs<T> &a, int64_t b, int64_t g) {
  backward_group<T, tile::BaselineTiles>(a, b, g);
}
#if LLAMART_HAVE_ISA_VARIANTS
template <typename T>
LLAMART_TARGET_AVX2 void backward_group_avx2(const BackwardArgs<T> &a,
                                             int64_t b, int64_t g) {
  backward_group<T, tile::Avx2Tiles>(a, b, g);
}
template <typename T>
LLAMART_TARGET_AVX512 void backward_group_avx512(const BackwardArgs<T> &a,
                                                 int64_t b, int64_t g) {
  backward_group<T, tile::Avx512Tiles>(a, b, g);
}
#endif

template <typename T> BackwardGroupFn<T> pick_backward(Isa isa) {
#if LLAMART_HAVE_ISA_VARIANTS
  if (isa == Isa::kAvx512)
    return &backward_group_avx512<T>;
  if (isa == Isa::kAvx2)
    return &backward_group_avx2<T>;
#endif
  (void)isa;
  return &backward_group_baseline<T>;
}

} // namespace

template <typename T>
void attention_forward(const T *q, const T *k, const T *v, T *out, T *lse,
                       int64_t batch, int64_t seq, int64_t n_heads,
                       int64_t n_kv_heads, int64_t head_dim, double scale) {
  const ForwardArgs<T> args{q,
                            k,
                            v,
                            out,
                            lse,
                            make_shape(batch, seq, n_heads, n_kv_heads,
                                       head_dim, scale, "attention_forward")};
  const ForwardBlockFn<T> run = pick_forward<T>(active_isa());
  const int64_t n_qblocks = (seq + kBlockQ - 1) / kBlockQ;
  const int64_t n_bh = batch * n_heads;
  const int64_t tasks = n_bh * n_qblocks;
  // Late query blocks see the most keys: hand them out first.
#pragma omp parallel for schedule(dynamic, 1) if (tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t qb = n_qblocks - 1 - t / n_bh;
    const int64_t bh = t % n_bh;
    run(args, bh / n_heads, bh % n_heads, qb);
  }
}

template <typename T>
void attention_backward(const T *dout, const T *q, const T *k, const T *v,
                        const T *out, const T *lse, T *dq, T *dk, T *dv,
                        int64_t batch, int64_t seq, int64_t n_heads,
                        int64_t n_kv_heads, int64_t head_dim, double scale) {
  const BackwardArgs<T> args{dout,
                             q,
                             k,
                             v,
                             out,
                             lse,
                             dq,
                             dk,
                             dv,
                             make_shape(batch, seq, n_heads, n_kv_heads,
                                        head_dim, scale, "attention_backward")};
  const BackwardGroupFn<T> run = pick_backward<T>(active_isa());
  const int64_t tasks = batch * n_kv_heads;
#pragma omp parallel for schedule(dynamic, 1) if (tasks > 1)
  for (int64_t t = 0; t < tasks; ++t)
    run(args, t / n_kv_heads, t % n_kv_heads);
}

#define LLAMART_INSTANTIATE(T)                                                 \
  template void attention_forward<T>(const T *, const T *, const T *, T *,     \
                                     T *, int64_t, int64_t, int64_t, int64_t,  \
                                     int64_t, double);                         \
  template void attention_backward<T>(                                         \
      const T *, const T *, const T *, const T *, const T *, const T *, T *,   \
      T *, T *, int64_t, int64_t, int64_t, int64_t, int64_t, double);
LLAMART_INSTANTIATE(float)
LLAMART_INSTANTIATE(double)
#undef LLAMART_INSTANTIATE

} // namespace llamart::cpu
