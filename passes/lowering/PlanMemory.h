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
/// budget planner to measure candidates.
FailureOr<MemoryPlanStats> planFunctionMemory(func::FuncOp fn, int64_t alignment);

} // namespace mlir::llama
