//===- LlamaOps.cpp - verifiers and helpers of the llama ops -------------===//
//
// Verifiers check the shape relations that ODS cannot express; each message
// names the operand and the expected and actual shapes, because the IR is a
// user-facing input (hand-written models go through these checks).
//
//===----------------------------------------------------------------------===//
#include "dialects/llama/IR/LlamaOps.h"

#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/STLExtras.h"

#include <cmath>

using namespace mlir;
using namespace mlir::llama;

namespace {
RankedTensorType ranked(Value v) {
  return cast<RankedTensorType>(v.getType());
}

std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (auto [i, d] : llvm::enumerate(shape)) {
    if (i)
      s += "x";
    s += std::to_string(d);
  }
  return s + "]";
}

LogicalResult expectShape(Operation *op, StringRef what, Value v,
                          ArrayRef<int64_t> expected) {
  auto actual = ranked(v).getShape();
  if (actual == expected)
    return success();
  return op->emitOpError() << what << " must have shape " << shapeStr(expected)
                           << ", got " << shapeStr(actual);
}

LogicalResult expectSameElementType(Operation *op, ValueRange values) {
  Type first;
  for (Value v : values) {
    auto t = dyn_cast<RankedTensorType>(v.getType());
    if (!t || !isa<FloatType>(t.getElementType()))
      continue;
    if (!first)
      first = t.getElementType();
    else if (t.getElementType() != first)
      return op->emitOpError()
             << "mixes element types " << first << " and "
             << t.getElementType() << "; all float operands and results must agree";
  }
  return success();
}

LogicalResult expectStatic(Operation *op) {
  for (Type t : llvm::concat<const Type>(op->getOperandTypes(),
                                         op->getResultTypes()))
    if (auto rt = dyn_cast<RankedTensorType>(t); rt && !rt.hasStaticShape())
      return op->emitOpError() << "needs static shapes, got " << rt;
  return success();
}

LogicalResult verifyCommon(Operation *op) {
  if (failed(expectStatic(op)))
    return failure();
  SmallVector<Value> all(op->getOperands());
  llvm::append_range(all, op->getResults());
  return expectSameElementType(op, all);
}

SmallVector<int64_t> withLast(ArrayRef<int64_t> shape, int64_t last) {
  SmallVector<int64_t> s(shape);
  s.push_back(last);
  return s;
}
} // namespace

//===----------------------------------------------------------------------===//

/// `vocab_shard = [axis, vocab]`: the local rows must divide the vocabulary.
static LogicalResult verifyVocabShard(Operation *op,
                                      std::optional<ArrayRef<int64_t>> shard,
                                      int64_t localRows) {
  if (!shard)
    return success();
  int64_t axis = (*shard)[0], vocab = (*shard)[1];
  if (axis < 0)
    return op->emitOpError() << "vocab_shard axis must be >= 0, got " << axis;
  if (localRows < 1 || vocab < localRows || vocab % localRows != 0)
    return op->emitOpError() << "vocab_shard: " << localRows
                             << " local vocabulary rows do not divide the vocabulary of "
                             << vocab;
  return success();
}

LogicalResult EmbeddingOp::verify() {
  if (failed(verifyCommon(*this)))
    return failure();
  auto table = ranked(getTable());
  if (table.getRank() != 2)
    return emitOpError() << "table must be [vocab, dim], got rank "
                         << table.getRank();
  if (failed(verifyVocabShard(*this, getVocabShard(), table.getDimSize(0))))
    return failure();
  return expectShape(*this, "result", getResult(),
                     withLast(ranked(getIds()).getShape(), table.getDimSize(1)));
}

LogicalResult EmbeddingGradOp::verify() {
  if (failed(verifyCommon(*this)))
    return failure();
  auto result = ranked(getResult());
  if (result.getRank() != 2)
    return emitOpError() << "result must be [vocab, dim], got rank "
                         << result.getRank();
  if (failed(verifyVocabShard(*this, getVocabShard(), result.getDimSize(0))))
    return failure();
  return expectShape(*this, "grad", getGrad(),
                     withLast(ranked(getIds()).getShape(), result.getDimSize(1)));
}

static LogicalResult verifyNorm(Operation *op, Value x, Value weight,
                                double eps) {
  if (failed(verifyCommon(op)))
    return failure();
  auto xt = ranked(x);
  if (xt.getRank() < 1)
    return op->emitOpError() << "x must have rank >= 1";
  if (!(eps > 0.0))
    return op->emitOpError() << "eps must be positive, got " << eps;
  return expectShape(op, "weight", weight, {xt.getShape().back()});
}

LogicalResult RMSNormOp::verify() {
  if (failed(verifyNorm(*this, getX(), getWeight(), getEps().convertToDouble())))
    return failure();
  return expectShape(*this, "result", getResult(), ranked(getX()).getShape());
}

LogicalResult RMSNormGradOp::verify() {
  if (failed(verifyNorm(*this, getX(), getWeight(), getEps().convertToDouble())))
    return failure();
  auto xs = ranked(getX()).getShape();
  if (failed(expectShape(*this, "grad", getGrad(), xs)) ||
      failed(expectShape(*this, "x_grad", getXGrad(), xs)))
    return failure();
  return expectShape(*this, "weight_grad", getWeightGrad(),
                     ranked(getWeight()).getShape());
}

//===----------------------------------------------------------------------===//

bool MatmulOp::isRhsShared() {
  return ranked(getRhs()).getRank() == 2 && ranked(getLhs()).getRank() > 2;
}

int64_t MatmulOp::getBatchSize() {
  auto s = ranked(getLhs()).getShape();
  int64_t b = 1;
  for (int64_t d : s.drop_back(2))
    b *= d;
  return b;
}

int64_t MatmulOp::getM() {
  auto s = ranked(getLhs()).getShape();
  return getTransposeLhs() ? s[s.size() - 1] : s[s.size() - 2];
}

int64_t MatmulOp::getK() {
  auto s = ranked(getLhs()).getShape();
  return getTransposeLhs() ? s[s.size() - 2] : s[s.size() - 1];
}

int64_t MatmulOp::getN() {
  auto s = ranked(getRhs()).getShape();
  return getTransposeRhs() ? s[s.size() - 2] : s[s.size() - 1];
}

LogicalResult MatmulOp::verify() {
  if (failed(verifyCommon(*this)))
    return failure();
  auto lhs = ranked(getLhs()), rhs = ranked(getRhs());
  if (lhs.getRank() < 2 || rhs.getRank() < 2)
    return emitOpError() << "operands must have rank >= 2, got ranks "
                         << lhs.getRank() << " and " << rhs.getRank();
  if (rhs.getRank() != 2 && rhs.getRank() != lhs.getRank())
    return emitOpError() << "rhs must be a matrix or have the rank of lhs ("
                         << lhs.getRank() << "), got rank " << rhs.getRank();
  if (rhs.getRank() == lhs.getRank() &&
      lhs.getShape().drop_back(2) != rhs.getShape().drop_back(2))
    return emitOpError() << "batch dimensions differ: lhs "
                         << shapeStr(lhs.getShape()) << ", rhs "
                         << shapeStr(rhs.getShape());
  if (isRhsShared() && getTransposeLhs())
    return emitOpError() << "transpose_lhs is not allowed with a shared (rank-2) rhs";
  auto rs = rhs.getShape();
  int64_t rhsK = getTransposeRhs() ? rs[rs.size() - 1] : rs[rs.size() - 2];
  if (rhsK != getK())
    return emitOpError() << "contraction sizes differ: lhs gives K = " << getK()
                         << ", rhs gives K = " << rhsK;
  SmallVector<int64_t> expected(lhs.getShape().drop_back(2));
  expected.push_back(getM());
  expected.push_back(getN());
  return expectShape(*this, "result", getResult(), expected);
}

LogicalResult ReshapeOp::verify() {
  if (failed(verifyCommon(*this)))
    return failure();
  auto in = ranked(getInput()), out = ranked(getResult());
  if (in.getNumElements() != out.getNumElements())
    return emitOpError() << "element counts differ: " << shapeStr(in.getShape())
                         << " has " << in.getNumElements() << ", "
                         << shapeStr(out.getShape()) << " has "
                         << out.getNumElements();
  return success();
}

//===----------------------------------------------------------------------===//

// The rope ops' attribute names (ODS defines them per op; these serve the
// helpers that treat the four alike).
static constexpr llvm::StringLiteral kThetaName = "theta";
static constexpr llvm::StringLiteral kInvFreqName = "inv_freq";
static constexpr llvm::StringLiteral kAttentionFactorName = "attention_factor";

static LogicalResult verifyRope(Operation *op, Value in, Value out,
                                double theta) {
  if (failed(verifyCommon(op)))
    return failure();
  auto t = ranked(in);
  if (t.getRank() != 4)
    return op->emitOpError()
           << "input must be [batch, seq, heads, head_dim], got rank "
           << t.getRank();
  if (t.getDimSize(3) % 2 != 0)
    return op->emitOpError() << "head_dim must be even, got " << t.getDimSize(3);
  if (!(theta > 0.0))
    return op->emitOpError() << "theta must be positive, got " << theta;
  if (auto f = op->getAttrOfType<DenseF64ArrayAttr>(kInvFreqName)) {
    if (f.size() != t.getDimSize(3) / 2)
      return op->emitOpError() << "inv_freq has " << f.size()
                               << " frequencies, expected head_dim / 2 = "
                               << t.getDimSize(3) / 2;
    for (double v : f.asArrayRef())
      if (!(std::isfinite(v) && v > 0.0))
        return op->emitOpError() << "inv_freq must be finite and positive, got " << v;
  }
  if (auto a = op->getAttrOfType<FloatAttr>(kAttentionFactorName)) {
    double v = a.getValueAsDouble();
    if (!(std::isfinite(v) && v > 0.0))
      return op->emitOpError() << "attention_factor must be finite and positive, got " << v;
  }
  return expectShape(op, "result", out, t.getShape());
}

RopeFrequencies mlir::llama::getRopeFrequencies(Operation *op) {
  RopeFrequencies r;
  r.theta = op->getAttrOfType<FloatAttr>(kThetaName).getValueAsDouble();
  if (auto f = op->getAttrOfType<DenseF64ArrayAttr>(kInvFreqName)) {
    r.invFreq.assign(f.asArrayRef().begin(), f.asArrayRef().end());
    r.explicitFrequencies = true;
  } else {
    const int64_t d = ranked(op->getOperand(0)).getDimSize(3);
    for (int64_t i = 0; i < d / 2; ++i)
      r.invFreq.push_back(std::pow(r.theta, -2.0 * double(i) / double(d)));
  }
  if (auto a = op->getAttrOfType<FloatAttr>(kAttentionFactorName))
    r.attentionFactor = a.getValueAsDouble();
  return r;
}

bool mlir::llama::sameRopeAngles(Operation *a, Operation *b) {
  for (StringRef name : {kThetaName, kInvFreqName, kAttentionFactorName})
    if (a->getAttr(name) != b->getAttr(name))
      return false;
  return true;
}

LogicalResult RopeOp::verify() {
  return verifyRope(*this, getInput(), getResult(),
                    getTheta().convertToDouble());
}

LogicalResult RopeGradOp::verify() {
  return verifyRope(*this, getGrad(), getResult(),
                    getTheta().convertToDouble());
}

//===----------------------------------------------------------------------===//

int64_t AttentionOp::getNumHeads() { return ranked(getQuery()).getDimSize(2); }
int64_t AttentionOp::getNumKvHeads() { return ranked(getKey()).getDimSize(2); }
int64_t AttentionOp::getHeadDim() { return ranked(getQuery()).getDimSize(3); }

static LogicalResult verifyAttentionOperands(Operation *op, Value q, Value k,
                                             Value v, double scale) {
  if (failed(verifyCommon(op)))
    return failure();
  auto qt = ranked(q), kt = ranked(k);
  if (qt.getRank() != 4)
    return op->emitOpError()
           << "query must be [batch, seq, n_heads, head_dim], got rank "
           << qt.getRank();
  if (kt.getRank() != 4)
    return op->emitOpError()
           << "key must be [batch, seq, n_kv_heads, head_dim], got rank "
           << kt.getRank();
  int64_t heads = qt.getDimSize(2), kvHeads = kt.getDimSize(2);
  if (failed(expectShape(op, "key", k,
                         {qt.getDimSize(0), qt.getDimSize(1), kvHeads,
                          qt.getDimSize(3)})) ||
      failed(expectShape(op, "value", v, kt.getShape())))
    return failure();
  if (heads % kvHeads != 0)
    return op->emitOpError() << "n_heads (" << heads
                             << ") must be a multiple of n_kv_heads ("
                             << kvHeads << ")";
  if (!(scale > 0.0))
    return op->emitOpError() << "scale must be positive, got " << scale;
  return success();
}

static SmallVector<int64_t> lseShape(Value q) {
  auto s = ranked(q).getShape();
  return {s[0], s[2], s[1]};
}

LogicalResult AttentionOp::verify() {
  if (failed(verifyAttentionOperands(*this, getQuery(), getKey(), getValue(),
                                     getScale().convertToDouble())) ||
      failed(expectShape(*this, "result", getResult(),
                         ranked(getQuery()).getShape())))
    return failure();
  return expectShape(*this, "logsumexp", getLogsumexp(), lseShape(getQuery()));
}

LogicalResult AttentionGradOp::verify() {
  if (failed(verifyAttentionOperands(*this, getQuery(), getKey(), getValue(),
                                     getScale().convertToDouble())))
    return failure();
  auto qs = ranked(getQuery()).getShape();
  auto ks = ranked(getKey()).getShape();
  if (failed(expectShape(*this, "grad", getGrad(), qs)) ||
      failed(expectShape(*this, "result", getResult(), qs)) ||
      failed(expectShape(*this, "logsumexp", getLogsumexp(),
                         lseShape(getQuery()))) ||
      failed(expectShape(*this, "query_grad", getQueryGrad(), qs)) ||
      failed(expectShape(*this, "key_grad", getKeyGrad(), ks)))
    return failure();
  return expectShape(*this, "value_grad", getValueGrad(), ks);
}

//===----------------------------------------------------------------------===//

static LogicalResult verifyCrossEntropy(Operation *op, Value logits,
                                        Value targets) {
  if (failed(verifyCommon(op)))
    return failure();
  auto lt = ranked(logits);
  if (lt.getRank() < 1)
    return op->emitOpError() << "logits must have rank >= 1";
  return expectShape(op, "targets", targets, lt.getShape().drop_back());
}

LogicalResult CrossEntropyOp::verify() {
  return verifyCrossEntropy(*this, getLogits(), getTargets());
}

LogicalResult CrossEntropyGradOp::verify() {
  if (failed(verifyCrossEntropy(*this, getLogits(), getTargets())))
    return failure();
  return expectShape(*this, "result", getResult(),
                     ranked(getLogits()).getShape());
}

//===----------------------------------------------------------------------===//
// Generation with a KV cache
//===----------------------------------------------------------------------===//

LogicalResult RopeAtOp::verify() {
  if (failed(verifyRope(*this, getInput(), getResult(), getTheta().convertToDouble())))
    return failure();
  auto x = ranked(getInput());
  if (getMaxPositions() < x.getDimSize(1))
    return emitOpError() << "max_positions " << getMaxPositions()
                         << " is smaller than the chunk " << x.getDimSize(1);
  return expectShape(*this, "result", getResult(), x.getShape());
}

LogicalResult AttentionCachedOp::verify() {
  if (failed(verifyCommon(*this)))
    return failure();
  auto q = ranked(getQuery()), k = ranked(getKey()), kc = ranked(getKeyCache());
  if (q.getRank() != 4 || k.getRank() != 4 || kc.getRank() != 4)
    return emitOpError() << "query, key and key_cache must be 4-D";
  int64_t batch = q.getDimSize(0), chunk = q.getDimSize(1), heads = q.getDimSize(2),
          dim = q.getDimSize(3), kvHeads = k.getDimSize(2);
  if (failed(expectShape(*this, "key", getKey(), {batch, chunk, kvHeads, dim})) ||
      failed(expectShape(*this, "value", getValue(), {batch, chunk, kvHeads, dim})))
    return failure();
  if (kvHeads < 1 || heads % kvHeads != 0)
    return emitOpError() << heads << " query heads do not group over " << kvHeads
                         << " KV heads";
  int64_t capacity = kc.getDimSize(1);
  if (capacity < chunk)
    return emitOpError() << "a cache of " << capacity << " rows cannot take a chunk of "
                         << chunk;
  if (failed(expectShape(*this, "key_cache", getKeyCache(), {batch, capacity, kvHeads, dim})) ||
      failed(expectShape(*this, "value_cache", getValueCache(), {batch, capacity, kvHeads, dim})))
    return failure();
  return expectShape(*this, "result", getResult(), q.getShape());
}

//===----------------------------------------------------------------------===//
// Partitioning
//===----------------------------------------------------------------------===//

/// Row statistics of logits [..., V]: `stat` must be [...] (+ `extra`).
static LogicalResult expectRowShape(Operation *op, StringRef what, Value stat,
                                    Value logits, std::optional<int64_t> extra) {
  SmallVector<int64_t> shape(ranked(logits).getShape().drop_back());
  if (extra)
    shape.push_back(*extra);
  return expectShape(op, what, stat, shape);
}

LogicalResult LogitsMaxOp::verify() {
  if (failed(verifyCommon(*this)))
    return failure();
  if (ranked(getLogits()).getRank() < 1)
    return emitOpError() << "logits must have rank >= 1";
  return expectRowShape(*this, "result", getResult(), getLogits(), std::nullopt);
}

static LogicalResult verifyPartialSums(Operation *op, Value logits, Value max,
                                       Value targets,
                                       std::optional<ArrayRef<int64_t>> shard) {
  if (failed(verifyCommon(op)) ||
      failed(verifyCrossEntropy(op, logits, targets)) ||
      failed(expectRowShape(op, "max", max, logits, std::nullopt)))
    return failure();
  return verifyVocabShard(op, shard, ranked(logits).getShape().back());
}

LogicalResult CEPartialSumsOp::verify() {
  if (failed(verifyPartialSums(*this, getLogits(), getMax(), getTargets(),
                               getVocabShard())))
    return failure();
  return expectRowShape(*this, "result", getResult(), getLogits(), 2);
}

LogicalResult CEPartialSumsGradOp::verify() {
  if (failed(verifyPartialSums(*this, getLogits(), getMax(), getTargets(),
                               getVocabShard())) ||
      failed(expectRowShape(*this, "grad", getGrad(), getLogits(), 2)))
    return failure();
  return expectShape(*this, "result", getResult(), ranked(getLogits()).getShape());
}

LogicalResult CECombineOp::verify() {
  if (failed(verifyCommon(*this)))
    return failure();
  SmallVector<int64_t> rows(ranked(getTargets()).getShape());
  if (failed(expectShape(*this, "max", getMax(), rows)))
    return failure();
  rows.push_back(2);
  return expectShape(*this, "sums", getSums(), rows);
}

#define GET_OP_CLASSES
#include "dialects/llama/IR/LlamaOps.cpp.inc"

#include "dialects/llama/IR/LlamaInterfaces.cpp.inc"

//===----------------------------------------------------------------------===//
// Fused kernels (llama-fuse)
//===----------------------------------------------------------------------===//

/// The row statistic of a norm over `x`: `x`'s shape without the last dim.
static LogicalResult expectRstd(Operation *op, Value rstd, Value x) {
  auto xs = ranked(x).getShape();
  return expectShape(op, "rstd", rstd, xs.drop_back());
}

LogicalResult AddRMSNormOp::verify() {
  if (failed(verifyNorm(*this, getLhs(), getWeight(), getEps().convertToDouble())))
    return failure();
  auto xs = ranked(getLhs()).getShape();
  if (failed(expectShape(*this, "rhs", getRhs(), xs)) ||
      failed(expectShape(*this, "sum", getSum(), xs)) ||
      failed(expectShape(*this, "result", getResult(), xs)))
    return failure();
  return expectRstd(*this, getRstd(), getLhs());
}

LogicalResult RMSNormRstdOp::verify() {
  if (failed(verifyNorm(*this, getX(), getWeight(), getEps().convertToDouble())))
    return failure();
  if (failed(expectShape(*this, "result", getResult(), ranked(getX()).getShape())))
    return failure();
  return expectRstd(*this, getRstd(), getX());
}

LogicalResult RMSNormGradRstdOp::verify() {
  if (failed(verifyNorm(*this, getX(), getWeight(), getEps().convertToDouble())))
    return failure();
  auto xs = ranked(getX()).getShape();
  if (failed(expectShape(*this, "grad", getGrad(), xs)) ||
      failed(expectShape(*this, "x_grad", getXGrad(), xs)) ||
      failed(expectRstd(*this, getRstd(), getX())))
    return failure();
  if (getAccumulate() &&
      failed(expectShape(*this, "accumulate", getAccumulate(), xs)))
    return failure();
  return expectShape(*this, "weight_grad", getWeightGrad(),
                     ranked(getWeight()).getShape());
}

LogicalResult CrossEntropyFusedOp::verify() {
  if (failed(verifyCrossEntropy(*this, getLogits(), getTargets())))
    return failure();
  if (!std::isfinite(getGradScale().convertToDouble()))
    return emitOpError() << "grad_scale must be finite";
  return expectShape(*this, "logits_grad", getLogitsGrad(),
                     ranked(getLogits()).getShape());
}

LogicalResult RopeQKOp::verify() {
  double theta = getTheta().convertToDouble();
  if (failed(verifyRope(*this, getQuery(), getQueryResult(), theta)) ||
      failed(verifyRope(*this, getKey(), getKeyResult(), theta)))
    return failure();
  auto q = ranked(getQuery()).getShape(), k = ranked(getKey()).getShape();
  if (q[0] != k[0] || q[1] != k[1] || q[3] != k[3])
    return emitOpError() << "query " << shapeStr(q) << " and key " << shapeStr(k)
                         << " must agree in batch, seq and head_dim";
  return success();
}

LogicalResult SumOp::verify() {
  if (getInputs().size() < 2)
    return emitOpError() << "needs at least two inputs, got " << getInputs().size();
  return verifyCommon(*this);
}
