//===- ShardVJP.cpp - VJPs of the upstream shard collectives --------------===//
//
// llama-shard partitions @forward before llama-autodiff runs, so the
// collectives it inserts must have VJPs. They are attached to the upstream
// ops as external models of our VJPOpInterface. The rules are Megatron's
// conjugate pairs, which hold for the programs llama-shard builds:
//   all_reduce(sum)  -> identity     (its result is replicated, and so is
//                                     the cotangent every rank receives)
//   all_gather       -> reduce_scatter (the gathered value feeds only
//                                     tensor-parallel consumers, whose
//                                     cotangents are partial sums)
//   reduce_scatter   -> all_gather
// A max all-reduce is not differentiable: llama-shard uses it only for the
// softmax shift, which the loss does not depend on.
//
//===----------------------------------------------------------------------===//
#include "dialects/llama/IR/LlamaOps.h"

#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/DialectRegistry.h"

using namespace mlir;

namespace {
using ForwardFn = llvm::function_ref<Value(Value)>;

struct AllReduceVJP
    : public llama::VJPOpInterface::ExternalModel<AllReduceVJP, shard::AllReduceOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &, ForwardFn,
                         ArrayRef<Value> resultGrads,
                         SmallVectorImpl<Value> &operandGrads) const {
    auto reduce = cast<shard::AllReduceOp>(op);
    if (reduce.getReduction() != shard::ReductionKind::Sum)
      return op->emitOpError("only sum all-reduces are differentiable");
    if (reduce.getInput().getType() != reduce.getResult().getType())
      return op->emitOpError("a differentiable all-reduce must keep its type");
    operandGrads.assign({resultGrads[0]});
    return success();
  }
};

struct AllGatherVJP
    : public llama::VJPOpInterface::ExternalModel<AllGatherVJP, shard::AllGatherOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b, ForwardFn,
                         ArrayRef<Value> resultGrads,
                         SmallVectorImpl<Value> &operandGrads) const {
    auto gather = cast<shard::AllGatherOp>(op);
    Value grad = shard::ReduceScatterOp::create(
        b, op->getLoc(), gather.getInput().getType(), gather.getGridAttr(),
        gather.getGridAxesAttr(), resultGrads[0],
        shard::ReductionKindAttr::get(op->getContext(), shard::ReductionKind::Sum),
        gather.getGatherAxisAttr());
    operandGrads.assign({grad});
    return success();
  }
};

struct ReduceScatterVJP
    : public llama::VJPOpInterface::ExternalModel<ReduceScatterVJP,
                                                  shard::ReduceScatterOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b, ForwardFn,
                         ArrayRef<Value> resultGrads,
                         SmallVectorImpl<Value> &operandGrads) const {
    auto scatter = cast<shard::ReduceScatterOp>(op);
    if (scatter.getReduction() != shard::ReductionKind::Sum)
      return op->emitOpError("only sum reduce-scatters are differentiable");
    Value grad = shard::AllGatherOp::create(
        b, op->getLoc(), scatter.getInput().getType(), scatter.getGridAttr(),
        scatter.getGridAxesAttr(), resultGrads[0], scatter.getScatterAxisAttr());
    operandGrads.assign({grad});
    return success();
  }
};
} // namespace

void mlir::llama::registerShardVJPModels(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, shard::ShardDialect *) {
    shard::AllReduceOp::attachInterface<AllReduceVJP>(*ctx);
    shard::AllGatherOp::attachInterface<AllGatherVJP>(*ctx);
    shard::ReduceScatterOp::attachInterface<ReduceScatterVJP>(*ctx);
  });
}
