//===- Fuse.h - llama-fuse on one function ----------------------*- C++ -*-===//
#pragma once

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace mlir::llama {

/// The rewrites of llama-fuse on one function. Also used by the remat budget
/// planner, so that the arenas it measures are those the program will have.
void fuseFunction(func::FuncOp fn);

} // namespace mlir::llama
