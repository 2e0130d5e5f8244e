// Batched matmul C[b] = op(A[b]) op(B[b]) on OpenBLAS.
//
// Every GEMM of the model goes through here: the linear layers (activations
// [batch, seq, in] times a shared weight, b_broadcast) and their gradients.
// When B is shared and A is not transposed, the batch folds into M: the
// [batch * M, K] activations times one [K, N] weight is a single large GEMM,
// which OpenBLAS tiles and threads far better than `batch` small ones. In
// every other case the batch loop issues one GEMM per matrix, each threaded
// by OpenBLAS itself (calls are made from this thread only: OpenBLAS must not
// be entered concurrently from our OpenMP team).
//
// Memory traffic: whatever the GEMM needs (compute bound for the model's
// shapes); C is written with beta = 0, so it is never read.
#include "runtime/cpu/kernels.h"

#include "runtime/cpu/gemm_check.h"

#include <cblas.h>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace llamart::cpu {
namespace {

// OpenBLAS's cblas takes 32-bit ints (blasint) in the default Debian build.
blasint blas_dim(int64_t value, const char *what) {
  if (value < 0 || value > static_cast<int64_t>(INT_MAX))
    throw std::runtime_error(std::string("matmul: ") + what + " = " +
                             std::to_string(value) +
                             " is outside the range of a BLAS integer");
  return static_cast<blasint>(value);
}

template <typename T>
void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
          const T *a, const T *b, T *c) {
  const CBLAS_TRANSPOSE ta = transpose_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = transpose_b ? CblasTrans : CblasNoTrans;
  // Leading dimensions of the stored (row-major) matrices; BLAS wants >= 1.
  const int64_t lda = transpose_a ? m : k;
  const int64_t ldb = transpose_b ? k : n;
  const blasint M = blas_dim(m, "M"), N = blas_dim(n, "N"),
                K = blas_dim(k, "K");
  const blasint LDA = blas_dim(lda > 0 ? lda : 1, "lda");
  const blasint LDB = blas_dim(ldb > 0 ? ldb : 1, "ldb");
  const blasint LDC = blas_dim(n > 0 ? n : 1, "ldc");
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, a, LDA, b, LDB, 0.0f, c,
                LDC);
  else
    cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, 1.0, a, LDA, b, LDB, 0.0, c,
                LDC);
  // ABFT verification / fault injection when a training step asked for it
  // (gemm_check.h); otherwise two relaxed atomic loads.
  after_gemm(transpose_a, transpose_b, m, n, k, a, b, c);
}

} // namespace

template <typename T>
void matmul(const T *a, const T *b, T *c, int64_t batch, int64_t m, int64_t n,
            int64_t k, bool transpose_a, bool transpose_b, bool b_broadcast) {
  if (batch < 0 || m < 0 || n < 0 || k < 0)
    throw std::runtime_error("matmul: negative dimension (batch " +
                             std::to_string(batch) + ", m " +
                             std::to_string(m) + ", n " + std::to_string(n) +
                             ", k " + std::to_string(k) + ")");
  if (batch == 0 || m == 0 || n == 0)
    return;
  if (k == 0) { // an empty sum; not every BLAS handles K = 0 with beta = 0
    std::memset(c, 0, sizeof(T) * size_t(batch * m * n));
    return;
  }
  if (batch == 1 || (b_broadcast && !transpose_a)) {
    // A[b] are consecutive M x K blocks, C[b] consecutive M x N blocks: as
    // one [batch * M, K] x [K, N] product they are a single GEMM.
    gemm(transpose_a, transpose_b, batch * m, n, k, a, b, c);
    return;
  }
  const int64_t b_stride = b_broadcast ? 0 : k * n;
  for (int64_t i = 0; i < batch; ++i)
    gemm(transpose_a, transpose_b, m, n, k, a + i * m * k, b + i * b_stride,
         c + i * m * n);
}

template void matmul<float>(const float *, const float *, float *, int64_t,
                            int64_t, int64_t, int64_t, bool, bool, bool);
template void matmul<double>(const double *, const double *, double *, int64_t,
                             int64_t, int64_t, int64_t, bool, bool, bool);

} // namespace llamart::cpu
