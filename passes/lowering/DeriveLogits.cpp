//===- DeriveLogits.cpp - llama-derive-logits: the forward for generation -===//
//
// Generation needs the logits, not the loss, and usually one sequence, not
// the training batch. Every llama op's result type follows from its operand
// types, so the forward is re-built with a new batch by re-deriving types op
// by op instead of asking the user for a second model.
//
//===----------------------------------------------------------------------===//
#include "dialects/llama/IR/LlamaOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/IRMapping.h"

#define DEBUG_TYPE "llama-derive-logits"

namespace mlir::llama {
#define GEN_PASS_DEF_LLAMADERIVELOGITS
#include "passes/Passes.h.inc"
} // namespace mlir::llama

using namespace mlir;
using namespace mlir::llama;

namespace {
RankedTensorType ranked(Value v) { return cast<RankedTensorType>(v.getType()); }

RankedTensorType withShape(RankedTensorType t, ArrayRef<int64_t> shape) {
  return RankedTensorType::get(shape, t.getElementType());
}

/// Result types of `op` once its operands have the types of `operands`.
FailureOr<SmallVector<Type>> deriveResultTypes(Operation *op,
                                               ValueRange operands) {
  auto first = [&] { return ranked(operands[0]); };
  if (isa<RMSNormOp, RopeOp, SwigluOp, AddOp>(op))
    return SmallVector<Type>{first()};
  if (auto emb = dyn_cast<EmbeddingOp>(op)) {
    SmallVector<int64_t> shape(ranked(operands[1]).getShape());
    shape.push_back(ranked(operands[0]).getDimSize(1));
    return SmallVector<Type>{withShape(ranked(emb.getResult()), shape)};
  }
  if (auto mm = dyn_cast<MatmulOp>(op)) {
    SmallVector<int64_t> shape(first().getShape().drop_back(2));
    auto old = ranked(mm.getResult()).getShape();
    shape.push_back(old[old.size() - 2]);
    shape.push_back(old.back());
    return SmallVector<Type>{withShape(ranked(mm.getResult()), shape)};
  }
  if (auto att = dyn_cast<AttentionOp>(op)) {
    auto q = first().getShape();
    return SmallVector<Type>{first(), withShape(ranked(att.getLogsumexp()),
                                                {q[0], q[2], q[1]})};
  }
  if (auto reshape = dyn_cast<ReshapeOp>(op)) {
    auto in = ranked(reshape.getInput()).getShape();
    SmallVector<int64_t> out(ranked(reshape.getResult()).getShape());
    if (in.empty() || out.empty() || in[0] != out[0]) {
      reshape.emitOpError("changes the leading (batch) dimension, so the "
                          "forward cannot be re-batched for generation");
      return failure();
    }
    out[0] = first().getDimSize(0);
    return SmallVector<Type>{withShape(ranked(reshape.getResult()), out)};
  }
  op->emitOpError("cannot be re-batched for generation");
  return failure();
}

struct LlamaDeriveLogitsPass
    : mlir::llama::impl::LlamaDeriveLogitsBase<LlamaDeriveLogitsPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward) {
      module.emitError("llama-derive-logits: the module has no func.func @forward");
      return signalPassFailure();
    }
    if (batch < 1) {
      module.emitError("llama-derive-logits: batch must be >= 1");
      return signalPassFailure();
    }
    // A partitioned program has no @logits: generation runs the single-rank
    // program (checkpoints do not depend on the grid), and a vocab-parallel
    // @logits would have to gather the logits it exists to return.
    if (module->hasAttr(kGridAttr))
      return;
    if (failed(derive(module, forward)))
      signalPassFailure();
  }

  LogicalResult derive(ModuleOp module, func::FuncOp forward) {
    CrossEntropyOp loss;
    forward.walk([&](CrossEntropyOp op) { loss = op; });
    if (!loss)
      return forward.emitError("@forward has no llama.cross_entropy, so the "
                               "logits to generate from are unknown");
    auto targets = dyn_cast<BlockArgument>(loss.getTargets());
    if (!targets)
      return loss.emitOpError("targets must be an argument of @forward");

    // @logits takes every argument of @forward but the targets; the token
    // arguments get the new batch.
    MLIRContext *ctx = module.getContext();
    SmallVector<Type> argTypes;
    SmallVector<DictionaryAttr> argAttrs;
    for (BlockArgument arg : forward.getArguments()) {
      if (arg == targets)
        continue;
      Type t = arg.getType();
      auto rt = dyn_cast<RankedTensorType>(t);
      if (!rt)
        return forward.emitError("argument ") << arg.getArgNumber() << " of @forward is "
               << t << ", not a ranked tensor, so @logits cannot take it";
      if (!isa<FloatType>(rt.getElementType())) {
        // Integer arguments are token batches: their leading dim is re-batched.
        if (rt.getRank() == 0)
          return forward.emitError("argument ") << arg.getArgNumber()
                 << " of @forward is an integer scalar; token arguments need a "
                    "leading batch dimension";
        SmallVector<int64_t> shape(rt.getShape());
        shape[0] = batch;
        t = withShape(rt, shape);
      }
      argTypes.push_back(t);
      argAttrs.push_back(forward.getArgAttrDict(arg.getArgNumber()));
    }
    Value logits = loss.getLogits();
    OpBuilder mb = OpBuilder::atBlockEnd(module.getBody());
    auto fn = func::FuncOp::create(mb, forward.getLoc(), "logits",
                                   FunctionType::get(ctx, argTypes, {}));
    Block *entry = fn.addEntryBlock();
    for (unsigned i = 0; i < argAttrs.size(); ++i)
      if (argAttrs[i])
        fn.setArgAttrs(i, argAttrs[i]);

    IRMapping map;
    unsigned next = 0;
    for (BlockArgument arg : forward.getArguments())
      if (arg != targets)
        map.map(arg, entry->getArgument(next++));

    // Only the ops the logits depend on, in program order.
    llvm::SetVector<Operation *> needed;
    SmallVector<Value> work{logits};
    while (!work.empty()) {
      Value v = work.pop_back_val();
      Operation *def = v.getDefiningOp();
      if (!def || !needed.insert(def))
        continue;
      llvm::append_range(work, def->getOperands());
    }
    OpBuilder b = OpBuilder::atBlockEnd(entry);
    for (Operation &op : forward.getBody().front()) {
      if (!needed.contains(&op))
        continue;
      SmallVector<Value> operands;
      for (Value v : op.getOperands()) {
        // @logits has no targets argument, and only @forward's top-level
        // block is copied: anything else the logits depend on cannot exist
        // in @logits.
        Value mapped = map.lookupOrNull(v);
        if (!mapped)
          return op.emitOpError(v == Value(targets)
                                    ? "uses the targets argument, so the logits depend "
                                      "on the targets and @logits cannot be derived"
                                    : "uses a value from outside @forward's body, so "
                                      "@logits cannot be derived");
        operands.push_back(mapped);
      }
      FailureOr<SmallVector<Type>> types = deriveResultTypes(&op, operands);
      if (failed(types))
        return failure();
      Operation *copy = b.clone(op, map);
      copy->removeAttr(kRematAttr);
      for (auto [r, t] : llvm::zip(copy->getResults(), *types))
        r.setType(t);
    }
    Value result = map.lookupOrNull(logits);
    if (!result)
      return loss.emitOpError("is not in the body of @forward, so @logits cannot be derived");
    func::ReturnOp::create(b, forward.getLoc(), result);
    fn.setFunctionType(FunctionType::get(ctx, argTypes, {result.getType()}));
    return success();
  }
};
} // namespace
