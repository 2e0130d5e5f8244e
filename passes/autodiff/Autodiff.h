//===- Autodiff.h - reverse mode over VJPOpInterface ------------*- C++ -*-===//
#pragma once

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

namespace mlir::llama {

struct TrainStepStats {
  int64_t backwardOps = 0;
  int64_t recomputedOps = 0;
};

/// Adds `func.func @train_step` (loss and the gradient of every float
/// argument) to `module`, derived from `forward` as llama-autodiff documents.
/// Also used by remat planners to see what a backward would read.
LogicalResult buildTrainStep(ModuleOp module, func::FuncOp forward,
                             TrainStepStats *stats = nullptr);

} // namespace mlir::llama
