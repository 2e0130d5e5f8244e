//===- Estimate.cpp - step time, MFU and GPU-hours before running --------===//
#include "compiler/Estimate.h"

#include "dialects/llama/IR/LlamaOps.h"
#include "passes/remat/CostModel.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/Support/Format.h"

#include <algorithm>
#include "llvm/ADT/DenseSet.h"

using namespace mlir;
using namespace mlir::llama;

namespace llama {

const std::vector<GpuSpec> &knownGpus() {
  static const std::vector<GpuSpec> gpus = {
      {"a100-40gb", 312e12, 1.555e12}, {"a100-80gb", 312e12, 2.039e12},
      {"h100-sxm", 989e12, 3.35e12},   {"h100-pcie", 756e12, 2.0e12},
      {"h200", 989e12, 4.8e12},
  };
  return gpus;
}

const GpuSpec *findGpu(const std::string &name) {
  for (const GpuSpec &g : knownGpus())
    if (g.name == name)
      return &g;
  return nullptr;
}

TrainingEstimate estimateFlops(ModuleOp module) {
  TrainingEstimate e;
  auto forward = module.lookupSymbol<func::FuncOp>("forward");
  if (!forward)
    return e;
  // Non-embedding parameters: every float argument but the embedding table,
  // which is a gather, not a matmul (unless tied to the output projection).
  llvm::DenseSet<Value> gatherOnly;
  forward.walk([&](EmbeddingOp op) {
    Value table = op.getTable();
    bool alsoMatmul = llvm::any_of(table.getUsers(), [](Operation *u) { return isa<MatmulOp>(u); });
    if (!alsoMatmul)
      gatherOnly.insert(table);
  });
  // A partitioned program (llama-shard) is one rank's: the model's FLOPs
  // come from the full parameter shapes, all heads and the global batch.
  int64_t dp = 1, tp = 1;
  if (auto grid = module->getAttrOfType<DenseI64ArrayAttr>(kGridAttr);
      grid && grid.size() == 2) {
    dp = grid[0];
    tp = grid[1];
  }
  e.ranks = dp * tp;
  for (BlockArgument arg : forward.getArguments()) {
    auto t = cast<RankedTensorType>(arg.getType());
    if (isa<FloatType>(t.getElementType())) {
      double n = double(t.getNumElements());
      if (auto full = forward.getArgAttrOfType<DenseI64ArrayAttr>(arg.getArgNumber(),
                                                                  kFullShapeAttr)) {
        n = 1;
        for (int64_t d : full.asArrayRef())
          n *= double(d);
      }
      e.nonEmbeddingParams += gatherOnly.contains(arg) ? 0 : n;
    } else if (!e.tokensPerStep) {
      e.tokensPerStep = t.getNumElements() * dp;
    }
  }
  // 12 L H Q T: attention scores and values, forward and backward.
  double attention = 0;
  forward.walk([&](AttentionOp op) {
    attention += 12.0 * op.getNumHeads() * tp * op.getHeadDim() *
                 cast<RankedTensorType>(op.getQuery().getType()).getDimSize(1);
  });
  e.flopsPerToken = 6.0 * e.nonEmbeddingParams + attention;
  return e;
}

TrainingEstimate estimateTraining(ModuleOp module, const GpuSpec &gpu) {
  TrainingEstimate e = estimateFlops(module);
  auto step = module.lookupSymbol<func::FuncOp>("train_step");
  if (!step)
    return e;
  double seconds = 0;
  step.walk([&](Operation *op) {
    if (!op->getDialect() || op->getDialect()->getNamespace() != "llama")
      return;
    OpCost c = estimateCost(op);
    double bytes = c.bytes;
    // The IR counts in its own element type; the GPU runs activations in bf16.
    for (Type t : op->getResultTypes())
      if (auto rt = dyn_cast<RankedTensorType>(t)) {
        bytes *= 2.0 / (rt.getElementTypeBitWidth() / 8);
        break;
      }
    seconds += std::max(c.flops / gpu.peakFlops, bytes / gpu.bandwidth);
  });
  double params = 0;
  for (Type t : step.getArgumentTypes())
    if (auto rt = dyn_cast<RankedTensorType>(t); rt && isa<FloatType>(rt.getElementType()))
      params += rt.getNumElements();
  // AdamW on fp32 state (ZeRO-1: this rank's shard of its parameters).
  int64_t dp = 1;
  if (auto grid = module->getAttrOfType<DenseI64ArrayAttr>(kGridAttr); grid && grid.size() == 2)
    dp = grid[0];
  seconds += 32.0 * params / dp / gpu.bandwidth;
  // Every rank runs its program at once: the step takes one rank's time
  // (communication not modelled: see --report's comm-* lines).
  e.stepSeconds = seconds;
  e.mfu = e.flopsPerToken * e.tokensPerStep / (seconds * gpu.peakFlops * e.ranks);
  return e;
}

void printEstimate(const TrainingEstimate &e, const GpuSpec *gpu,
                   std::optional<double> tokens, std::optional<double> assumedMfu,
                   llvm::raw_ostream &os) {
  os << "non-embedding-params: " << llvm::format("%.0f", e.nonEmbeddingParams) << "\n"
     << "flops-per-token: " << llvm::format("%.6e", e.flopsPerToken) << "\n";
  if (!gpu)
    return;
  os << "gpu: " << gpu->name << " (" << llvm::format("%.0f", gpu->peakFlops / 1e12)
     << " TFLOP/s bf16, " << llvm::format("%.2f", gpu->bandwidth / 1e12) << " TB/s)\n"
     << "estimated-step-seconds: " << llvm::format("%.6f", e.stepSeconds) << "\n"
     << "estimated-tokens-per-second: "
     << llvm::format("%.0f", e.tokensPerStep / e.stepSeconds) << "\n";
  if (e.ranks > 1)
    os << "estimated-tokens-per-second-per-gpu: "
       << llvm::format("%.0f", e.tokensPerStep / e.stepSeconds / e.ranks) << "\n";
  os
     << "estimated-mfu: " << llvm::format("%.4f", e.mfu) << "\n";
  if (tokens) {
    double mfu = assumedMfu.value_or(e.mfu);
    double hours = *tokens * e.flopsPerToken / (gpu->peakFlops * mfu) / 3600.0;
    os << "gpu-hours: " << llvm::format("%.0f", hours) << " for "
       << llvm::format("%.4g", *tokens) << " tokens at MFU "
       << llvm::format("%.4f", mfu) << (assumedMfu ? " (assumed)" : " (estimated)")
       << "\n";
  }
}

} // namespace llama
