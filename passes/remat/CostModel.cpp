//===- CostModel.cpp - what an op costs to (re)compute -------------------===//
#include "passes/remat/CostModel.h"

#include "dialects/llama/IR/LlamaOps.h"

using namespace mlir;
using namespace mlir::llama;

namespace {
double bytesOf(Value v) {
  auto t = dyn_cast<RankedTensorType>(v.getType());
  if (!t)
    return 0;
  return static_cast<double>(t.getNumElements()) *
         (t.getElementTypeBitWidth() / 8);
}
} // namespace

OpCost mlir::llama::estimateCost(Operation *op) {
  OpCost cost;
  if (isViewOp(op))
    return cost; // a view
  if (auto mm = dyn_cast<MatmulOp>(op)) {
    cost.flops = 2.0 * mm.getBatchSize() * mm.getM() * mm.getN() * mm.getK();
    return cost;
  }
  auto attentionFlops = [](Value q) {
    auto s = cast<RankedTensorType>(q.getType()).getShape(); // B, T, H, d
    // QK^T and PV, each 2 B H T^2 d, halved by the causal mask.
    return 2.0 * s[0] * s[2] * double(s[1]) * s[1] * s[3];
  };
  if (auto att = dyn_cast<AttentionOp>(op)) {
    cost.flops = attentionFlops(att.getQuery());
    return cost;
  }
  if (auto grad = dyn_cast<AttentionGradOp>(op)) {
    // dV, dP, dQ, dK plus recomputing P: 2.5x the forward (FA convention).
    cost.flops = 2.5 * attentionFlops(grad.getQuery());
    return cost;
  }
  for (Value v : op->getOperands())
    cost.bytes += bytesOf(v);
  for (Value v : op->getResults())
    cost.bytes += bytesOf(v);
  return cost;
}

double mlir::llama::costInFlops(Operation *op, double balance) {
  OpCost c = estimateCost(op);
  return c.flops + balance * c.bytes;
}
