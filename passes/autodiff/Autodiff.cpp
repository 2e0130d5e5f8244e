//===- Autodiff.cpp - llama-autodiff: reverse mode over VJPOpInterface ----===//
//
// @train_step = a copy of @forward followed by the reverse sweep. The sweep
// knows no op by name: every cotangent comes from the op's VJPOpInterface.
// Forward values that the backward reads are either the forward's own
// (saved) or clones built lazily right before their first backward use
// (ops marked llama.remat = "recompute"), so a recomputed value lives only
// from that use to its last one.
//
//===----------------------------------------------------------------------===//
#include "dialects/llama/IR/LlamaOps.h"
#include "passes/Passes.h"
#include "passes/autodiff/Autodiff.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/IRMapping.h"

#define DEBUG_TYPE "llama-autodiff"

namespace mlir::llama {
#define GEN_PASS_DEF_LLAMAAUTODIFF
#include "passes/Passes.h.inc"
} // namespace mlir::llama

using namespace mlir;
using namespace mlir::llama;

namespace {
bool isFloatTensor(Type t) {
  auto rt = dyn_cast<RankedTensorType>(t);
  return rt && isa<FloatType>(rt.getElementType());
}

bool markedRecompute(Operation *op) {
  auto attr = op->getAttrOfType<StringAttr>(kRematAttr);
  return attr && attr.getValue() == "recompute";
}

/// Tags every op the backward builds, so that analyses (saved bytes) and
/// lowering can tell the two halves of @train_step apart.
struct BackwardTagger : public OpBuilder::Listener {
  int64_t count = 0;
  void notifyOperationInserted(Operation *op,
                               OpBuilder::InsertPoint) override {
    op->setAttr(kBackwardAttr, UnitAttr::get(op->getContext()));
    ++count;
  }
};

struct LlamaAutodiffPass : mlir::llama::impl::LlamaAutodiffBase<LlamaAutodiffPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward) {
      module.emitError("llama-autodiff: the module has no func.func @forward");
      return signalPassFailure();
    }
    if (module.lookupSymbol("train_step")) {
      module.emitError("llama-autodiff: the module already has @train_step");
      return signalPassFailure();
    }
    TrainStepStats stats;
    if (failed(buildTrainStep(module, forward, &stats)))
      return signalPassFailure();
    numBackwardOps = stats.backwardOps;
    numRecomputedOps = stats.recomputedOps;
  }

};
} // namespace

LogicalResult mlir::llama::buildTrainStep(ModuleOp module, func::FuncOp forward,
                                          TrainStepStats *stats) {
  if (!forward.getBody().hasOneBlock())
    return forward.emitError("@forward must have a single block");
  FunctionType fwdType = forward.getFunctionType();
  if (fwdType.getNumResults() != 1 ||
      !isa<RankedTensorType>(fwdType.getResult(0)) ||
      cast<RankedTensorType>(fwdType.getResult(0)).getRank() != 0 ||
      !isFloatTensor(fwdType.getResult(0)))
    return forward.emitError(
        "@forward must return exactly one scalar float tensor (the loss)");

  Location loc = forward.getLoc();
  MLIRContext *ctx = module.getContext();
  SmallVector<Type> resultTypes{fwdType.getResult(0)};
  SmallVector<unsigned> diffArgs;
  for (auto [i, t] : llvm::enumerate(fwdType.getInputs()))
    if (isFloatTensor(t)) {
      diffArgs.push_back(i);
      resultTypes.push_back(t);
    }

  OpBuilder mb = OpBuilder::atBlockEnd(module.getBody());
  auto step = func::FuncOp::create(
      mb, loc, "train_step",
      FunctionType::get(ctx, fwdType.getInputs(), resultTypes));
  step.setAllArgAttrs(forward.getAllArgAttrs());
  for (auto [r, argIdx] : llvm::enumerate(diffArgs))
    if (auto name = forward.getArgAttrOfType<StringAttr>(argIdx, kParamNameAttr))
      step.setResultAttr(r + 1, kGradOfAttr, name);
  Block *entry = step.addEntryBlock();

  // Forward half: a copy of @forward.
  IRMapping map;
  for (auto [from, to] :
       llvm::zip(forward.getArguments(), entry->getArguments()))
    map.map(from, to);
  OpBuilder b = OpBuilder::atBlockEnd(entry);
  SmallVector<Operation *> forwardOps;
  Value loss;
  for (Operation &op : forward.getBody().front()) {
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      loss = map.lookup(ret.getOperand(0));
      continue;
    }
    forwardOps.push_back(b.clone(op, map));
  }

  // Backward half.
  BackwardTagger tagger;
  b.setListener(&tagger);
  DenseMap<Value, Value> grads;
  grads[loss] = FillOp::create(b, loc, loss.getType(), b.getF64FloatAttr(1.0));

  int64_t numRecomputed = 0;
  DenseMap<Value, Value> recomputed;
  std::function<Value(Value)> forwardValue = [&](Value v) -> Value {
    Operation *def = v.getDefiningOp();
    if (!def || !markedRecompute(def))
      return v;
    if (auto it = recomputed.find(v); it != recomputed.end())
      return it->second;
    IRMapping cloneMap;
    for (Value operand : def->getOperands())
      cloneMap.map(operand, forwardValue(operand));
    Operation *copy = b.clone(*def, cloneMap);
    copy->setAttr(kRecomputedAttr, UnitAttr::get(ctx));
    ++numRecomputed;
    for (auto [orig, again] : llvm::zip(def->getResults(), copy->getResults()))
      recomputed[orig] = again;
    return recomputed.lookup(v);
  };

  for (Operation *op : llvm::reverse(forwardOps)) {
    SmallVector<Value> resultGrads;
    bool any = false;
    for (Value r : op->getResults()) {
      Value g = grads.lookup(r);
      any |= static_cast<bool>(g);
      resultGrads.push_back(g);
    }
    if (!any)
      continue;
    auto vjp = dyn_cast<VJPOpInterface>(op);
    if (!vjp)
      return op->emitOpError(
          "is on the path from the parameters to the loss but does not "
          "implement VJPOpInterface");
    SmallVector<Value> operandGrads;
    if (failed(vjp.buildVJP(b, forwardValue, resultGrads, operandGrads)))
      return failure();
    assert(operandGrads.size() == op->getNumOperands() &&
           "a VJP must return one cotangent slot per operand");
    for (auto [operand, g] : llvm::zip(op->getOperands(), operandGrads)) {
      if (!g)
        continue;
      Value &acc = grads[operand];
      acc = acc ? AddOp::create(b, op->getLoc(), acc, g).getResult() : g;
    }
  }

  SmallVector<Value> results{loss};
  for (unsigned argIdx : diffArgs) {
    Value arg = entry->getArgument(argIdx);
    Value g = grads.lookup(arg);
    // A parameter the loss does not depend on has a zero gradient.
    if (!g)
      g = FillOp::create(b, loc, arg.getType(), b.getF64FloatAttr(0.0));
    results.push_back(g);
  }
  b.setListener(nullptr);
  func::ReturnOp::create(b, loc, results);
  if (stats) {
    stats->backwardOps = tagger.count;
    stats->recomputedOps = numRecomputed;
  }
  return success();
}
