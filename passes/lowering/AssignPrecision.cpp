//===- AssignPrecision.cpp - llama-assign-precision: fp32 values of bf16 --===//
//
// Mixed precision as the CUDA target runs it (bf16 storage, fp32 master
// weights): which values of @train_step stay fp32 beyond the statistics
// their ops produce by kind, and the logits that generation (@prefill,
// @decode) samples from. The parameter gradients are summed and reduced in
// fp32, so the chain that assembles each one (adds, sums, views,
// collectives) is fp32 back to the op that produces its first term. The
// decision is recorded on the IR (`llama.fp32`), where the emitter reads it.
//
//===----------------------------------------------------------------------===//
#include "dialects/llama/IR/LlamaOps.h"
#include "passes/Passes.h"
#include "passes/lowering/Collectives.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/TypeSwitch.h"

#include <map>
#include <set>

#define DEBUG_TYPE "llama-assign-precision"

namespace mlir::llama {
#define GEN_PASS_DEF_LLAMAASSIGNPRECISION
#include "passes/Passes.h.inc"
} // namespace mlir::llama

using namespace mlir;
using namespace mlir::llama;

namespace {

struct LlamaAssignPrecisionPass
    : mlir::llama::impl::LlamaAssignPrecisionBase<LlamaAssignPrecisionPass> {
  void runOnOperation() override {
    DenseSet<Value> fp32;
    // Generation's logits (the results of @prefill and @decode) are read
    // back and sampled in fp32: the GEMM producing them writes fp32 (its
    // accumulator, unrounded), and the views between keep its buffer.
    for (StringRef name : {"prefill", "decode"}) {
      auto fn = getOperation().lookupSymbol<func::FuncOp>(name);
      if (!fn || fn.isExternal())
        continue;
      fn.walk([&](func::ReturnOp ret) {
        for (Value v : ret.getOperands()) {
          while (v.getDefiningOp() && isViewOp(v.getDefiningOp())) {
            fp32.insert(v);
            v = v.getDefiningOp()->getOperand(0);
          }
          fp32.insert(v);
          if (!v.getDefiningOp() || !isa<MatmulOp>(v.getDefiningOp())) {
            ret.emitOpError("returns logits that no GEMM produces: the CUDA target reads "
                            "generation's logits back in fp32 from the lm_head GEMM");
            signalPassFailure();
          }
        }
      });
    }
    // Statistics, fp32 by their op's kind in every function: the norms'
    // rstd, the norm weight gradient, attention's logsumexp, the losses and
    // the vocab-parallel cross-entropy's row maxima, partial sums and counts,
    // a scalar fill (a loss seed).
    getOperation().walk([&](Operation *op) {
      auto results = op->getResults();
      TypeSwitch<Operation *>(op)
          .Case<RMSNormRstdOp>([&](auto) { fp32.insert(results[1]); })
          .Case<AddRMSNormOp>([&](auto) { fp32.insert(results[2]); })
          .Case<RMSNormGradRstdOp, RMSNormGradOp>([&](auto) { fp32.insert(results[1]); })
          .Case<AttentionOp>([&](auto) { fp32.insert(results[1]); })
          .Case<CrossEntropyFusedOp, CrossEntropyOp, LogitsMaxOp, CEPartialSumsOp, CountValidOp,
                CECombineOp, CECombineGradOp>([&](auto) { fp32.insert(results[0]); })
          .Case<FillOp>([&](FillOp f) {
            if (cast<RankedTensorType>(f.getResult().getType()).getRank() == 0)
              fp32.insert(results[0]);
          });
    });
    SmallVector<Value> work;
    auto step = getOperation().lookupSymbol<func::FuncOp>("train_step");
    if (step && !step.isExternal()) // the parameter gradients
      step.walk([&](func::ReturnOp ret) {
        for (auto [i, v] : llvm::enumerate(ret.getOperands()))
          if (i > 0) // #0 is the loss, fp32 by kind
            work.push_back(v);
      });
    while (!work.empty()) {
      Value v = work.pop_back_val();
      if (!isa<FloatType>(cast<RankedTensorType>(v.getType()).getElementType()) ||
          !fp32.insert(v).second)
        continue;
      Operation *def = v.getDefiningOp();
      if (!def)
        continue; // a parameter returned as its own gradient cannot happen
      if (isa<AddOp, SumOp>(def)) {
        llvm::append_range(work, def->getOperands());
      } else if (isViewOp(def) || isShardCollective(def)) {
        work.push_back(def->getOperand(0)); // the same buffer type as the input
      } else if (!isa<MatmulOp, EmbeddingGradOp, FillOp, RMSNormGradRstdOp, RMSNormGradOp>(
                     def)) {
        def->emitOpError("produces a parameter gradient, which bf16 programs keep in fp32, "
                         "and has no fp32 output yet");
        return signalPassFailure();
      } else if (isa<RMSNormGradRstdOp, RMSNormGradOp>(def) && v != def->getResult(1)) {
        def->emitOpError("its input gradient cannot be a parameter gradient");
        return signalPassFailure();
      }
    }
    // One attribute per op, its results in order (deterministic text).
    std::map<Operation *, std::set<int64_t>> byOp;
    for (Value v : fp32)
      if (Operation *def = v.getDefiningOp())
        byOp[def].insert(cast<OpResult>(v).getResultNumber());
    Builder b(&getContext());
    for (auto &[op, results] : byOp)
      op->setAttr(kFp32Attr, b.getDenseI64ArrayAttr(
                                 SmallVector<int64_t>(results.begin(), results.end())));
    numFp32Values += fp32.size();
  }
};

} // namespace
