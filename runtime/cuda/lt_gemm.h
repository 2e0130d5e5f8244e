// GEMMs of generated CUDA programs through cuBLASLt, with the CPU runtime's
// row-major contract (runtime/cpu/kernels.h matmul): C[b] = op(A[b]) op(B[b]),
// A [m, k] ([k, m] if transpose_a), B [k, n] ([n, k] if transpose_b), B
// shared by every batch when b_broadcast. Operands are bf16, accumulation
// and scaling fp32, C bf16 or fp32; beta = 1 accumulates into C. fp32
// operands (InType::F32) give fp32 products and an fp32 C.
//
// Each distinct shape gets its descriptors and the heuristic's algorithm once
// (the first call; a program's shapes are fixed, so a step after the first
// never queries the heuristic, and CUDA Graph capture sees only the matmul
// calls). One 32 MiB workspace per instance, one instance per stream.
#pragma once

#include <cstdint>
#include <map>
#include <tuple>

#include <cublasLt.h>
#include <cuda_runtime.h>

namespace llamart::cuda {

enum class OutType { BF16, F32 };
// Operand type: bf16 (tensor cores, the training default) or fp32 (exact fp32
// products, the fp32-storage programs).
enum class InType { BF16, F32 };

class LtGemm {
public:
  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;

  LtGemm();
  ~LtGemm();
  LtGemm(const LtGemm &) = delete;
  LtGemm &operator=(const LtGemm &) = delete;

  void matmul(cudaStream_t stream, const void *a, const void *b, void *c,
              OutType out, int64_t batch, int64_t m, int64_t n, int64_t k,
              bool transpose_a, bool transpose_b, bool b_broadcast,
              bool accumulate = false, InType in = InType::BF16);

private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // (m, n, k, batch, a-stride, b-stride, transpose_a, transpose_b, out, in)
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                         bool, bool, int, int>;
  const Plan &plan(const Key &key);

  cublasLtHandle_t handle_ = nullptr;
  void *workspace_ = nullptr;
  std::map<Key, Plan> plans_;
};

} // namespace llamart::cuda
