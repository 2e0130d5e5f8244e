//===- PlanGradBuckets.cpp - llama-plan-grad-buckets: ZeRO-1 buckets ------===//
//
// Data parallelism with ZeRO-1 reduce-scatters the gradients bucket by
// bucket while the backward still runs (Megatron's overlap_grad_reduce): a
// bucket can go as soon as the op writing its last gradient has run. This
// pass cuts the buckets and finds those ops; the CUDA emitter marks them.
//
//===----------------------------------------------------------------------===//
#include "passes/lowering/PlanGradBuckets.h"

#include "dialects/llama/IR/LlamaOps.h"
#include "passes/Passes.h"

#include "mlir/IR/BuiltinOps.h"

#include <algorithm>
#include <map>
#include <vector>

#define DEBUG_TYPE "llama-plan-grad-buckets"

namespace mlir::llama {
#define GEN_PASS_DEF_LLAMAPLANGRADBUCKETS
#include "passes/Passes.h.inc"
} // namespace mlir::llama

using namespace mlir;
using namespace mlir::llama;

LogicalResult mlir::llama::planGradBuckets(func::FuncOp fn, int64_t dp,
                                           int64_t bucketElements) {
  if (dp < 2)
    return fn.emitError("llama-plan-grad-buckets: needs a data-parallel grid (dp >= 2), got dp=")
           << dp;
  const int64_t target =
      bucketElements > 0 ? bucketElements : std::max<int64_t>(40'000'000, 1'000'000 * dp);
  // The parameters in argument order and their offsets in the flat buffer.
  struct Param {
    int64_t offset, numel;
  };
  std::vector<Param> params;
  int64_t total = 0;
  for (BlockArgument arg : fn.getArguments())
    if (fn.getArgAttrOfType<StringAttr>(arg.getArgNumber(), kParamNameAttr)) {
      const int64_t n = cast<RankedTensorType>(arg.getType()).getNumElements();
      params.push_back({total, n});
      total += n;
    }
  Block &block = fn.getBody().front();
  auto ret = cast<func::ReturnOp>(block.getTerminator());
  if (ret.getNumOperands() != params.size() + 1)
    return fn.emitError("llama-plan-grad-buckets: expected the loss and one gradient per "
                        "parameter (")
           << params.size() << "), the function returns " << ret.getNumOperands();
  auto writtenInPlace = [](Value v, size_t result) {
    Operation *def = v.getDefiningOp();
    auto outs = def ? def->getAttrOfType<DenseI64ArrayAttr>(kOutputAttr) : nullptr;
    return outs && llvm::is_contained(outs.asArrayRef(), int64_t(result));
  };
  // The last op writing each parameter's gradient: its producer when the
  // memory plan writes it in place (llama.output), else the return's copy.
  std::vector<Operation *> ops;
  for (Operation &op : block)
    ops.push_back(&op);
  std::vector<int64_t> lastWrite(params.size(), -1);
  for (auto [pos, op] : llvm::enumerate(ops)) {
    if (op == ret.getOperation()) {
      for (auto [i, v] : llvm::enumerate(ret.getOperands()))
        if (i > 0 && !writtenInPlace(v, i))
          lastWrite[i - 1] = int64_t(pos);
      continue;
    }
    if (auto outs = op->getAttrOfType<DenseI64ArrayAttr>(kOutputAttr))
      for (int64_t out : outs.asArrayRef())
        if (out >= 1)
          lastWrite[size_t(out - 1)] = std::max(lastWrite[size_t(out - 1)], int64_t(pos));
  }
  // Bounds cut from the buffer's end (the backward writes the last layers'
  // gradients first) at parameter starts once a bucket holds `target`
  // elements, each a multiple of dp x 64 (every rank's piece 256-byte
  // aligned); the last is the buffer padded to a multiple of dp.
  const int64_t align = dp * 64, padded = (total + dp - 1) / dp * dp;
  std::vector<int64_t> bounds{padded};
  for (size_t p = params.size(); p-- > 0;) {
    if (bounds.back() - params[p].offset < target)
      continue;
    const int64_t cut = params[p].offset / align * align;
    if (cut > 0 && cut < bounds.back())
      bounds.push_back(cut);
  }
  bounds.push_back(0);
  std::reverse(bounds.begin(), bounds.end());
  // Bucket k is ready after the last write of any gradient it overlaps.
  std::map<int64_t, SmallVector<int64_t>> readyAfter; // position -> buckets
  for (size_t k = 0; k + 1 < bounds.size(); ++k) {
    int64_t ready = 0;
    for (size_t p = 0; p < params.size(); ++p)
      if (params[p].offset < bounds[k + 1] && bounds[k] < params[p].offset + params[p].numel)
        ready = std::max(ready, lastWrite[p]);
    readyAfter[ready].push_back(int64_t(k));
  }
  Builder b(fn.getContext());
  fn->setAttr(kGradBucketsAttr, b.getDenseI64ArrayAttr(bounds));
  for (Operation *op : ops)
    op->removeAttr(kGradsReadyAttr);
  for (auto &[pos, buckets] : readyAfter)
    ops[size_t(pos)]->setAttr(kGradsReadyAttr, b.getDenseI64ArrayAttr(buckets));
  return success();
}

namespace {

struct LlamaPlanGradBucketsPass
    : mlir::llama::impl::LlamaPlanGradBucketsBase<LlamaPlanGradBucketsPass> {
  using Base::Base;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto grid = module->getAttrOfType<DenseI64ArrayAttr>(kGridAttr);
    const int64_t dp = grid && grid.size() == 2 ? grid[0] : 1;
    auto step = module.lookupSymbol<func::FuncOp>("train_step");
    if (dp < 2 || !step || step.isExternal())
      return; // no data parallelism: no buckets
    if (failed(planGradBuckets(step, dp, bucketElements)))
      return signalPassFailure();
    numBuckets += step->getAttrOfType<DenseI64ArrayAttr>(kGradBucketsAttr).size() - 1;
  }
};

} // namespace
