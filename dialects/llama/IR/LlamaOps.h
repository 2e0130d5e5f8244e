//===- LlamaOps.h - ops of the llama dialect --------------------*- C++ -*-===//
#pragma once

#include "dialects/llama/IR/LlamaDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include <optional>

#include "dialects/llama/IR/LlamaInterfaces.h.inc"

#define GET_OP_CLASSES
#include "dialects/llama/IR/LlamaOps.h.inc"

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace mlir::llama {
/// Ops whose result is a view of their first operand (no storage, no work):
/// reshapes, and grad_all_reduce (an identity in the forward).
inline bool isViewOp(Operation *op) { return isa<ReshapeOp, GradAllReduceOp>(op); }

/// Attaches VJPOpInterface to the upstream shard collectives (ShardVJP.cpp).
void registerShardVJPModels(DialectRegistry &registry);

/// Discardable attribute names shared by the builder and the passes.
/// `llama.param_name` (function argument): the Hugging Face name of a parameter.
inline constexpr llvm::StringLiteral kParamNameAttr = "llama.param_name";
/// `llama.input` (function argument): "tokens" or "targets".
inline constexpr llvm::StringLiteral kInputAttr = "llama.input";
/// `llama.layer` (op): index of the transformer layer the op belongs to.
inline constexpr llvm::StringLiteral kLayerAttr = "llama.layer";
/// `llama.remat` (op): "save" or "recompute", set by llama-remat.
inline constexpr llvm::StringLiteral kRematAttr = "llama.remat";
/// `llama.backward` (op): built by llama-autodiff (unit attribute).
inline constexpr llvm::StringLiteral kBackwardAttr = "llama.backward";
/// On llama.add_rms_norm: the layer of its `sum` result when that differs
/// from the op's own llama.layer (the norm's).
inline constexpr llvm::StringLiteral kSumLayerAttr = "llama.sum_layer";
/// `llama.recomputed` (op): a forward op cloned into the backward by remat.
inline constexpr llvm::StringLiteral kRecomputedAttr = "llama.recomputed";
/// `llama.grad_of` (function result): the parameter this result is the gradient of.
inline constexpr llvm::StringLiteral kGradOfAttr = "llama.grad_of";
/// `llama.shard_dim` (function argument, i64): the dimension of a parameter
/// split over the tensor-parallel grid axis (absent: replicated).
inline constexpr llvm::StringLiteral kShardDimAttr = "llama.shard_dim";
/// `llama.full_shape` (function argument): the unpartitioned parameter shape.
inline constexpr llvm::StringLiteral kFullShapeAttr = "llama.full_shape";
/// `llama.kv_cache` (function argument): "key" or "value", the KV cache of
/// layer `llama.layer` (an i64 argument attribute), owned by the runtime.
inline constexpr llvm::StringLiteral kKvCacheAttr = "llama.kv_cache";
/// `llama.grid` (module): [dp, tp] of a partitioned program; its shard.grid
/// symbol is @grid.
inline constexpr llvm::StringLiteral kGridAttr = "llama.grid";
/// `llama.sequence_parallel` (module, unit): norms and residuals are sharded
/// along the sequence over the tensor-parallel axis.
inline constexpr llvm::StringLiteral kSequenceParallelAttr = "llama.sequence_parallel";
/// On an op of a bf16 @train_step: the indices of its results kept in fp32
/// (llama-assign-precision; the parameter gradients and their partial sums).
inline constexpr llvm::StringLiteral kFp32Attr = "llama.fp32";
/// On a data-parallel @train_step: the ZeRO-1 gradient bucket bounds, and on
/// the op after which buckets are complete, their indices
/// (llama-plan-grad-buckets).
inline constexpr llvm::StringLiteral kGradBucketsAttr = "llama.grad_buckets";
inline constexpr llvm::StringLiteral kGradsReadyAttr = "llama.grads_ready";
/// Module: the model's name, its HF config.json text, the initializer's
/// standard deviation (models/LlamaBuilder).
inline constexpr llvm::StringLiteral kModelNameAttr = "llama.model_name";
inline constexpr llvm::StringLiteral kConfigAttr = "llama.config";
inline constexpr llvm::StringLiteral kInitStdAttr = "llama.init_std";
/// @forward after llama-remat: the plan chosen ("selective", "budget", ...)
/// and the arena bytes it was chosen for.
inline constexpr llvm::StringLiteral kRematPlanAttr = "llama.remat_plan";
inline constexpr llvm::StringLiteral kRematPlanArenaBytesAttr = "llama.remat_plan_arena_bytes";
/// The memory plan (llama-plan-memory): on a function its arena size and the
/// lower bound of any plan's peak; on an op the arena offset of each result
/// (-1: not in the arena) and, where one is returned, its index among the
/// function's results (-1: not returned).
inline constexpr llvm::StringLiteral kArenaBytesAttr = "llama.arena_bytes";
inline constexpr llvm::StringLiteral kLiveLowerBoundAttr = "llama.live_lower_bound_bytes";
inline constexpr llvm::StringLiteral kOffsetAttr = "llama.offset";
inline constexpr llvm::StringLiteral kOutputAttr = "llama.output";
/// A function's planned arena bytes; nullopt before llama-plan-memory ran.
inline std::optional<int64_t> getArenaBytes(Operation *fn) {
  if (auto a = fn->getAttrOfType<IntegerAttr>(kArenaBytesAttr))
    return a.getInt();
  return std::nullopt;
}

/// The rotation of a rope op (rope, rope_grad, rope_at, rope_qk): pair i of a
/// head row turns by t * invFreq[i] at position t, and cos and sin are scaled
/// by attentionFactor. Without an inv_freq attribute (explicit false),
/// invFreq is theta^(-2i/d), computed here in double.
struct RopeFrequencies {
  SmallVector<double> invFreq;
  double theta = 0.0;
  double attentionFactor = 1.0;
  bool explicitFrequencies = false;
  /// False for plain RoPE: powers of theta, no factor.
  bool scaled() const { return explicitFrequencies || attentionFactor != 1.0; }
};
RopeFrequencies getRopeFrequencies(Operation *op);
/// Whether two rope ops rotate by the same angles.
bool sameRopeAngles(Operation *a, Operation *b);
} // namespace mlir::llama
