// Register-blocked GEMM for the small tiles inside attention.
//
// Attention multiplies 64 x 64 x head_dim tiles thousands of times per step;
// a BLAS call per tile would cost more in dispatch and packing than the tile
// itself, and OpenBLAS must not be entered from inside our OpenMP threads.
// This kernel keeps an MR x (NV * width) block of C in vector registers and
// streams K: per step it loads NV vectors of one B row and broadcasts MR
// scalars of A, so each loaded element feeds MR (resp. NV * width) FMAs.
// All operands stay in L1/L2: the tiles are sized to fit there.
//
// B and C rows must be contiguous (any row stride). A is addressed by two
// strides, so the same kernel reads A or A^T (attention's P^T dO, dS^T Q).
// Compiled per ISA: callers instantiate it from a function carrying
// LLAMART_TARGET_* and choose Tiles to match that ISA's register file.
#pragma once
#include <cstdint>

#include "runtime/cpu/isa.h"
#include "runtime/cpu/vec_math.h"

namespace llamart::cpu::tile {

// Register tiling per ISA: 16 registers on SSE/AVX2 hold a 4 x 2-vector
// block of C plus operands; AVX-512's 32 registers hold 8 x 2.
struct BaselineTiles {
  static constexpr int kVecBytes = 16, kRows = 4, kVecs = 2;
};
struct Avx2Tiles {
  static constexpr int kVecBytes = 32, kRows = 4, kVecs = 2;
};
struct Avx512Tiles {
  static constexpr int kVecBytes = 64, kRows = 8, kVecs = 2;
};

// One MR x (NV vectors) block of C, K streamed.
template <typename T, int VecBytes, int MR, int NV>
LLAMART_INLINE void block(int64_t k, const T *a, int64_t a_rs, int64_t a_cs,
                          const T *b, int64_t ldb, T *c, int64_t ldc,
                          bool accumulate) {
  using V = typename Simd<T, VecBytes>::Vec;
  constexpr int W = Simd<T, VecBytes>::kWidth;
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] =
          accumulate ? *reinterpret_cast<const V *>(c + r * ldc + v * W) : V{};
  for (int64_t p = 0; p < k; ++p) {
    const T *brow = b + p * ldb;
    V bv[NV];
    for (int v = 0; v < NV; ++v)
      bv[v] = *reinterpret_cast<const V *>(brow + v * W);
    const T *acol = a + p * a_cs;
    for (int r = 0; r < MR; ++r) {
      const T ar = acol[r * a_rs];
      for (int v = 0; v < NV; ++v)
        acc[r][v] += ar * bv[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      *reinterpret_cast<V *>(c + r * ldc + v * W) = acc[r][v];
}

// Columns left over after the vector blocks (n not a multiple of the vector
// width): plain dot products, one C element at a time.
template <typename T>
LLAMART_INLINE void scalar_columns(int64_t m, int64_t j_begin, int64_t n,
                                   int64_t k, const T *a, int64_t a_rs,
                                   int64_t a_cs, const T *b, int64_t ldb, T *c,
                                   int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = j_begin; j < n; ++j) {
      T sum = accumulate ? c[i * ldc + j] : T(0);
      for (int64_t p = 0; p < k; ++p)
        sum += a[i * a_rs + p * a_cs] * b[p * ldb + j];
      c[i * ldc + j] = sum;
    }
}

// C[m x n] = (accumulate ? C : 0) + A[m x k] * B[k x n], where
// A(i, p) = a[i * a_rs + p * a_cs], B(p, j) = b[p * ldb + j],
// C(i, j) = c[i * ldc + j].
template <typename T, typename Tiles>
LLAMART_INLINE void gemm(int64_t m, int64_t n, int64_t k, const T *a,
                         int64_t a_rs, int64_t a_cs, const T *b, int64_t ldb,
                         T *c, int64_t ldc, bool accumulate) {
  constexpr int VB = Tiles::kVecBytes, MR = Tiles::kRows, NV = Tiles::kVecs;
  constexpr int W = Simd<T, VB>::kWidth;
  int64_t j = 0;
  for (; j + NV * W <= n; j += NV * W) {
    int64_t i = 0;
    for (; i + MR <= m; i += MR)
      block<T, VB, MR, NV>(k, a + i * a_rs, a_rs, a_cs, b + j, ldb,
                           c + i * ldc + j, ldc, accumulate);
    for (; i < m; ++i)
      block<T, VB, 1, NV>(k, a + i * a_rs, a_rs, a_cs, b + j, ldb,
                          c + i * ldc + j, ldc, accumulate);
  }
  for (; j + W <= n; j += W) {
    int64_t i = 0;
    for (; i + MR <= m; i += MR)
      block<T, VB, MR, 1>(k, a + i * a_rs, a_rs, a_cs, b + j, ldb,
                          c + i * ldc + j, ldc, accumulate);
    for (; i < m; ++i)
      block<T, VB, 1, 1>(k, a + i * a_rs, a_rs, a_cs, b + j, ldb,
                         c + i * ldc + j, ldc, accumulate);
  }
  if (j < n)
    scalar_columns(m, j, n, k, a, a_rs, a_cs, b, ldb, c, ldc, accumulate);
}

} // namespace llamart::cpu::tile
