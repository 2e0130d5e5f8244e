//===- PlanGradBuckets.h - ZeRO-1 gradient buckets --------------*- C++ -*-===//
#pragma once

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace mlir::llama {

/// The ZeRO-1 gradient buckets of a data-parallel @train_step, as
/// llama-plan-grad-buckets documents: records `llama.grad_buckets` (the
/// bounds, in elements of the flat gradient buffer) on `fn` and
/// `llama.grads_ready` (the buckets complete once it has run) on the op that
/// writes each bucket's last gradient. Needs the memory plan's
/// `llama.output`; `bucketElements` <= 0 takes Megatron's default,
/// max(40M, 1M x dp). Also run by the CUDA emitter on its copy of the module (planned for its storage types).
LogicalResult planGradBuckets(func::FuncOp fn, int64_t dp, int64_t bucketElements);

} // namespace mlir::llama
