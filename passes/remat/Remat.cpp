//===- Remat.cpp - llama-remat: what to save, what to recompute ----------===//
//
// Only marks ops; llama-autodiff does the cloning. Keeping the decision apart
// from the mechanism lets later policies (a memory budget, a cost model) be
// new deciders without touching autodiff.
//
//===----------------------------------------------------------------------===//
#include "dialects/llama/IR/LlamaOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "passes/Passes.h"
#include "passes/remat/RematBudget.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSwitch.h"

#define DEBUG_TYPE "llama-remat"

namespace mlir::llama {
#define GEN_PASS_DEF_LLAMAREMAT
#include "passes/Passes.h.inc"
} // namespace mlir::llama

using namespace mlir;
using namespace mlir::llama;

namespace {
/// Ops whose outputs are expensive to recompute (GEMMs, attention, the
/// embedding gather, reductions over ranks) or form the residual stream that
/// every layer's backward starts from. A sequence-parallel all-gather is
/// recomputed, as in Megatron-LM: saving the gathered input would keep
/// tp times the activation that sequence parallelism exists to split.
bool savedBySelective(Operation *op) {
  return isa<MatmulOp, AttentionOp, EmbeddingOp, AddOp, CrossEntropyOp, FillOp,
             CECombineOp, shard::AllReduceOp, shard::ReduceScatterOp>(op);
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

  /// The plan a fixed policy gives, as one flag per op of @forward.
  std::vector<bool> fixedPlan(func::FuncOp forward,
                              const std::function<bool(Operation *)> &saved) {
    std::vector<bool> save;
    for (Operation *op : rematOps(forward))
      save.push_back(saved(op));
    return save;
  }

  LogicalResult runBudget(ModuleOp module, func::FuncOp forward,
                          StringRef budgetText) {
    std::optional<int64_t> budget = parseByteSize(budgetText);
    if (!budget)
      return module.emitError() << "llama-remat: cannot read the budget '"
                                << budgetText << "' (bytes, e.g. 12GiB or 500MB)";
    bool layered = false;
    forward.walk([&](Operation *op) { layered |= layerOf(op).has_value(); });
    std::vector<RematCandidate> fixed;
    std::vector<std::pair<std::string, std::function<bool(Operation *)>>> policies = {
        {"none", [](Operation *) { return true; }}, {"selective", savedBySelective}};
    if (layered)
      policies.push_back({"full", savedByFull});
    for (auto &[name, rule] : policies) {
      FailureOr<RematCandidate> c =
          measureRematPlan(module, fixedPlan(forward, rule), balance, fuse);
      if (failed(c))
        return failure();
      c->origin = name;
      fixed.push_back(std::move(*c));
    }
    RematCandidate chosen;
    if (failed(planRematForBudget(module, forward, *budget, balance, fuse,
                                  std::move(fixed), &chosen)))
      return failure();
    Builder b(module.getContext());
    forward->setAttr(kRematPlanAttr, b.getStringAttr(chosen.origin));
    forward->setAttr(kRematPlanArenaBytesAttr, b.getI64IntegerAttr(chosen.arenaBytes));
    for (bool s : chosen.save)
      ++(s ? numSaved : numRecomputed);
    return success();
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward) {
      module.emitError("llama-remat: the module has no func.func @forward");
      return signalPassFailure();
    }
    if (StringRef(policy).starts_with("budget=")) {
      if (failed(runBudget(module, forward, StringRef(policy).drop_front(7))))
        signalPassFailure();
      return;
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
                         << "' (expected none, selective, full or budget=BYTES)";
      return signalPassFailure();
    }
    MLIRContext *ctx = &getContext();
    auto save = StringAttr::get(ctx, "save");
    auto recompute = StringAttr::get(ctx, "recompute");
    forward.walk([&](Operation *op) {
      // Our ops and the collectives llama-shard inserted.
      if (op->getDialect() != ctx->getLoadedDialect<LlamaDialect>() &&
          !isa<VJPOpInterface>(op))
        return;
      bool keep = saved(op);
      op->setAttr(kRematAttr, keep ? save : recompute);
      ++(keep ? numSaved : numRecomputed);
    });
  }
};
} // namespace
