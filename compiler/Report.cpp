//===- Report.cpp - what llama-compile --report prints -------------------===//
#include "compiler/Report.h"

#include "dialects/llama/IR/LlamaOps.h"
#include "passes/remat/CostModel.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"

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
  while (Operation *def = v.getDefiningOp()) {
    if (!isViewOp(def))
      break;
    v = def->getOperand(0);
  }
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

/// Adds a collective's traffic to its axis: ring algorithms over n ranks.
void countCollective(Operation *op, int64_t dp, int64_t tp, MemoryReport &r) {
  auto axesOf = [](Operation *op) -> ArrayRef<int16_t> {
    if (auto a = dyn_cast<shard::AllReduceOp>(op)) return a.getGridAxes();
    if (auto a = dyn_cast<shard::AllGatherOp>(op)) return a.getGridAxes();
    return cast<shard::ReduceScatterOp>(op).getGridAxes();
  };
  ArrayRef<int16_t> axes = axesOf(op);
  if (axes.size() != 1)
    return;
  AxisComm &c = axes[0] == 0 ? r.dpComm : r.tpComm;
  double n = static_cast<double>(axes[0] == 0 ? dp : tp);
  int64_t whole = 0;
  double factor = 0;
  if (auto a = dyn_cast<shard::AllReduceOp>(op)) {
    whole = bytesOf(a.getResult());
    factor = 2 * (n - 1) / n;
  } else if (auto g = dyn_cast<shard::AllGatherOp>(op)) {
    whole = bytesOf(g.getResult());
    factor = (n - 1) / n;
  } else if (auto s = dyn_cast<shard::ReduceScatterOp>(op)) {
    whole = bytesOf(s.getInput());
    factor = (n - 1) / n;
  }
  ++c.collectives;
  c.payloadBytes += whole;
  c.sentBytes += factor * static_cast<double>(whole);
}

MemoryReport computeMemoryReport(ModuleOp module) {
  MemoryReport r;
  r.params = countParams(module);
  r.fullParams = r.params;
  int64_t elemBytes = 4;
  if (auto fn = module.lookupSymbol<func::FuncOp>("forward"))
    for (auto [i, t] : llvm::enumerate(fn.getArgumentTypes()))
      if (auto rt = dyn_cast<RankedTensorType>(t); rt && isa<FloatType>(rt.getElementType())) {
        elemBytes = rt.getElementTypeBitWidth() / 8;
        r.paramBytes += rt.getNumElements() * elemBytes;
        if (auto full = fn.getArgAttrOfType<DenseI64ArrayAttr>(i, kFullShapeAttr)) {
          int64_t n = 1;
          for (int64_t d : full.asArrayRef())
            n *= d;
          r.fullParams += n - rt.getNumElements();
        }
      }
  if (auto grid = module->getAttrOfType<DenseI64ArrayAttr>(kGridAttr);
      grid && grid.size() == 2) {
    r.gridDp = grid[0];
    r.gridTp = grid[1];
  }
  r.sequenceParallel = module->hasAttr(kSequenceParallelAttr);
  // ZeRO-1 (runtime/train): the flat local gradient, padded to a multiple of
  // dp, is reduce-scattered; each rank keeps AdamW moments for its shard and
  // all-gathers the updated parameters.
  r.optimizerShardElems = (r.params + r.gridDp - 1) / r.gridDp;
  if (r.gridDp > 1) {
    int64_t padded = r.optimizerShardElems * r.gridDp * elemBytes;
    double n = static_cast<double>(r.gridDp);
    r.zeroComm.collectives = 2;
    r.zeroComm.payloadBytes = 2 * padded;
    r.zeroComm.sentBytes = 2 * (n - 1) / n * static_cast<double>(padded);
  }
  auto step = module.lookupSymbol<func::FuncOp>("train_step");
  auto logits = module.lookupSymbol<func::FuncOp>("logits");
  if (!step)
    return r;
  r.arenaPeakBytes = getArenaBytes(step).value_or(0);
  r.liveLowerBoundBytes = intAttr(step, kLiveLowerBoundAttr);
  if (logits)
    r.logitsArenaBytes = getArenaBytes(logits).value_or(0);
  if (auto forward = module.lookupSymbol<func::FuncOp>("forward"))
    r.evalArenaBytes = getArenaBytes(forward).value_or(0);

  if (auto fwd = module.lookupSymbol<func::FuncOp>("forward"))
    if (auto plan = fwd->getAttrOfType<StringAttr>(kRematPlanAttr))
      r.rematPlan = plan.getValue().str();
  step.walk([&](Operation *op) {
    if (isa<shard::AllReduceOp, shard::AllGatherOp, shard::ReduceScatterOp>(op))
      countCollective(op, r.gridDp, r.gridTp, r);
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
    Operation *def = v.getDefiningOp();
    auto l = def->getAttrOfType<IntegerAttr>(kLayerAttr);
    if (isa<AddRMSNormOp>(def) && cast<OpResult>(v).getResultNumber() == 0)
      if (auto sumLayer = def->getAttrOfType<IntegerAttr>(kSumLayerAttr))
        l = sumLayer;
    if (l && l.getInt() == 0)
      r.activationBytesPerLayer += bytesOf(v);
  }
  return r;
}

int64_t totalTrainingBytes(const MemoryReport &r, int64_t gradAccum) {
  // Parameters, gradients, two AdamW moments (the runtime's buffers, in the
  // program's dtype), a second gradient buffer when accumulating, and the
  // training and evaluation arenas.
  // With ZeRO-1 the moments cover this rank's shard only.
  int64_t elemBytes = r.params ? r.paramBytes / r.params : 4;
  return (2 + (gradAccum > 1 ? 1 : 0)) * r.paramBytes +
         2 * r.optimizerShardElems * elemBytes + r.arenaPeakBytes +
         r.evalArenaBytes;
}

void printReport(const MemoryReport &r, llvm::raw_ostream &os) {
  const bool partitioned = r.gridDp * r.gridTp > 1;
  int64_t elemBytes = r.params ? r.paramBytes / r.params : 4;
  if (partitioned)
    os << "grid: dp=" << r.gridDp << " tp=" << r.gridTp
       << " sp=" << (r.sequenceParallel ? 1 : 0) << " (" << r.gridDp * r.gridTp
       << " ranks; figures below are per rank)\n"
       << "model-params: " << r.fullParams << "\n";
  os << "params: " << r.params << "\n"
     << "param-bytes: " << r.paramBytes << "\n"
     << "grad-bytes: " << r.paramBytes << "\n"
     << "adamw-state-bytes: " << 2 * r.optimizerShardElems * elemBytes << "\n"
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
  if (!partitioned)
    return;
  auto axis = [&](const char *name, const AxisComm &c) {
    os << "comm-" << name << "-collectives: " << c.collectives << "\n"
       << "comm-" << name << "-payload-bytes: " << c.payloadBytes << "\n"
       << "comm-" << name << "-sent-bytes: " << llvm::format("%.0f", c.sentBytes) << "\n";
  };
  axis("tp", r.tpComm);
  axis("dp", r.dpComm);
  axis("dp-zero1", r.zeroComm);
}
} // namespace llama
