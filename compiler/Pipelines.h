//===- Pipelines.h - pass pipelines of llama-mlir ---------------*- C++ -*-===//
#pragma once

#include <cstdint>
#include <string>

namespace mlir {
class OpPassManager;
} // namespace mlir

namespace llama {

struct TrainingPipelineOptions {
  std::string remat = "selective"; // none | selective | full
  int64_t generateBatch = 1;       // batch of the derived @logits
  int64_t dp = 1, tp = 1;          // grid of a partitioned program
  bool sequenceParallel = false;
  bool fuse = true;                // llama-fuse before the memory plan
};

/// @forward -> (partitioned for dp x tp) -> @train_step + @logits (single
/// process only) -> fused (llama-fuse) -> memory-planned: what the CPU emitter consumes. Registered for llama-opt as `llama-training-pipeline`.
void buildTrainingPipeline(mlir::OpPassManager &pm,
                           const TrainingPipelineOptions &options);

void registerPipelines();

} // namespace llama
