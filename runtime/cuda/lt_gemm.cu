// Row-major products as cuBLASLt's column-major ones: a row-major [r, c]
// matrix is a column-major [c, r] one, so C = op(A) op(B) (row-major) is
// C^T = op(B)^T op(A)^T (column-major): cuBLASLt's first operand is our B,
// its second our A, and the output is n x m with leading dimension n.
#include "runtime/cuda/lt_gemm.h"

#include "runtime/cuda/check.h"

#include <stdexcept>
#include <string>

namespace llamart::cuda {

LtGemm::LtGemm() {
  LLAMART_CUDA_CHECK(cublasLtCreate(&handle_));
  LLAMART_CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
}

LtGemm::~LtGemm() {
  for (auto &[key, p] : plans_) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.desc);
  }
  cudaFree(workspace_);
  cublasLtDestroy(handle_);
}

namespace {
cublasLtMatrixLayout_t layout(cudaDataType_t type, int64_t rows, int64_t cols,
                              int64_t ld, int64_t batch, int64_t stride) {
  cublasLtMatrixLayout_t l = nullptr;
  LLAMART_CUDA_CHECK(cublasLtMatrixLayoutCreate(&l, type, rows, cols, ld));
  if (batch > 1) {
    int32_t count = static_cast<int32_t>(batch);
    LLAMART_CUDA_CHECK(cublasLtMatrixLayoutSetAttribute(
        l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    LLAMART_CUDA_CHECK(cublasLtMatrixLayoutSetAttribute(
        l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  return l;
}
} // namespace

const LtGemm::Plan &LtGemm::plan(const Key &key) {
  auto it = plans_.find(key);
  if (it != plans_.end())
    return it->second;
  auto [m, n, k, batch, a_stride, b_stride, ta, tb, out, in] = key;
  const cudaDataType_t operand = in == int(InType::F32) ? CUDA_R_32F : CUDA_R_16BF;
  Plan p;
  LLAMART_CUDA_CHECK(
      cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // cuBLASLt's first operand is our B, its second our A.
  cublasOperation_t op_first = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t op_second = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  LLAMART_CUDA_CHECK(cublasLtMatmulDescSetAttribute(
      p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)));
  LLAMART_CUDA_CHECK(cublasLtMatmulDescSetAttribute(
      p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)));
  // Stored shapes, column-major: our B is [n, k] (N) or [k, n] (T); our A
  // is [k, m] (N) or [m, k] (T); C is [n, m].
  p.a = tb ? layout(operand, k, n, k, batch, b_stride)
           : layout(operand, n, k, n, batch, b_stride);
  p.b = ta ? layout(operand, m, k, m, batch, a_stride)
           : layout(operand, k, m, k, batch, a_stride);
  p.c = layout(out == int(OutType::F32) ? CUDA_R_32F : CUDA_R_16BF, n, m, n,
               batch, m * n);

  cublasLtMatmulPreference_t pref = nullptr;
  LLAMART_CUDA_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t ws = kWorkspaceBytes;
  LLAMART_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      handle_, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  if (status != CUBLAS_STATUS_SUCCESS || returned == 0)
    throw std::runtime_error(
        "cuBLASLt has no algorithm for the GEMM m=" + std::to_string(m) +
        " n=" + std::to_string(n) + " k=" + std::to_string(k) + " batch=" +
        std::to_string(batch) + " (status " + std::to_string(int(status)) + ")");
  p.algo = result.algo;
  return plans_.emplace(key, p).first->second;
}

void LtGemm::matmul(cudaStream_t stream, const void *a, const void *b, void *c,
                    OutType out, int64_t batch, int64_t m, int64_t n, int64_t k,
                    bool transpose_a, bool transpose_b, bool b_broadcast,
                    bool accumulate, InType in) {
  if (in == InType::F32 && out != OutType::F32)
    throw std::runtime_error("LtGemm::matmul: fp32 operands need an fp32 C");
  if (batch < 1 || m < 1 || n < 1 || k < 1)
    throw std::runtime_error("LtGemm::matmul: empty or negative shape (batch " +
                             std::to_string(batch) + ", m " + std::to_string(m) +
                             ", n " + std::to_string(n) + ", k " +
                             std::to_string(k) + ")");
  // A shared weight times untransposed activations: the batch folds into m
  // (one large GEMM), as on the CPU.
  if (b_broadcast && !transpose_a) {
    m *= batch;
    batch = 1;
  }
  const int64_t a_stride = m * k;
  const int64_t b_stride = b_broadcast ? 0 : k * n;
  const Plan &p = plan(Key{m, n, k, batch, a_stride, b_stride, transpose_a,
                           transpose_b, int(out), int(in)});
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  LLAMART_CUDA_CHECK(cublasLtMatmul(handle_, p.desc, &alpha, b, p.a, a, p.b,
                                    &beta, c, p.c, c, p.c, &p.algo, workspace_,
                                    kWorkspaceBytes, stream));
}

} // namespace llamart::cuda
