//===- Report.cpp - what llama-compile --report prints -------------------===//
#include "compiler/Report.h"

#include "dialects/llama/IR/LlamaOps.h"
#include "passes/remat/CostModel.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

#include <set>

#include "llvm/Support/Format.h"

using namespace mlir;
using namespace mlir::llama;

namespace {
int64_t bytesOf(Value v) {
  auto t = cast<RankedTensorType>(v.getType());
  return t.getNumElements() * (t.getElementTypeBitWidth() / 8);
}
Value storageRoot(Value v) {
  while (auto reshape = v.getDefiningOp<ReshapeOp>())
    v = reshape.getInput();
  return v;
}
int64_t intAttr(Operation *op, StringRef name) {
  auto a = op->getAttrOfType<IntegerAttr>(name);
  return a ? a.getInt() : 0;
}
} // namespace

namespace llama {
int64_t countParams(ModuleOp module) {
  auto fn = module.lookupSymbol<func::FuncOp>("forward");
  int64_t n = 0;
  if (fn)
    for (Type t : fn.getArgumentTypes())
      if (auto rt = dyn_cast<RankedTensorType>(t); rt && isa<FloatType>(rt.getElementType()))
        n += rt.getNumElements();
  return n;
}

MemoryReport computeMemoryReport(ModuleOp module) {
  MemoryReport r;
  r.params = countParams(module);
  if (auto fn = module.lookupSymbol<func::FuncOp>("forward"))
    for (Type t : fn.getArgumentTypes())
      if (auto rt = dyn_cast<RankedTensorType>(t); rt && isa<FloatType>(rt.getElementType()))
        r.paramBytes += rt.getNumElements() * (rt.getElementTypeBitWidth() / 8);
  auto step = module.lookupSymbol<func::FuncOp>("train_step");
  auto logits = module.lookupSymbol<func::FuncOp>("logits");
  if (!step)
    return r;
  r.arenaPeakBytes = intAttr(step, "llama.arena_bytes");
  r.liveLowerBoundBytes = intAttr(step, "llama.live_lower_bound_bytes");
  if (logits)
    r.logitsArenaBytes = intAttr(logits, "llama.arena_bytes");
  if (auto forward = module.lookupSymbol<func::FuncOp>("forward"))
    r.evalArenaBytes = intAttr(forward, "llama.arena_bytes");

  if (auto fwd = module.lookupSymbol<func::FuncOp>("forward"))
    if (auto plan = fwd->getAttrOfType<StringAttr>("llama.remat_plan"))
      r.rematPlan = plan.getValue().str();
  step.walk([&](Operation *op) {
    if (!op->getDialect() || op->getDialect()->getNamespace() != "llama")
      return;
    double c = costInFlops(op);
    r.stepFlops += c;
    if (op->hasAttr(kRecomputedAttr))
      r.recomputeFlops += c;
  });

  std::set<int64_t> layers;
  llvm::SetVector<Value> saved;
  step.walk([&](Operation *op) {
    if (auto l = op->getAttrOfType<IntegerAttr>(kLayerAttr);
        l && !op->hasAttr(kBackwardAttr))
      layers.insert(l.getInt());
    if (!op->hasAttr(kBackwardAttr))
      return;
    for (Value operand : op->getOperands()) {
      Value root = storageRoot(operand);
      Operation *def = root.getDefiningOp();
      if (def && !def->hasAttr(kBackwardAttr))
        saved.insert(root);
    }
  });
  r.numLayers = layers.size();
  for (Value v : saved) {
    r.savedActivationBytes += bytesOf(v);
    auto l = v.getDefiningOp()->getAttrOfType<IntegerAttr>(kLayerAttr);
    if (l && l.getInt() == 0)
      r.activationBytesPerLayer += bytesOf(v);
  }
  return r;
}

int64_t totalTrainingBytes(const MemoryReport &r, int64_t gradAccum) {
  // Parameters, gradients, two AdamW moments (the runtime's buffers, in the
  // program's dtype), a second gradient buffer when accumulating, and the
  // training and evaluation arenas.
  return (4 + (gradAccum > 1 ? 1 : 0)) * r.paramBytes + r.arenaPeakBytes +
         r.evalArenaBytes;
}

void printReport(const MemoryReport &r, llvm::raw_ostream &os) {
  os << "params: " << r.params << "\n"
     << "param-bytes: " << r.paramBytes << "\n"
     << "grad-bytes: " << r.paramBytes << "\n"
     << "adamw-state-bytes: " << 2 * r.paramBytes << "\n"
     << "layers: " << r.numLayers << "\n"
     << "activation-bytes-per-layer: " << r.activationBytesPerLayer << "\n"
     << "saved-activation-bytes: " << r.savedActivationBytes << "\n"
     << "arena-peak-bytes: " << r.arenaPeakBytes << "\n"
     << "arena-live-lower-bound-bytes: " << r.liveLowerBoundBytes << "\n"
     << "logits-arena-bytes: " << r.logitsArenaBytes << "\n"
     << "eval-arena-bytes: " << r.evalArenaBytes << "\n"
     << "step-flops: " << llvm::format("%.6e", r.stepFlops) << "\n"
     << "recompute-flops: " << llvm::format("%.6e", r.recomputeFlops) << "\n";
  if (!r.rematPlan.empty())
    os << "remat-plan: " << r.rematPlan << "\n";
  os << "total-train-bytes: " << totalTrainingBytes(r, 1) << "\n";
}
} // namespace llama
