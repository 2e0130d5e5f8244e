//===- Collectives.h - the shard collectives our lowering knows -*- C++ -*-===//
#pragma once

#include "mlir/Dialect/Shard/IR/ShardOps.h"

namespace mlir::llama {

/// The upstream `shard` collectives llama-shard emits and the runtimes
/// implement (the CUDA target runs them on a communication stream).
inline bool isShardCollective(Operation *op) {
  return isa<shard::AllReduceOp, shard::AllGatherOp, shard::ReduceScatterOp>(op);
}

} // namespace mlir::llama
