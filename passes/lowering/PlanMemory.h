//===- PlanMemory.h - static arena planning ---------------------*- C++ -*-===//
#pragma once

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace mlir::llama {

struct MemoryPlanStats {
  int64_t arenaBytes = 0;
  int64_t liveLowerBoundBytes = 0;
};

/// Plans one function's arena as llama-plan-memory documents (annotating its
/// ops and the function) and returns the figures. Also used by the remat
/// budget planner to measure candidates, and by the pass with its
/// storage-bytes option (the CUDA target's bf16 plan) to size each buffer by
/// its storage type (`bytesOf`, given the value that owns a buffer; default:
/// its tensor type's). With
/// `collectivesInFlight` (the CUDA target, whose collectives run on their
/// own stream from their op until the first use of their result), a
/// collective's input and output stay allocated until that first use, so
/// the ops in between may run while it communicates.
FailureOr<MemoryPlanStats>
planFunctionMemory(func::FuncOp fn, int64_t alignment,
                   llvm::function_ref<int64_t(Value)> bytesOf = nullptr,
                   bool collectivesInFlight = false);

} // namespace mlir::llama
