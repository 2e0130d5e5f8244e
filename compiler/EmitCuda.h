//===- EmitCuda.h - CUDA kernels from the fused llama ops -------*- C++ -*-===//
#pragma once

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <string>
#include <vector>

namespace llama {

/// Storage type of activations and weights in the CUDA kernels.
/// Statistics (rstd, loss) and norm-weight gradients stay fp32; arithmetic
/// is fp32 throughout.
enum class CudaStorage { BF16, F32 };
/// "bf16" / "f32", as --cuda-activations spells them.
inline const char *storageName(CudaStorage s) { return s == CudaStorage::F32 ? "f32" : "bf16"; }
/// Bytes of one stored activation.
inline int storageBytes(CudaStorage s) { return s == CudaStorage::F32 ? 4 : 2; }

struct CudaEmitOptions {
  CudaStorage activations = CudaStorage::BF16;
  /// Also emit @forward's host function and `llama_cuda_open_device`, the
  /// device session of a training binary (runtime/cuda/session.cu), for
  /// linking with the CPU source emitted with `cudaDevice` set.
  bool session = false;
  /// Dp grids: the target size of a ZeRO-1 gradient bucket in elements (0:
  /// Megatron's default, max(40M, 1M x dp)). The train step starts each
  /// bucket's reduce-scatter as soon as the backward has written it.
  int64_t gradBucketElements = 0;
};

/// CUDA C++ for the memory-bound ops of every function of a fused program
/// (after llama-fuse): one kernel per op specialized to its shapes and
/// attributes (block sizes chosen here), and a launcher per op with one
/// signature, `void NAME(void *const *buffers, void *workspace, cudaStream_t)`
/// (buffers: the op's operands then its results). A table `llama_cuda_ops`
/// lists them in program order with the op name, the element type of each
/// buffer ('a' activation type, 'f' fp32, 'i' int32) and the workspace bytes.
/// GEMMs (cuBLASLt, runtime/cuda/lt_gemm.h) and views have no launcher;
/// collectives of partitioned programs are calls into
/// runtime/cuda/collectives.h from the host functions. The text is deterministic.
/// With -DLLAMA_CUDA_EMULATE the same source compiles as C++ and runs on the
/// CPU (runtime/cuda/emulate.h).
struct CudaPlanFigures {
  /// The arenas of @train_step and @forward as the device binary allocates
  /// them (bf16 storage: llama-plan-memory{storage-bytes=2}), and the
  /// kernels' workspace.
  int64_t trainArenaBytes = 0, evalArenaBytes = 0, workspaceBytes = 0;
  /// The largest M, N or K of the train step's GEMMs (the ABFT scratch).
  int64_t gemmMaxDim = 0;
  /// Partitioned programs: the collectives of both host functions, how many
  /// of them overlap compute (the wait is placed after at least one kernel
  /// or GEMM) and how many kernels and GEMMs run under them in all; the
  /// staging bytes of gathers/scatters along inner dimensions.
  int64_t collectives = 0, overlappedCollectives = 0, overlappedOps = 0,
          stagingBytes = 0;
  /// Dp grids: the gradient buckets' bounds (ProgramInfo::grad_bucket_bounds,
  /// elements of the flat local buffer padded to a multiple of dp), the
  /// train step's kernels and GEMMs, and how many of them run after the
  /// first bucket is ready (the backward its reduce-scatters overlap).
  std::vector<int64_t> gradBucketBounds;
  int64_t trainComputeOps = 0, opsAfterFirstBucket = 0;
  /// The train step's kernels and GEMMs before its wait for the last
  /// bucket's parameter all-gather (dp grids).
  int64_t opsBeforeLastGather = 0;
  /// Generation on the device (@prefill and @decode): their arenas, the KV
  /// cache's elements (storage type), gen_batch rows of prefill chunks of
  /// `genChunk` tokens over `vocab` logits. genChunk 0: no generator.
  int64_t prefillArenaBytes = 0, decodeArenaBytes = 0, kvCacheElements = 0;
  int64_t genRows = 0, genChunk = 0, vocab = 0;
};
mlir::LogicalResult emitCudaKernels(mlir::ModuleOp module, llvm::raw_ostream &os,
                                    const CudaEmitOptions &options,
                                    CudaPlanFigures *figures = nullptr);

} // namespace llama
