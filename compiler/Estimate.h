//===- Estimate.h - step time, MFU and GPU-hours before running -*- C++ -*-===//
#pragma once

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

#include <optional>
#include <string>
#include <vector>

namespace llama {

struct GpuSpec {
  std::string name;
  double peakFlops;     // dense bf16, FLOP/s
  double bandwidth;     // HBM, bytes/s
};

/// Known GPUs (REFERENCE.md peaks; HBM bandwidth from the vendors' sheets).
const std::vector<GpuSpec> &knownGpus();
const GpuSpec *findGpu(const std::string &name);

struct TrainingEstimate {
  double flopsPerToken = 0;   // 6 N_non-embedding + 12 L H Q T (PaLM / torchtitan MFU convention)
  double nonEmbeddingParams = 0;
  int64_t tokensPerStep = 0;  // over the whole grid
  int64_t ranks = 1;          // dp x tp of a partitioned program
  double stepSeconds = 0;     // per-op roofline of the train step in bf16
  double mfu = 0;             // flopsPerToken * tokensPerStep / (stepSeconds * peak * ranks)
};

/// Needs a module after the training pipeline (@train_step). The roofline
/// takes every op at max(FLOPs / peak, bytes / bandwidth), with activations
/// and weights in bf16 (2 bytes) and AdamW on fp32 master weights and
/// moments (32 bytes of traffic per parameter): an upper bound on speed.
TrainingEstimate estimateTraining(mlir::ModuleOp module, const GpuSpec &gpu);
/// FLOPs per token alone (no GPU needed).
TrainingEstimate estimateFlops(mlir::ModuleOp module);

void printEstimate(const TrainingEstimate &e, const GpuSpec *gpu,
                   std::optional<double> tokens, std::optional<double> assumedMfu,
                   llvm::raw_ostream &os);

} // namespace llama
