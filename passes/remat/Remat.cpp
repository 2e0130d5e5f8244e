//===- Remat.cpp - llama-remat: what to save, what to recompute ----------===//
//
// Only marks ops; llama-autodiff does the cloning. Keeping the decision apart
// from the mechanism lets later policies (a memory budget, a cost model) be
// new deciders without touching autodiff.
//
//===----------------------------------------------------------------------===//
#include "dialects/llama/IR/LlamaOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#define DEBUG_TYPE "llama-remat"

namespace mlir::llama {
#define GEN_PASS_DEF_LLAMAREMAT
#include "passes/Passes.h.inc"
} // namespace mlir::llama

using namespace mlir;
using namespace mlir::llama;

namespace {
/// Ops whose outputs are expensive to recompute (GEMMs, attention, the
/// embedding gather) or form the residual stream that every layer's
/// backward starts from.
bool savedBySelective(Operation *op) {
  return isa<MatmulOp, AttentionOp, EmbeddingOp, AddOp, CrossEntropyOp,
             FillOp>(op);
}

std::optional<int64_t> layerOf(Operation *op) {
  if (auto attr = op->getAttrOfType<IntegerAttr>(kLayerAttr))
    return attr.getInt();
  return std::nullopt;
}

/// `full`: a layer op is saved only when one of its results leaves the layer.
bool savedByFull(Operation *op) {
  std::optional<int64_t> layer = layerOf(op);
  if (!layer)
    return savedBySelective(op);
  for (Value result : op->getResults())
    for (Operation *user : result.getUsers())
      if (layerOf(user) != layer)
        return true;
  return false;
}

struct LlamaRematPass : mlir::llama::impl::LlamaRematBase<LlamaRematPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward) {
      module.emitError("llama-remat: the module has no func.func @forward");
      return signalPassFailure();
    }
    std::function<bool(Operation *)> saved;
    if (policy == "none") {
      saved = [](Operation *) { return true; };
    } else if (policy == "selective") {
      saved = savedBySelective;
    } else if (policy == "full") {
      bool tagged = false;
      forward.walk([&](Operation *op) { tagged |= layerOf(op).has_value(); });
      if (!tagged) {
        forward.emitError("llama-remat: policy 'full' needs the transformer "
                          "layers marked with 'llama.layer' attributes on "
                          "their ops (the model builder adds them)");
        return signalPassFailure();
      }
      saved = savedByFull;
    } else {
      module.emitError() << "llama-remat: unknown policy '" << policy
                         << "' (expected none, selective or full)";
      return signalPassFailure();
    }
    MLIRContext *ctx = &getContext();
    auto save = StringAttr::get(ctx, "save");
    auto recompute = StringAttr::get(ctx, "recompute");
    forward.walk([&](Operation *op) {
      if (op->getDialect() != ctx->getLoadedDialect<LlamaDialect>())
        return;
      bool keep = saved(op);
      op->setAttr(kRematAttr, keep ? save : recompute);
      ++(keep ? numSaved : numRecomputed);
    });
  }
};
} // namespace
