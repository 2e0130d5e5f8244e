//===- CostModel.h - what an op costs to (re)compute ------------*- C++ -*-===//
//
// GEMMs and attention are costed by FLOPs, memory-bound ops by the bytes
// they read and write, converted to FLOP-equivalents with a machine balance
// (FLOP per byte of memory bandwidth). Used by the remat budget planner and
// by --report.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "mlir/IR/Operation.h"

namespace mlir::llama {

struct OpCost {
  double flops = 0; // arithmetic of GEMMs and attention
  double bytes = 0; // traffic of memory-bound ops (reads + writes)
};

/// The default machine balance: H100 SXM bf16 dense peak over HBM3 bandwidth
/// is ~989e12 / 3.35e12 ~ 295; CPUs sit near 10. 100 keeps GEMMs dominant and
/// still ranks memory-bound ops among themselves.
inline constexpr double kDefaultBalance = 100.0;

OpCost estimateCost(Operation *op);

/// FLOPs + balance * bytes.
double costInFlops(Operation *op, double balance = kDefaultBalance);

} // namespace mlir::llama
