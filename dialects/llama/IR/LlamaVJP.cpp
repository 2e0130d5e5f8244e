//===- LlamaVJP.cpp - vector-Jacobian products of the llama ops ----------===//
//
// Each forward op states its own backward here; llama-autodiff only walks the
// program in reverse and sums cotangents. Forward values are fetched through
// `forwardValue` so that remat can substitute recomputed copies.
//
//===----------------------------------------------------------------------===//
#include "dialects/llama/IR/LlamaOps.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"

using namespace mlir;
using namespace mlir::llama;

namespace {
using ForwardFn = llvm::function_ref<Value(Value)>;

RankedTensorType ranked(Value v) { return cast<RankedTensorType>(v.getType()); }

/// A matmul whose result type follows from its operands (see MatmulOp docs).
Value buildMatmul(OpBuilder &b, Location loc, Value lhs, Value rhs,
                  bool transposeLhs, bool transposeRhs) {
  auto lt = ranked(lhs), rt = ranked(rhs);
  auto ls = lt.getShape(), rs = rt.getShape();
  int64_t m = transposeLhs ? ls[ls.size() - 1] : ls[ls.size() - 2];
  int64_t n = transposeRhs ? rs[rs.size() - 2] : rs[rs.size() - 1];
  SmallVector<int64_t> shape(ls.drop_back(2));
  shape.push_back(m);
  shape.push_back(n);
  auto type = RankedTensorType::get(shape, lt.getElementType());
  return MatmulOp::create(b, loc, type, lhs, rhs, transposeLhs, transposeRhs);
}

/// Collapses every leading dimension into the row dimension: [..., C] -> [R, C].
Value collapseToMatrix(OpBuilder &b, Location loc, Value v) {
  auto t = ranked(v);
  int64_t cols = t.getShape().back();
  auto type = RankedTensorType::get({t.getNumElements() / cols, cols},
                                    t.getElementType());
  return ReshapeOp::create(b, loc, type, v);
}
} // namespace

LogicalResult EmbeddingOp::buildVJP(OpBuilder &b, ForwardFn fwd,
                                    ArrayRef<Value> resultGrads,
                                    SmallVectorImpl<Value> &operandGrads) {
  Value dTable = EmbeddingGradOp::create(b, getLoc(), getTable().getType(),
                                         resultGrads[0], fwd(getIds()),
                                         getVocabShardAttr());
  operandGrads.assign({dTable, Value()});
  return success();
}

LogicalResult RMSNormOp::buildVJP(OpBuilder &b, ForwardFn fwd,
                                  ArrayRef<Value> resultGrads,
                                  SmallVectorImpl<Value> &operandGrads) {
  auto grad = RMSNormGradOp::create(
      b, getLoc(), getX().getType(), getWeight().getType(), resultGrads[0],
      fwd(getX()), fwd(getWeight()), getEpsAttr());
  operandGrads.assign({grad.getXGrad(), grad.getWeightGrad()});
  return success();
}

// C = op(A) op(B):  dop(A) = dC op(B)^T,  dop(B) = op(A)^T dC.
LogicalResult MatmulOp::buildVJP(OpBuilder &b, ForwardFn fwd,
                                 ArrayRef<Value> resultGrads,
                                 SmallVectorImpl<Value> &operandGrads) {
  Location loc = getLoc();
  Value dC = resultGrads[0];
  bool ta = getTransposeLhs(), tb = getTransposeRhs();
  Value a = fwd(getLhs()), bm = fwd(getRhs());
  Value dA = ta ? buildMatmul(b, loc, bm, dC, tb, true)
                : buildMatmul(b, loc, dC, bm, false, !tb);
  Value dB;
  if (isRhsShared()) {
    // The weight is shared by every row of every batch: fold the batch into
    // the rows so that its gradient is one GEMM reducing over all tokens.
    Value a2 = collapseToMatrix(b, loc, a);
    Value dC2 = collapseToMatrix(b, loc, dC);
    dB = tb ? buildMatmul(b, loc, dC2, a2, true, false)
            : buildMatmul(b, loc, a2, dC2, true, false);
  } else {
    dB = tb ? buildMatmul(b, loc, dC, a, true, ta)
            : buildMatmul(b, loc, a, dC, !ta, false);
  }
  operandGrads.assign({dA, dB});
  return success();
}

LogicalResult ReshapeOp::buildVJP(OpBuilder &b, ForwardFn,
                                  ArrayRef<Value> resultGrads,
                                  SmallVectorImpl<Value> &operandGrads) {
  Value dInput = ReshapeOp::create(b, getLoc(), getInput().getType(),
                                   resultGrads[0]);
  operandGrads.assign({dInput});
  return success();
}

LogicalResult RopeOp::buildVJP(OpBuilder &b, ForwardFn,
                               ArrayRef<Value> resultGrads,
                               SmallVectorImpl<Value> &operandGrads) {
  auto grad = RopeGradOp::create(b, getLoc(), getInput().getType(), resultGrads[0],
                                 getThetaAttr(), getInvFreqAttr(), getAttentionFactorAttr());
  operandGrads.assign({grad.getResult()});
  return success();
}

LogicalResult AttentionOp::buildVJP(OpBuilder &b, ForwardFn fwd,
                                    ArrayRef<Value> resultGrads,
                                    SmallVectorImpl<Value> &operandGrads) {
  if (resultGrads[1])
    return emitOpError() << "the logsumexp result is not differentiable; it "
                            "may only feed the backward";
  auto grad = AttentionGradOp::create(
      b, getLoc(), getQuery().getType(), getKey().getType(),
      getValue().getType(), resultGrads[0], fwd(getQuery()), fwd(getKey()),
      fwd(getValue()), fwd(getResult()), fwd(getLogsumexp()), getScaleAttr());
  operandGrads.assign({grad.getQueryGrad(), grad.getKeyGrad(), grad.getValueGrad()});
  return success();
}

LogicalResult SwigluOp::buildVJP(OpBuilder &b, ForwardFn fwd,
                                 ArrayRef<Value> resultGrads,
                                 SmallVectorImpl<Value> &operandGrads) {
  auto grad = SwigluGradOp::create(b, getLoc(), getType(), getType(),
                                   resultGrads[0], fwd(getGate()),
                                   fwd(getUp()));
  operandGrads.assign({grad.getGateGrad(), grad.getUpGrad()});
  return success();
}

LogicalResult AddOp::buildVJP(OpBuilder &, ForwardFn,
                              ArrayRef<Value> resultGrads,
                              SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign({resultGrads[0], resultGrads[0]});
  return success();
}

LogicalResult CrossEntropyOp::buildVJP(OpBuilder &b, ForwardFn fwd,
                                       ArrayRef<Value> resultGrads,
                                       SmallVectorImpl<Value> &operandGrads) {
  Value dLogits = CrossEntropyGradOp::create(
      b, getLoc(), getLogits().getType(), resultGrads[0], fwd(getLogits()),
      fwd(getTargets()), getIgnoreIndexAttr());
  operandGrads.assign({dLogits, Value()});
  return success();
}

LogicalResult GradAllReduceOp::buildVJP(OpBuilder &b, ForwardFn,
                                        ArrayRef<Value> resultGrads,
                                        SmallVectorImpl<Value> &operandGrads) {
  Value sum = shard::AllReduceOp::create(
      b, getLoc(), resultGrads[0].getType(), getGridAttr(), getGridAxesAttr(),
      resultGrads[0], shard::ReductionKindAttr::get(getContext(), shard::ReductionKind::Sum));
  operandGrads.assign({sum});
  return success();
}

LogicalResult CEPartialSumsOp::buildVJP(OpBuilder &b, ForwardFn fwd,
                                        ArrayRef<Value> resultGrads,
                                        SmallVectorImpl<Value> &operandGrads) {
  // No cotangent for `max`: the loss is invariant to the shift (the
  // derivative through exp(-max) and through + max in ce_combine cancel).
  Value dLogits = CEPartialSumsGradOp::create(
      b, getLoc(), getLogits().getType(), resultGrads[0], fwd(getLogits()),
      fwd(getMax()), fwd(getTargets()), getIgnoreIndexAttr(), getVocabShardAttr());
  operandGrads.assign({dLogits, Value(), Value()});
  return success();
}

LogicalResult CECombineOp::buildVJP(OpBuilder &b, ForwardFn fwd,
                                    ArrayRef<Value> resultGrads,
                                    SmallVectorImpl<Value> &operandGrads) {
  Value dSums = CECombineGradOp::create(b, getLoc(), getSums().getType(),
                                        resultGrads[0], fwd(getSums()),
                                        fwd(getTargets()), fwd(getCount()),
                                        getIgnoreIndexAttr());
  operandGrads.assign({Value(), dSums, Value(), Value()});
  return success();
}
