//===- ScheduleCollectives.cpp - llama-schedule-collectives ---------------===//
//
// The CUDA runtime starts a collective at its op, on a communication stream,
// and waits for it just before the first op that needs its result. This
// pass gives those waits something to hide: each collective starts as soon
// as its input exists, and the work that does not depend on it moves under
// it. The order is the same on every rank, so collectives still match up.
//
//===----------------------------------------------------------------------===//
#include "dialects/llama/IR/LlamaOps.h"
#include "passes/Passes.h"
#include "passes/lowering/Collectives.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Verifier.h"

#define DEBUG_TYPE "llama-schedule-collectives"

namespace mlir::llama {
#define GEN_PASS_DEF_LLAMASCHEDULECOLLECTIVES
#include "passes/Passes.h.inc"
} // namespace mlir::llama

using namespace mlir;
using namespace mlir::llama;

namespace {

struct LlamaScheduleCollectivesPass
    : mlir::llama::impl::LlamaScheduleCollectivesBase<LlamaScheduleCollectivesPass> {
  void runOnOperation() override {
    for (func::FuncOp fn : getOperation().getOps<func::FuncOp>())
      if (!fn.isExternal() && failed(schedule(fn)))
        return signalPassFailure();
  }

  LogicalResult schedule(func::FuncOp fn) {
    Block &block = fn.getBody().front();
    SmallVector<Operation *> collectives;
    for (Operation &op : block)
      if (isShardCollective(&op))
        collectives.push_back(&op);
    if (collectives.empty())
      return success();
    // Each collective right after the op producing its input.
    for (Operation *c : collectives) {
      Operation *def = c->getOperand(0).getDefiningOp();
      if (def ? c->getPrevNode() != def : c != &block.front())
        ++numHoisted;
      if (def)
        c->moveAfter(def);
      else
        c->moveBefore(&block.front());
    }
    // Then the ops between two collectives that the second does not depend
    // on move after it, in their order: it starts as soon as its input is
    // ready and they run under it. Moved ops are not moved again past the
    // next collective, which would keep their inputs alive to the end.
    Operation *windowStart = &block.front();
    for (Operation *c : collectives) {
      if (c->isBeforeInBlock(windowStart))
        continue; // hoisted above ops already moved
      // What c needs, and what any collective hoisted into the window needs
      // (it stays where it is, so its inputs must too).
      DenseSet<Operation *> needed;
      SmallVector<Operation *> work = {c};
      for (Operation *op = windowStart; op != c; op = op->getNextNode())
        if (isShardCollective(op))
          work.push_back(op);
      while (!work.empty()) {
        Operation *op = work.pop_back_val();
        for (Value v : op->getOperands())
          if (Operation *def = v.getDefiningOp();
              def && !def->isBeforeInBlock(windowStart) && needed.insert(def).second)
            work.push_back(def);
      }
      SmallVector<Operation *> independent;
      for (Operation *op = windowStart; op != c; op = op->getNextNode())
        if (!needed.contains(op) && !isShardCollective(op))
          independent.push_back(op);
      Operation *last = c;
      for (Operation *op : independent) {
        op->moveAfter(last);
        last = op;
        ++numMovedUnder;
      }
      windowStart = last->getNextNode();
      if (!windowStart)
        break;
    }
    return verify(fn); // every value still defined before its uses
  }
};

} // namespace
