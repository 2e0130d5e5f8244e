//===- Shard.cpp - llama-shard: tensor, sequence and data parallelism -----===//
//
// Rewrites @forward into the program ONE rank of a dp x tp grid runs (SPMD),
// before remat and autodiff: the backward is then derived from the
// partitioned forward, and the collectives it needs come from the VJPs of
// the forward's collectives (ShardVJP.cpp) and of llama.grad_all_reduce.
//
// Tensor parallelism follows Megatron-LM (Shoeybi et al. 2019): q/k/v, gate
// and up projections are column-parallel (weight rows split), o and down
// projections row-parallel (weight columns split), so each rank owns whole
// heads (and KV heads) and a slice of the SwiGLU width; the embedding and
// the output projection are split over the vocabulary, and the
// cross-entropy is computed from all-reduced row statistics without ever
// gathering logits. Sequence parallelism (Korthikanti et al. 2022) keeps
// norms and residuals split along the sequence: all-gather before the
// column-parallel GEMMs, reduce-scatter after the row-parallel ones. Data
// parallelism splits the batch; the loss is normalized by the global count
// of scored tokens, so per-rank gradients sum to the single-process ones
// (the optimizer's ZeRO-1 reduce-scatter does the sum).
//
// Every value carries a layout: which dimension is split over tp (if any),
// whether it is a partial sum over tp, whether dimension 0 is the batch
// split over dp. Each op has a rule that checks its operands' layouts,
// inserts collectives where they do not fit, and gives the result's layout;
// types are recomputed from the global type and the layout, and the
// verifiers of the rebuilt ops check the result.
//
//===----------------------------------------------------------------------===//
#include "dialects/llama/IR/LlamaOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/IRMapping.h"

#include <optional>

namespace mlir::llama {
#define GEN_PASS_DEF_LLAMASHARD
#include "passes/Passes.h.inc"
} // namespace mlir::llama

using namespace mlir;
using namespace mlir::llama;

namespace {
constexpr int16_t kDpAxis = 0, kTpAxis = 1;
constexpr llvm::StringLiteral kGridName = "grid";

RankedTensorType ranked(Value v) { return cast<RankedTensorType>(v.getType()); }

struct Layout {
  int64_t tpDim = -1;   // dimension split over the tp axis, -1: not split
  bool partial = false; // a partial sum over the tp axis
  bool batch = false;   // dimension 0 is the batch, split over the dp axis
};

/// Which dimension of a parameter tensor parallelism splits, by its Hugging
/// Face name: 0 for column-parallel and vocabulary-parallel weights, 1 for
/// row-parallel ones, nullopt for replicated ones (1-D gains).
FailureOr<std::optional<int64_t>> tensorParallelDim(StringRef name, int64_t rank) {
  if (rank == 1)
    return std::optional<int64_t>();
  for (StringRef col : {"q_proj.weight", "k_proj.weight", "v_proj.weight",
                        "gate_proj.weight", "up_proj.weight",
                        "embed_tokens.weight", "lm_head.weight"})
    if (name.ends_with(col))
      return std::optional<int64_t>(0);
  for (StringRef row : {"o_proj.weight", "down_proj.weight"})
    if (name.ends_with(row))
      return std::optional<int64_t>(1);
  return failure();
}

class Partitioner {
public:
  Partitioner(ModuleOp module, func::FuncOp forward, int64_t dp, int64_t tp,
              bool sp)
      : module(module), forward(forward), dp(dp), tp(tp), sp(sp),
        b(forward.getContext()), ctx(forward.getContext()) {}

  LogicalResult run();

private:
  FailureOr<RankedTensorType> localType(Operation *at, RankedTensorType global,
                                        const Layout &layout);
  Value setLayout(Value v, Layout layout) {
    layouts[v] = layout;
    return v;
  }
  Layout layoutOf(Value v) const { return layouts.lookup(v); }
  FlatSymbolRefAttr grid() { return FlatSymbolRefAttr::get(ctx, kGridName); }
  DenseI16ArrayAttr axes(int16_t axis) { return b.getDenseI16ArrayAttr({axis}); }

  Value allReduce(Location loc, Value v, int16_t axis, shard::ReductionKind kind);
  Value allGather(Location loc, Value v, int64_t dim);
  Value reduceScatter(Location loc, Value v, int64_t dim);
  FailureOr<Value> replicatedForTensorParallel(Operation *op, Value v);
  FailureOr<Value> finishPartial(Operation *op, Value v);

  LogicalResult rewrite(Operation &op, IRMapping &map);
  LogicalResult rewriteMatmul(MatmulOp op, IRMapping &map);
  LogicalResult rewriteCrossEntropy(CrossEntropyOp op, IRMapping &map);
  LogicalResult cloneWithLayout(Operation &op, IRMapping &map, Layout layout);

  ModuleOp module;
  func::FuncOp forward;
  int64_t dp, tp;
  bool sp;
  OpBuilder b;
  MLIRContext *ctx;
  DenseMap<Value, Layout> layouts;
  DenseMap<Value, int64_t> paramShardDim; // new param argument -> split dim
  DenseMap<Value, Value> enteredTensorParallel; // value -> its f / all_gather
};

FailureOr<RankedTensorType> Partitioner::localType(Operation *at,
                                                   RankedTensorType global,
                                                   const Layout &layout) {
  SmallVector<int64_t> shape(global.getShape());
  auto split = [&](int64_t dim, int64_t parts, StringRef what) -> LogicalResult {
    if (dim >= static_cast<int64_t>(shape.size()) || shape[dim] % parts != 0)
      return at->emitOpError() << "llama-shard: dimension " << dim << " of "
                               << global << " does not split into " << parts
                               << " " << what << " parts";
    shape[dim] /= parts;
    return success();
  };
  if (layout.batch && dp > 1 && !shape.empty() &&
      failed(split(0, dp, "data-parallel")))
    return failure();
  if (layout.tpDim >= 0 && failed(split(layout.tpDim, tp, "tensor-parallel")))
    return failure();
  return RankedTensorType::get(shape, global.getElementType());
}

Value Partitioner::allReduce(Location loc, Value v, int16_t axis,
                             shard::ReductionKind kind) {
  return shard::AllReduceOp::create(b, loc, v.getType(), grid(), axes(axis), v,
                                    shard::ReductionKindAttr::get(ctx, kind));
}

Value Partitioner::allGather(Location loc, Value v, int64_t dim) {
  SmallVector<int64_t> shape(ranked(v).getShape());
  shape[dim] *= tp;
  auto type = RankedTensorType::get(shape, ranked(v).getElementType());
  return shard::AllGatherOp::create(b, loc, type, grid(), axes(kTpAxis), v,
                                    b.getIndexAttr(dim));
}

Value Partitioner::reduceScatter(Location loc, Value v, int64_t dim) {
  SmallVector<int64_t> shape(ranked(v).getShape());
  shape[dim] /= tp;
  auto type = RankedTensorType::get(shape, ranked(v).getElementType());
  return shard::ReduceScatterOp::create(
      b, loc, type, grid(), axes(kTpAxis), v,
      shard::ReductionKindAttr::get(ctx, shard::ReductionKind::Sum),
      b.getIndexAttr(dim));
}

/// The input of a column-parallel GEMM: the whole activation on every rank,
/// whose cotangent will be a partial sum (Megatron's `f`, or with sequence
/// parallelism the all-gather along the sequence). One per value, shared by
/// all its tensor-parallel users (q, k and v read the same gathered input).
FailureOr<Value> Partitioner::replicatedForTensorParallel(Operation *op, Value v) {
  if (auto it = enteredTensorParallel.find(v); it != enteredTensorParallel.end())
    return it->second;
  Layout l = layoutOf(v);
  Value entered;
  if (l.partial)
    return op->emitOpError("llama-shard: input is a pending partial sum");
  if (l.tpDim == -1) {
    entered = GradAllReduceOp::create(b, op->getLoc(), v, grid(), axes(kTpAxis));
  } else if (sp && l.tpDim == 1) {
    entered = allGather(op->getLoc(), v, 1);
  } else {
    return op->emitOpError("llama-shard: a column-parallel GEMM needs its input "
                           "whole, but dimension ")
           << l.tpDim << " is split";
  }
  setLayout(entered, {-1, false, l.batch});
  enteredTensorParallel[v] = entered;
  return entered;
}

/// A row-parallel result (a partial sum) becomes whole again: all-reduce, or
/// with sequence parallelism reduce-scatter along the sequence.
FailureOr<Value> Partitioner::finishPartial(Operation *op, Value v) {
  Layout l = layoutOf(v);
  if (sp) {
    if (ranked(v).getRank() < 2)
      return op->emitOpError("llama-shard: sequence parallelism needs [batch, seq, ...] activations");
    return setLayout(reduceScatter(op->getLoc(), v, 1), {1, false, l.batch});
  }
  return setLayout(allReduce(op->getLoc(), v, kTpAxis, shard::ReductionKind::Sum),
                   {-1, false, l.batch});
}

LogicalResult Partitioner::cloneWithLayout(Operation &op, IRMapping &map,
                                           Layout layout) {
  Operation *copy = b.clone(op, map);
  for (auto [orig, now] : llvm::zip(op.getResults(), copy->getResults())) {
    auto type = localType(&op, ranked(orig), layout);
    if (failed(type))
      return failure();
    now.setType(*type);
    setLayout(now, layout);
  }
  return success();
}

LogicalResult Partitioner::rewriteMatmul(MatmulOp op, IRMapping &map) {
  Value lhs = map.lookup(op.getLhs()), rhs = map.lookup(op.getRhs());
  Layout ll = layoutOf(lhs);
  int64_t last = ranked(op.getResult()).getRank() - 1;
  auto sharded = paramShardDim.find(rhs);
  if (tp == 1 || sharded == paramShardDim.end()) {
    if (tp > 1 && (layoutOf(rhs).tpDim >= 0 || layoutOf(rhs).partial))
      return op.emitOpError("llama-shard: no tensor-parallel rule for a GEMM of "
                            "two partitioned activations");
    if (ll.partial || ll.tpDim == ranked(op.getLhs()).getRank() - 1)
      return op.emitOpError("llama-shard: GEMM with a replicated weight reads a "
                            "split or partial input");
    return cloneWithLayout(*op, map, ll);
  }
  if (!op.getTransposeRhs() || op.getTransposeLhs())
    return op.emitOpError("llama-shard: tensor parallelism expects x @ W^T "
                          "(transpose_rhs) for parameter GEMMs");
  if (sharded->second == 0) { // column-parallel: output features split
    FailureOr<Value> input = replicatedForTensorParallel(op, lhs);
    if (failed(input))
      return failure();
    map.map(op.getLhs(), *input);
    Layout out{last, false, ll.batch};
    if (failed(cloneWithLayout(*op, map, out)))
      return failure();
    map.map(op.getLhs(), lhs);
    return success();
  }
  // Row-parallel: contraction split, the result a partial sum.
  if (ll.tpDim != ranked(op.getLhs()).getRank() - 1)
    return op.emitOpError("llama-shard: a row-parallel GEMM needs its input "
                          "split along the contracted (last) dimension");
  if (failed(cloneWithLayout(*op, map, {-1, true, ll.batch})))
    return failure();
  Value partial = map.lookup(op.getResult());
  FailureOr<Value> whole = finishPartial(op, partial);
  if (failed(whole))
    return failure();
  map.map(op.getResult(), *whole);
  return success();
}

/// Mean cross-entropy without gathering the logits: the row maximum and the
/// (sum of exp, target logit) pair are all-reduced over tp; the count of
/// scored tokens and the loss over dp.
LogicalResult Partitioner::rewriteCrossEntropy(CrossEntropyOp op, IRMapping &map) {
  Location loc = op.getLoc();
  Value logits = map.lookup(op.getLogits());
  Value targets = map.lookup(op.getTargets());
  Layout ll = layoutOf(logits);
  int64_t vocabDim = ranked(logits).getRank() - 1;
  if (ll.partial || (ll.tpDim >= 0 && ll.tpDim != vocabDim))
    return op.emitOpError("llama-shard: the logits must be whole or split over "
                          "the vocabulary");
  bool vocabSplit = ll.tpDim == vocabDim;
  auto lt = ranked(logits);
  Type elem = lt.getElementType();
  SmallVector<int64_t> rows(lt.getShape().drop_back());
  auto rowType = RankedTensorType::get(rows, elem);
  SmallVector<int64_t> pairShape(rows);
  pairShape.push_back(2);
  auto pairType = RankedTensorType::get(pairShape, elem);
  auto scalar = RankedTensorType::get({}, elem);
  DenseI64ArrayAttr vocabShard;
  if (vocabSplit)
    vocabShard = b.getDenseI64ArrayAttr({kTpAxis, lt.getShape().back() * tp});

  Value max = LogitsMaxOp::create(b, loc, rowType, logits);
  if (vocabSplit)
    max = allReduce(loc, max, kTpAxis, shard::ReductionKind::Max);
  Value sums = CEPartialSumsOp::create(b, loc, pairType, logits, max, targets,
                                       op.getIgnoreIndexAttr(), vocabShard);
  if (vocabSplit)
    sums = allReduce(loc, sums, kTpAxis, shard::ReductionKind::Sum);
  Value count = CountValidOp::create(b, loc, scalar, targets, op.getIgnoreIndexAttr());
  if (dp > 1)
    count = allReduce(loc, count, kDpAxis, shard::ReductionKind::Sum);
  Value loss = CECombineOp::create(b, loc, scalar, max, sums, targets, count,
                                   op.getIgnoreIndexAttr());
  if (dp > 1)
    loss = allReduce(loc, loss, kDpAxis, shard::ReductionKind::Sum);
  map.map(op.getResult(), setLayout(loss, {}));
  return success();
}

LogicalResult Partitioner::rewrite(Operation &op, IRMapping &map) {
  auto operandLayout = [&](unsigned i) { return layoutOf(map.lookup(op.getOperand(i))); };
  if (auto emb = dyn_cast<EmbeddingOp>(op)) {
    Value table = map.lookup(emb.getTable());
    bool batch = operandLayout(1).batch;
    if (!paramShardDim.count(table)) {
      if (tp > 1)
        return emb.emitOpError("llama-shard: the embedding table must be a "
                               "vocabulary-parallel parameter (embed_tokens)");
      return cloneWithLayout(op, map, {-1, false, batch});
    }
    if (failed(cloneWithLayout(op, map, {-1, true, batch})))
      return failure();
    auto local = cast<EmbeddingOp>(map.lookup(emb.getResult()).getDefiningOp());
    local.setVocabShardAttr(b.getDenseI64ArrayAttr(
        {kTpAxis, ranked(emb.getTable()).getDimSize(0)}));
    FailureOr<Value> whole = finishPartial(&op, local.getResult());
    if (failed(whole))
      return failure();
    map.map(emb.getResult(), *whole);
    return success();
  }
  if (auto norm = dyn_cast<RMSNormOp>(op)) {
    Layout xl = operandLayout(0);
    if (xl.partial || xl.tpDim == ranked(norm.getX()).getRank() - 1)
      return norm.emitOpError("llama-shard: RMSNorm needs whole rows");
    if (xl.tpDim >= 0) {
      // Each rank normalizes its slice of the sequence: the gain's gradient
      // is a partial sum over the slices.
      Value w = map.lookup(norm.getWeight());
      auto it = enteredTensorParallel.find(w);
      Value entered = it != enteredTensorParallel.end()
                          ? it->second
                          : GradAllReduceOp::create(b, norm.getLoc(), w, grid(),
                                                    axes(kTpAxis)).getResult();
      enteredTensorParallel[w] = entered;
      map.map(norm.getWeight(), entered);
      LogicalResult r = cloneWithLayout(op, map, xl);
      map.map(norm.getWeight(), w);
      return r;
    }
    return cloneWithLayout(op, map, xl);
  }
  if (auto mm = dyn_cast<MatmulOp>(op))
    return rewriteMatmul(mm, map);
  if (auto reshape = dyn_cast<ReshapeOp>(op)) {
    Layout in = operandLayout(0);
    auto inShape = ranked(reshape.getInput()).getShape();
    auto outShape = ranked(reshape.getResult()).getShape();
    Layout out{-1, in.partial, in.batch};
    if (in.batch && (outShape.empty() || inShape.empty() || outShape[0] != inShape[0]) && dp > 1)
      return reshape.emitOpError("llama-shard: a reshape must keep the batch dimension");
    if (in.tpDim >= 0) {
      // The split dimension maps to the output dimension that starts at the
      // same flat offset (row-major blocks stay blocks).
      int64_t prefix = 1;
      for (int64_t d = 0; d < in.tpDim; ++d)
        prefix *= inShape[d];
      int64_t acc = 1;
      for (int64_t d = 0; d < static_cast<int64_t>(outShape.size()); ++d) {
        if (acc == prefix && outShape[d] % tp == 0 &&
            (d + 1 == static_cast<int64_t>(outShape.size()) || outShape[d] > 1)) {
          out.tpDim = d;
          break;
        }
        acc *= outShape[d];
      }
      if (out.tpDim < 0)
        return reshape.emitOpError("llama-shard: cannot follow the split of dimension ")
               << in.tpDim << " through this reshape";
    }
    return cloneWithLayout(op, map, out);
  }
  if (auto rope = dyn_cast<RopeOp>(op)) {
    Layout in = operandLayout(0);
    if (in.partial || in.tpDim == 1 || in.tpDim == 3)
      return rope.emitOpError("llama-shard: RoPE needs whole sequences and head dims");
    return cloneWithLayout(op, map, in);
  }
  if (auto att = dyn_cast<AttentionOp>(op)) {
    Layout q = operandLayout(0), k = operandLayout(1), v = operandLayout(2);
    if (q.partial || k.partial || v.partial || q.tpDim != k.tpDim ||
        q.tpDim != v.tpDim || (q.tpDim != -1 && q.tpDim != 2))
      return att.emitOpError("llama-shard: attention needs q, k, v whole or all "
                             "split over heads");
    Operation *copy = b.clone(op, map);
    for (auto [i, orig] : llvm::enumerate(op.getResults())) {
      // out [B, T, H, D] splits heads at 2; logsumexp [B, H, T] at 1.
      Layout l{q.tpDim == -1 ? -1 : (i == 0 ? 2 : 1), false, q.batch};
      auto type = localType(&op, ranked(orig), l);
      if (failed(type))
        return failure();
      copy->getResult(i).setType(*type);
      setLayout(copy->getResult(i), l);
      map.map(orig, copy->getResult(i));
    }
    return success();
  }
  if (isa<SwigluOp, AddOp>(op)) {
    Layout a = operandLayout(0), c = operandLayout(1);
    if (a.tpDim != c.tpDim || a.partial != c.partial || a.batch != c.batch)
      return op.emitOpError("llama-shard: operands are partitioned differently");
    return cloneWithLayout(op, map, a);
  }
  if (auto ce = dyn_cast<CrossEntropyOp>(op))
    return rewriteCrossEntropy(ce, map);
  return op.emitOpError("llama-shard: no partitioning rule for this op");
}

LogicalResult Partitioner::run() {
  if (!forward.getBody().hasOneBlock())
    return forward.emitError("llama-shard: @forward must have a single block");
  FunctionType type = forward.getFunctionType();
  SmallVector<Type> argTypes;
  SmallVector<Layout> argLayouts;
  SmallVector<std::optional<int64_t>> argSplit;
  for (auto [i, t] : llvm::enumerate(type.getInputs())) {
    auto rt = dyn_cast<RankedTensorType>(t);
    if (!rt)
      return forward.emitError("llama-shard: argument #") << i << " is not a ranked tensor";
    Layout l;
    std::optional<int64_t> split;
    if (isa<FloatType>(rt.getElementType())) {
      auto name = forward.getArgAttrOfType<StringAttr>(i, kParamNameAttr);
      if (!name)
        return forward.emitError("llama-shard: parameter argument #")
               << i << " has no llama.param_name";
      if (tp > 1) {
        auto dim = tensorParallelDim(name.getValue(), rt.getRank());
        if (failed(dim))
          return forward.emitError("llama-shard: parameter '")
                 << name.getValue()
                 << "' has no tensor-parallel rule (known: q/k/v/o_proj, "
                    "gate/up/down_proj, embed_tokens, lm_head, 1-D gains)";
        split = *dim;
        if (split)
          l.tpDim = *split;
      }
    } else {
      l.batch = true; // tokens, targets: [batch, seq]
    }
    auto local = localType(forward, rt, l);
    if (failed(local))
      return failure();
    argTypes.push_back(*local);
    argLayouts.push_back(l);
    argSplit.push_back(split);
  }

  b.setInsertionPoint(forward);
  auto grid = shard::GridOp::create(b, forward.getLoc(), kGridName,
                                    ArrayRef<int64_t>{dp, tp});
  (void)grid;
  auto fn = func::FuncOp::create(b, forward.getLoc(), "forward_partitioned",
                                 b.getFunctionType(argTypes, type.getResults()));
  fn.setAllArgAttrs(forward.getAllArgAttrs());
  Block *entry = fn.addEntryBlock();
  IRMapping map;
  for (auto [i, arg] : llvm::enumerate(forward.getArguments())) {
    Value now = entry->getArgument(i);
    map.map(arg, now);
    setLayout(now, argLayouts[i]);
    if (argSplit[i]) {
      paramShardDim[now] = *argSplit[i];
      fn.setArgAttr(i, kShardDimAttr, b.getI64IntegerAttr(*argSplit[i]));
    }
    if (isa<FloatType>(ranked(arg).getElementType()))
      fn.setArgAttr(i, kFullShapeAttr,
                    b.getDenseI64ArrayAttr(ranked(arg).getShape()));
  }

  b.setInsertionPointToEnd(entry);
  // Ops built for an op of a layer belong to that layer (per-layer reports,
  // remat `full`).
  struct Tagger : OpBuilder::Listener {
    Attribute layer;
    void notifyOperationInserted(Operation *op, OpBuilder::InsertPoint) override {
      if (layer && !op->hasAttr(kLayerAttr))
        op->setAttr(kLayerAttr, layer);
    }
  } tagger;
  b.setListener(&tagger);
  for (Operation &op : forward.getBody().front()) {
    tagger.layer = op.getAttr(kLayerAttr);
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      SmallVector<Value> results;
      for (Value v : ret.getOperands()) {
        Value now = map.lookup(v);
        Layout l = layoutOf(now);
        if (l.partial || l.tpDim >= 0 || (l.batch && dp > 1))
          return ret.emitOpError("llama-shard: @forward must return the "
                                 "(replicated) loss");
        results.push_back(now);
      }
      func::ReturnOp::create(b, ret.getLoc(), results);
      continue;
    }
    if (failed(rewrite(op, map)))
      return failure();
  }
  b.setListener(nullptr);
  forward.erase();
  fn.setSymName("forward");
  module->setAttr(kGridAttr, b.getDenseI64ArrayAttr({dp, tp}));
  if (sp)
    module->setAttr(kSequenceParallelAttr, UnitAttr::get(ctx));
  return success();
}

struct LlamaShardPass : mlir::llama::impl::LlamaShardBase<LlamaShardPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (dp < 1 || tp < 1) {
      module.emitError("llama-shard: dp and tp must be >= 1");
      return signalPassFailure();
    }
    if (sp && tp < 2) {
      module.emitError("llama-shard: sequence parallelism needs tp >= 2");
      return signalPassFailure();
    }
    if (dp == 1 && tp == 1)
      return; // a single process: nothing to partition
    if (module->hasAttr(kGridAttr)) {
      module.emitError("llama-shard: the module is already partitioned");
      return signalPassFailure();
    }
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward) {
      module.emitError("llama-shard: the module has no func.func @forward");
      return signalPassFailure();
    }
    // Generation runs unpartitioned (llama-compile builds a partitioned
    // program without it): left in, @prefill / @decode would keep the full
    // parameters beside @forward's shards.
    for (StringRef name : {"prefill", "decode"})
      if (auto fn = module.lookupSymbol<func::FuncOp>(name)) {
        fn.emitError("llama-shard: @")
            << name << " cannot be partitioned: generation runs on one process "
            << "(llama-compile --dp/--tp builds the model without @prefill and @decode)";
        return signalPassFailure();
      }
    if (failed(Partitioner(module, forward, dp, tp, sp).run()))
      return signalPassFailure();
  }
};
} // namespace
