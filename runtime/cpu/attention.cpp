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
// and writes out + lse once. Every tile (Q block, K^T block, scores, output
// accumulator) lives in a per-thread scratch of O(block * head_dim) that stays
// in L2. The backward recomputes p from the stored lse instead of keeping the
// probabilities: one extra Q K^T tile product buys O(seq) instead of
// O(seq^2) saved memory.
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

// 64 x 64 score tiles: with head_dim 128 the four float tiles of a forward
// task take 96 KiB, which stays in any L2 of the last decade.
constexpr int64_t kBlockQ = 64;
constexpr int64_t kBlockK = 64;

struct Shape {
  int64_t batch, seq, n_heads, n_kv_heads, head_dim;
  int64_t heads_per_group; // query heads sharing one kv head
  double scale;
  int64_t q_row() const { return n_heads * head_dim; }  // q/out row stride
  int64_t kv_row() const { return n_kv_heads * head_dim; } // k/v row stride
};

Shape make_shape(int64_t batch, int64_t seq, int64_t n_heads,
                 int64_t n_kv_heads, int64_t head_dim, double scale,
                 const char *kernel) {
  if (batch < 0 || seq < 0 || n_heads <= 0 || n_kv_heads <= 0 ||
      head_dim <= 0 || n_heads % n_kv_heads != 0)
    throw std::runtime_error(
        std::string(kernel) + ": invalid shape (batch " +
        std::to_string(batch) + ", seq " + std::to_string(seq) +
        ", n_heads " + std::to_string(n_heads) + ", n_kv_heads " +
        std::to_string(n_kv_heads) + ", head_dim " + std::to_string(head_dim) +
        "); n_heads must be a positive multiple of n_kv_heads");
  return Shape{batch,    seq, n_heads, n_kv_heads, head_dim,
               n_heads / n_kv_heads, scale};
}

// Keys j0..j0+cols-1 that query row i may attend to (j <= i).
inline int64_t causal_keys(int64_t i, int64_t j0, int64_t cols) {
  return std::clamp<int64_t>(i - j0 + 1, 0, cols);
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
LLAMART_INLINE void forward_block(const ForwardArgs<T> &a, int64_t b,
                                  int64_t h, int64_t qb) {
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
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < D; ++c)
      qt[c * kBlockQ + r] = qblk[r * s.q_row() + c] * scale;
  std::fill(o, o + rows * D, T(0));
  std::fill(m, m + rows, kNegInf);
  std::fill(l, l + rows, 0.0);

  for (int64_t j0 = 0; j0 <= last_row; j0 += kBlockK) {
    const int64_t cols = std::min(kBlockK, last_row + 1 - j0);
    const T *kblk = a.k + ((b * s.seq + j0) * s.n_kv_heads + g) * D;
    const T *vblk = a.v + ((b * s.seq + j0) * s.n_kv_heads + g) * D;
    // St = K Q^T (cols x rows).
    tile::gemm<T, Tiles>(cols, rows, D, kblk, s.kv_row(), 1, qt, kBlockQ, st,
                         kBlockQ, false);
    // Causal mask: key j0 + jj is visible from query rows i >= j0 + jj. Only
    // blocks that reach past the first query row have masked entries, and
    // every query has seen key 0 in the first block, so m stays finite.
    for (int64_t jj = 0; jj < cols; ++jj) {
      const int64_t first_visible = std::min(rows, std::max<int64_t>(0, j0 + jj - i0));
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
    // O += P V, reading P = St^T through A's strides.
    tile::gemm<T, Tiles>(rows, D, cols, st, 1, kBlockQ, vblk, s.kv_row(), o, D,
                         true);
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
      double dot = 0.0;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < D; ++c)
        dot += static_cast<double>(a.dout[row + c]) * a.out[row + c];
      delta[hh * S + i] = static_cast<T>(dot);
    }

  for (int64_t j0 = 0; j0 < S; j0 += kBlockK) {
    const int64_t cols = std::min(kBlockK, S - j0);
    const T *kblk = a.k + ((b * S + j0) * s.n_kv_heads + g) * D;
    const T *vblk = a.v + ((b * S + j0) * s.n_kv_heads + g) * D;
    pack_transposed(kblk, s.kv_row(), cols, D, kt);
    pack_transposed(vblk, s.kv_row(), cols, D, vt);
    std::fill(dk_acc, dk_acc + cols * D, T(0));
    std::fill(dv_acc, dv_acc + cols * D, T(0));

    for (int64_t hh = 0; hh < hpg; ++hh) {
      const int64_t h = h_first + hh;
      const T *lse_h = a.lse + (b * s.n_heads + h) * S;
      // Query blocks that reach this key block (causal: rows >= j0).
      for (int64_t i0 = j0 / kBlockQ * kBlockQ; i0 < S; i0 += kBlockQ) {
        const int64_t rows = std::min(kBlockQ, S - i0);
        const int64_t qrow0 = ((b * S + i0) * s.n_heads + h) * D;
        const T *doblk = a.dout + qrow0;
        pack_scaled(a.q + qrow0, s.q_row(), rows, D, scale, qs);

        tile::gemm<T, Tiles>(rows, cols, D, qs, D, 1, kt, kBlockK, p, kBlockK,
                             false);
        for (int64_t r = 0; r < rows; ++r) {
          T *pr = p + r * kBlockK;
          const int64_t valid = causal_keys(i0 + r, j0, cols);
          const T lse_i = lse_h[i0 + r];
#pragma omp simd
          for (int64_t jj = 0; jj < valid; ++jj)
            pr[jj] = exp_fast(pr[jj] - lse_i);
          std::fill(pr + valid, pr + cols, T(0));
        }
        // dP = dO V^T, then dS = P (dP - D_i) (masked entries: p = 0).
        tile::gemm<T, Tiles>(rows, cols, D, doblk, s.q_row(), 1, vt, kBlockK,
                             ds, kBlockK, false);
        for (int64_t r = 0; r < rows; ++r) {
          T *dsr = ds + r * kBlockK;
          const T *pr = p + r * kBlockK;
          const T delta_i = delta[hh * S + i0 + r];
#pragma omp simd
          for (int64_t jj = 0; jj < cols; ++jj)
            dsr[jj] = pr[jj] * (dsr[jj] - delta_i);
        }
        // dV += P^T dO;  dK += dS^T (scale Q);  dQ += dS K (scaled at the end).
        tile::gemm<T, Tiles>(cols, D, rows, p, 1, kBlockK, doblk, s.q_row(),
                             dv_acc, D, true);
        tile::gemm<T, Tiles>(cols, D, rows, ds, 1, kBlockK, qs, D, dk_acc, D,
                             true);
        tile::gemm<T, Tiles>(rows, D, cols, ds, kBlockK, 1, kblk, s.kv_row(),
                             a.dq + qrow0, s.q_row(), true);
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
  const ForwardArgs<T> args{
      q,   k,  v, out, lse, make_shape(batch, seq, n_heads, n_kv_heads,
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
  const BackwardArgs<T> args{
      dout, q,  k,  v,  out, lse,
      dq,   dk, dv, make_shape(batch, seq, n_heads, n_kv_heads, head_dim, scale,
                               "attention_backward")};
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
