//===- Fuse.cpp - llama-fuse: memory-bound chains into single kernels ----===//
//
// After autodiff a train step is GEMMs and attention separated by
// memory-bound ops that each read and write a whole activation: a residual
// add and then the norm of its result, a norm backward and then the add that
// accumulates its gradient, cross-entropy and then its gradient over the same
// logits. Each rewrite here replaces such a chain with one op that the
// targets lower to one kernel (one pass over memory). Rewrites are local to
// a block and only move an op to a place where all its operands are already
// defined and before all uses of its results, so the program's order (and the
// memory plan's liveness) stays valid without a scheduler.
//
// Every rewrite is optional: a chain that does not match exactly (different
// eps or theta, a non-constant loss seed, an intermediate with other uses, an
// operand defined too late) is left unfused; lit tests hold both lists.
//
//===----------------------------------------------------------------------===//
#include "dialects/llama/IR/LlamaOps.h"
#include "passes/fusion/Fuse.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#define DEBUG_TYPE "llama-fuse"

namespace mlir::llama {
#define GEN_PASS_DEF_LLAMAFUSE
#include "passes/Passes.h.inc"
} // namespace mlir::llama

using namespace mlir;
using namespace mlir::llama;

namespace {

/// `v` is available at `op`: an argument of its block or defined before it.
bool availableAt(Value v, Operation *op) {
  if (auto arg = dyn_cast<BlockArgument>(v))
    return arg.getOwner() == op->getBlock();
  Operation *def = v.getDefiningOp();
  return def->getBlock() == op->getBlock() && def->isBeforeInBlock(op);
}

/// Every use of `v` is at or after `op` (in `op`'s block).
bool allUsesAtOrAfter(Value v, Operation *op) {
  for (Operation *user : v.getUsers())
    if (user->getBlock() != op->getBlock() ||
        (user != op && user->isBeforeInBlock(op)))
      return false;
  return true;
}

/// The layer/backward/recomputed tags of the ops a fused op replaces (the
/// report counts recomputed FLOPs and saved bytes by them).
void copyTags(Operation *from, Operation *to) {
  for (StringRef name : {StringRef(kLayerAttr), StringRef(kBackwardAttr),
                         StringRef(kRecomputedAttr)})
    if (Attribute a = from->getAttr(name); a && !to->hasAttr(name))
      to->setAttr(name, a);
}

/// Both ops run in the same phase: forward, backward, or recomputation in
/// the backward. Fusing across phases would move a recomputation into the
/// forward (keeping its result alive across the step, undoing the remat
/// plan) or forward work into the backward.
bool samePhase(Operation *a, Operation *b) {
  return a->hasAttr(kBackwardAttr) == b->hasAttr(kBackwardAttr) &&
         a->hasAttr(kRecomputedAttr) == b->hasAttr(kRecomputedAttr);
}

bool sameEps(FloatAttr a, FloatAttr b) {
  return a.getValueAsDouble() == b.getValueAsDouble();
}

struct Fuser {
  int64_t numCrossEntropy = 0, numAddNorm = 0, numNormGrad = 0,
          numNormGradAccumulate = 0, numRope = 0, numSum = 0;

  void run(Block &block) {
    fuseCrossEntropy(block);
    fuseAddNorm(block);
    fuseNormGrad(block);
    fuseRope<RopeOp>(block, /*inverse=*/false);
    fuseRope<RopeGradOp>(block, /*inverse=*/true);
    fuseSums(block);
  }

  /// cross_entropy(L, t) with cross_entropy_grad(fill c, L, t) ->
  /// cross_entropy_fused(L, t) {grad_scale = c} at the forward's place.
  void fuseCrossEntropy(Block &block) {
    for (auto ce : llvm::make_early_inc_range(block.getOps<CrossEntropyOp>())) {
      CrossEntropyGradOp grad;
      for (Operation *user : ce.getLogits().getUsers()) {
        auto g = dyn_cast<CrossEntropyGradOp>(user);
        if (g && g->getBlock() == &block && g.getTargets() == ce.getTargets() &&
            g.getIgnoreIndex() == ce.getIgnoreIndex() && ce->isBeforeInBlock(g) &&
            g.getGrad().getDefiningOp<FillOp>()) {
          grad = g;
          break;
        }
      }
      if (!grad)
        continue;
      OpBuilder b(ce);
      auto fill = grad.getGrad().getDefiningOp<FillOp>();
      auto fused = CrossEntropyFusedOp::create(
          b, ce.getLoc(), ce.getResult().getType(), grad.getResult().getType(),
          ce.getLogits(), ce.getTargets(), fill.getValueAttr(),
          ce.getIgnoreIndexAttr());
      copyTags(ce, fused);
      ce.getResult().replaceAllUsesWith(fused.getLoss());
      grad.getResult().replaceAllUsesWith(fused.getLogitsGrad());
      grad.erase();
      ce.erase();
      if (fill->use_empty())
        fill.erase();
      ++numCrossEntropy;
    }
  }

  /// add(a, b) whose result an rms_norm reads -> add_rms_norm at the add.
  /// Then norms whose input has an rms_norm_grad in the block keep rstd.
  void fuseAddNorm(Block &block) {
    for (auto norm : llvm::make_early_inc_range(block.getOps<RMSNormOp>())) {
      auto add = norm.getX().getDefiningOp<AddOp>();
      if (!add || add->getBlock() != &block || !samePhase(add, norm) ||
          !availableAt(norm.getWeight(), add))
        continue;
      OpBuilder b(add);
      Type rowType = rstdType(norm.getX());
      auto fused = AddRMSNormOp::create(b, add.getLoc(), add.getType(),
                                        norm.getType(), rowType, add.getLhs(),
                                        add.getRhs(), norm.getWeight(),
                                        norm.getEpsAttr());
      copyTags(norm, fused);
      // The residual stream belongs to the layer whose output it is (the
      // report attributes saved bytes per layer).
      if (Attribute layer = add->getAttr(kLayerAttr);
          layer && layer != fused->getAttr(kLayerAttr))
        fused->setAttr(kSumLayerAttr, layer);
      add.getResult().replaceAllUsesWith(fused.getSum());
      norm.getResult().replaceAllUsesWith(fused.getResult());
      norm.erase();
      add.erase();
      ++numAddNorm;
    }
    for (auto norm : llvm::make_early_inc_range(block.getOps<RMSNormOp>())) {
      bool hasBackward = llvm::any_of(norm.getX().getUsers(), [&](Operation *u) {
        auto g = dyn_cast<RMSNormGradOp>(u);
        return g && g.getWeight() == norm.getWeight() &&
               sameEps(g.getEpsAttr(), norm.getEpsAttr());
      });
      if (!hasBackward)
        continue;
      OpBuilder b(norm);
      auto fused = RMSNormRstdOp::create(b, norm.getLoc(), norm.getType(),
                                         rstdType(norm.getX()), norm.getX(),
                                         norm.getWeight(), norm.getEpsAttr());
      copyTags(norm, fused);
      norm.getResult().replaceAllUsesWith(fused.getResult());
      norm.erase();
    }
  }

  static Type rstdType(Value x) {
    auto t = cast<RankedTensorType>(x.getType());
    return RankedTensorType::get(t.getShape().drop_back(), t.getElementType());
  }

  /// The rstd of `x` normalized by `weight` with `eps`, computed before
  /// `at`: the latest such norm (the shortest lifetime for the statistic).
  static Value findRstd(Value x, Value weight, FloatAttr eps, Operation *at) {
    Value best;
    Operation *bestOp = nullptr;
    auto consider = [&](Operation *op, Value rstd) {
      if (op->getBlock() == at->getBlock() && op->isBeforeInBlock(at) &&
          (!bestOp || bestOp->isBeforeInBlock(op))) {
        best = rstd;
        bestOp = op;
      }
    };
    if (auto fused = x.getDefiningOp<AddRMSNormOp>())
      if (fused.getSum() == x && fused.getWeight() == weight &&
          sameEps(fused.getEpsAttr(), eps))
        consider(fused, fused.getRstd());
    for (Operation *user : x.getUsers())
      if (auto n = dyn_cast<RMSNormRstdOp>(user))
        if (n.getWeight() == weight && sameEps(n.getEpsAttr(), eps))
          consider(n, n.getRstd());
    return best;
  }

  /// rms_norm_grad -> rms_norm_grad_rstd; a following add(dx, acc) whose
  /// only input from here is dx folds in as `accumulate`.
  void fuseNormGrad(Block &block) {
    for (auto grad : llvm::make_early_inc_range(block.getOps<RMSNormGradOp>())) {
      Value rstd = findRstd(grad.getX(), grad.getWeight(), grad.getEpsAttr(), grad);
      if (!rstd)
        continue;
      // The accumulation: dx's single use is an add in this block.
      AddOp acc;
      Value other;
      Operation *place = grad;
      if (grad.getXGrad().hasOneUse()) {
        acc = dyn_cast<AddOp>(*grad.getXGrad().getUsers().begin());
        if (acc && acc->getBlock() == &block && samePhase(acc, grad)) {
          other = acc.getLhs() == grad.getXGrad() ? acc.getRhs() : acc.getLhs();
          if (other == grad.getXGrad())
            acc = nullptr; // dx + dx: not an accumulation
          else if (!availableAt(other, grad)) {
            // Computed between the two: fuse at the add instead, if the
            // weight gradient is not needed before it.
            if (allUsesAtOrAfter(grad.getWeightGrad(), acc))
              place = acc;
            else
              acc = nullptr;
          }
        } else {
          acc = nullptr;
        }
      }
      OpBuilder b(place);
      auto fused = RMSNormGradRstdOp::create(
          b, grad.getLoc(), grad.getXGrad().getType(),
          grad.getWeightGrad().getType(), grad.getGrad(), grad.getX(),
          grad.getWeight(), rstd, acc ? other : Value(), grad.getEpsAttr());
      copyTags(grad, fused);
      grad.getWeightGrad().replaceAllUsesWith(fused.getWeightGrad());
      if (acc) {
        acc.getResult().replaceAllUsesWith(fused.getXGrad());
        acc.erase();
        ++numNormGradAccumulate;
      } else {
        grad.getXGrad().replaceAllUsesWith(fused.getXGrad());
      }
      grad.erase();
      ++numNormGrad;
    }
  }

  /// Pairs rope ops of one attention (the first later rope of the same layer
  /// with the same angles and batch/seq/head_dim that can share a place with
  /// it). A query has more (or as many) heads as its key; the pair is
  /// ordered so.
  template <typename RopeT> void fuseRope(Block &block, bool inverse) {
    SmallVector<RopeT> ropes(block.getOps<RopeT>());
    DenseSet<Operation *> used;
    for (size_t i = 0; i < ropes.size(); ++i) {
      if (used.contains(ropes[i]))
        continue;
      for (size_t j = i + 1; j < ropes.size(); ++j) {
        RopeT first = ropes[i], second = ropes[j];
        if (used.contains(second))
          continue;
        if (!sameRopeAngles(first, second))
          continue;
        auto a = cast<RankedTensorType>(first->getOperand(0).getType());
        auto c = cast<RankedTensorType>(second->getOperand(0).getType());
        if (a.getDimSize(0) != c.getDimSize(0) || a.getDimSize(1) != c.getDimSize(1) ||
            a.getDimSize(3) != c.getDimSize(3) ||
            first->getAttr(kLayerAttr) != second->getAttr(kLayerAttr) ||
            !samePhase(first, second))
          continue;
        // At the first rope if the second's input is ready there, else at
        // the second if nothing reads the first's result before it.
        Operation *place = first;
        if (!availableAt(second->getOperand(0), first)) {
          if (!allUsesAtOrAfter(first->getResult(0), second))
            continue;
          place = second;
        }
        used.insert(first);
        used.insert(second);
        RopeT q = first, k = second;
        if (a.getDimSize(2) < c.getDimSize(2))
          std::swap(q, k);
        OpBuilder b(place);
        auto fused = RopeQKOp::create(
            b, first.getLoc(), q->getResult(0).getType(), k->getResult(0).getType(),
            q->getOperand(0), k->getOperand(0), first.getThetaAttr(),
            inverse ? b.getUnitAttr() : UnitAttr(), first.getInvFreqAttr(),
            first.getAttentionFactorAttr());
        copyTags(first, fused);
        q->getResult(0).replaceAllUsesWith(fused.getQueryResult());
        k->getResult(0).replaceAllUsesWith(fused.getKeyResult());
        q->erase();
        k->erase();
        ++numRope;
        break;
      }
    }
  }

  /// add(add(a, b), c) where the inner add has no other use -> sum(a, b, c)
  /// at the outer add; repeated, so chains of any length become one sum.
  void fuseSums(Block &block) {
    auto terms = [](Operation *op) -> SmallVector<Value> {
      if (auto s = dyn_cast<SumOp>(op))
        return SmallVector<Value>(s.getInputs());
      auto a = cast<AddOp>(op);
      return {a.getLhs(), a.getRhs()};
    };
    bool changed = true;
    while (changed) {
      changed = false;
      for (Operation &op : llvm::make_early_inc_range(block)) {
        if (!isa<AddOp, SumOp>(op))
          continue;
        SmallVector<Value> inputs;
        SmallVector<Operation *> absorbed;
        for (Value v : terms(&op)) {
          Operation *def = v.getDefiningOp();
          if (def && isa<AddOp, SumOp>(def) && def->getBlock() == &block &&
              v.hasOneUse() && samePhase(def, &op) &&
              !llvm::is_contained(absorbed, def)) {
            llvm::append_range(inputs, terms(def));
            absorbed.push_back(def);
          } else {
            inputs.push_back(v);
          }
        }
        if (absorbed.empty())
          continue;
        OpBuilder b(&op);
        auto sum = SumOp::create(b, op.getLoc(), op.getResult(0).getType(), inputs);
        copyTags(&op, sum);
        op.getResult(0).replaceAllUsesWith(sum.getResult());
        op.erase();
        for (Operation *def : absorbed) {
          def->erase();
          ++numSum;
        }
        changed = true;
      }
    }
  }
};

struct LlamaFusePass : public mlir::llama::impl::LlamaFuseBase<LlamaFusePass> {
  using Base::Base;

  void runOnOperation() override {
    Fuser fuser;
    for (auto fn : getOperation().getOps<func::FuncOp>())
      if (!fn.isExternal() && fn.getBody().hasOneBlock())
        fuser.run(fn.getBody().front());
    numCrossEntropy += fuser.numCrossEntropy;
    numAddNorm += fuser.numAddNorm;
    numNormGrad += fuser.numNormGrad;
    numNormGradAccumulate += fuser.numNormGradAccumulate;
    numRope += fuser.numRope;
    numSum += fuser.numSum;
  }
};

} // namespace

void mlir::llama::fuseFunction(func::FuncOp fn) {
  if (!fn.isExternal() && fn.getBody().hasOneBlock())
    Fuser().run(fn.getBody().front());
}
