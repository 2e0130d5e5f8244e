//===- EmitCpu.cpp - C++ source for the CPU runtime ----------------------===//
//
// Straight-line code: one kernel call per op, every shape a literal, every
// tensor a constant offset into the arena, a parameter or an output buffer.
// Views (reshape) cost nothing: they resolve to their root's pointer.
//
//===----------------------------------------------------------------------===//
#include "compiler/EmitCpu.h"
#include "compiler/EmitUtil.h"

#include "dialects/llama/IR/LlamaOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"

#include <map>
#include <set>

using namespace mlir;
using namespace mlir::llama;

namespace {
using ::llama::emit::cString;
using ::llama::emit::lit;
using ::llama::emit::numel;
using ::llama::emit::product;
using ::llama::emit::ranked;

struct ParamEntry {
  std::string name;
  SmallVector<int64_t> shape;     // this rank's shard
  SmallVector<int64_t> fullShape; // the unpartitioned parameter
  int64_t shardDim;               // split over tensor parallelism, -1: none
  int64_t offset;
};

/// runtime/comm/comm.h's Axis for a collective's grid axes (the grid of
/// llama-shard: axis 0 data, axis 1 tensor parallel).
FailureOr<std::string> commAxis(Operation *op, ArrayRef<int16_t> axes) {
  if (axes.size() == 1 && axes[0] == 0)
    return std::string("llamart::comm::Axis::DP");
  if (axes.size() == 1 && axes[0] == 1)
    return std::string("llamart::comm::Axis::TP");
  if (axes.size() == 2 && axes[0] != axes[1] && axes[0] <= 1 && axes[1] <= 1)
    return std::string("llamart::comm::Axis::World");
  op->emitOpError("has grid axes the CPU runtime does not know (expected "
                  "[0], [1] or [0, 1] of a dp x tp grid)");
  return failure();
}


/// The three entry points of a program (runtime/program/program.h).
enum class EntryKind { TrainStep, Logits, EvalLoss, Prefill, Decode };

class FunctionEmitter {
public:
  FunctionEmitter(func::FuncOp fn, const std::vector<ParamEntry> &params,
                  raw_ostream &os, EntryKind kind)
      : fn(fn), params(params), os(os), kind(kind),
        isTrainStep(kind == EntryKind::TrainStep) {}

  LogicalResult emit() {
    // Arguments: parameters (float) in order, then token inputs; the
    // generation entries also take the position and the KV caches (one
    // buffer: key then value of layer 0, then of layer 1, ...).
    unsigned p = 0;
    for (BlockArgument arg : fn.getArguments()) {
      unsigned i = arg.getArgNumber();
      if (auto cache = fn.getArgAttrOfType<StringAttr>(i, kKvCacheAttr)) {
        auto layer = fn.getArgAttrOfType<IntegerAttr>(i, kLayerAttr);
        if (!layer)
          return fn.emitError("KV cache argument #") << i << " has no llama.layer";
        int64_t slot = 2 * layer.getInt() + (cache.getValue() == "value" ? 1 : 0);
        names[arg] = "(KV + " + std::to_string(slot * numel(arg)) + ")";
        continue;
      }
      if (isa<FloatType>(ranked(arg).getElementType())) {
        names[arg] = "(P + " + std::to_string(params[p++].offset) + ")";
        continue;
      }
      auto role = fn.getArgAttrOfType<StringAttr>(i, kInputAttr);
      if (role && role.getValue() == "position") {
        names[arg] = "pos_";
        continue;
      }
      if (!role || (role.getValue() != "tokens" && role.getValue() != "targets"))
        return fn.emitError("integer argument #")
               << i << " needs llama.input = \"tokens\" or \"targets\"";
      names[arg] = role.getValue().str();
    }
    switch (kind) {
    case EntryKind::TrainStep:
      os << "void train_step(const void *params_, void *grads_, const int32_t "
            "*tokens, const int32_t *targets, void *arena_, double *loss_) {\n"
            "  T *G = static_cast<T *>(grads_);\n";
      break;
    case EntryKind::Logits:
      os << "void logits(const void *params_, const int32_t *tokens, void "
            "*arena_, void *out_) {\n"
            "  T *O = static_cast<T *>(out_);\n";
      break;
    case EntryKind::EvalLoss:
      os << "void eval_loss(const void *params_, const int32_t *tokens, const "
            "int32_t *targets, void *arena_, double *loss_) {\n";
      break;
    case EntryKind::Prefill:
    case EntryKind::Decode:
      os << "void " << (kind == EntryKind::Prefill ? "prefill" : "decode")
         << "(const void *params_, const int32_t *tokens, int64_t pos_, void "
            "*kv_, void *arena_, void *out_) {\n"
            "  T *O = static_cast<T *>(out_);\n"
            "  T *KV = static_cast<T *>(kv_);\n";
      break;
    }
    os << "  const T *P = static_cast<const T *>(params_);\n"
          "  char *A = static_cast<char *>(arena_);\n"
          "  (void)P; (void)A;\n";
    for (Operation &op : fn.getBody().front()) {
      if (auto ret = dyn_cast<func::ReturnOp>(op))
        return emitReturn(ret);
      if (failed(bindResults(op)) || failed(emitOp(op)))
        return failure();
    }
    return fn.emitError("missing return");
  }

private:
  LogicalResult bindResults(Operation &op) {
    if (isViewOp(&op)) {
      names[op.getResult(0)] = names.lookup(op.getOperand(0));
      return success();
    }
    auto offsets = op.getAttrOfType<DenseI64ArrayAttr>(kOffsetAttr);
    auto outputs = op.getAttrOfType<DenseI64ArrayAttr>(kOutputAttr);
    if (!offsets || offsets.size() != static_cast<int64_t>(op.getNumResults()))
      return op.emitOpError("has no memory plan (run llama-plan-memory)");
    for (auto [i, r] : llvm::enumerate(op.getResults())) {
      int64_t out = outputs ? outputs[i] : -1;
      if (out >= 0) {
        names[r] = isTrainStep
                       ? "(G + " + std::to_string(params[out - 1].offset) + ")"
                       : std::string("O");
        continue;
      }
      names[r] = "reinterpret_cast<T *>(A + " + std::to_string(offsets[i]) + ")";
    }
    return success();
  }

  std::string n(Value v) { return names.lookup(v); }

  /// What a collective is, for the runtime's timeout message.
  std::string describe(Operation *op) {
    std::string s = op->getName().getStringRef().str();
    if (auto layer = op->getAttrOfType<IntegerAttr>(kLayerAttr))
      s += " layer " + std::to_string(layer.getInt());
    if (op->hasAttr(kBackwardAttr))
      s += " (backward)";
    return cString(s);
  }

  /// `rows * rank on the vocab_shard axis`: the first vocabulary row or
  /// column this rank holds.
  FailureOr<std::string> vocabOffset(Operation *op,
                                     std::optional<ArrayRef<int64_t>> shard,
                                     int64_t localRows) {
    if (!shard)
      return std::string("0");
    FailureOr<std::string> axis =
        commAxis(op, {static_cast<int16_t>((*shard)[0])});
    if (failed(axis))
      return failure();
    return "int64_t(llamart::comm::rank(" + *axis + ")) * " +
           std::to_string(localRows);
  }

  LogicalResult emitCollective(Operation *op, raw_ostream &c) {
    if (auto ar = dyn_cast<shard::AllReduceOp>(op)) {
      auto axis = commAxis(op, ar.getGridAxes());
      if (failed(axis))
        return failure();
      if (ar.getInput().getType() != ar.getResult().getType())
        return op->emitOpError("changes the element type; the CPU runtime "
                               "reduces in the tensor's own type");
      const char *kind;
      switch (ar.getReduction()) {
      case shard::ReductionKind::Sum: kind = "Sum"; break;
      case shard::ReductionKind::Max: kind = "Max"; break;
      default:
        return op->emitOpError("uses a reduction the CPU runtime lacks (sum, max)");
      }
      std::string in = n(ar.getInput()), out = n(ar.getResult());
      if (in != out)
        c << "std::memcpy(" << out << ", " << in << ", sizeof(T) * "
          << numel(ar.getResult()) << ");\n  ";
      c << "llamart::comm::all_reduce(" << out << ", " << numel(ar.getResult())
        << ", llamart::comm::ReduceOp::" << kind << ", " << *axis << ", "
        << describe(op) << ");";
      return success();
    }
    if (auto ag = dyn_cast<shard::AllGatherOp>(op)) {
      auto axis = commAxis(op, ag.getGridAxes());
      if (failed(axis))
        return failure();
      auto in = ranked(ag.getInput()).getShape();
      int64_t d = ag.getGatherAxis().getSExtValue();
      c << "llamart::comm::all_gather(" << n(ag.getInput()) << ", "
        << n(ag.getResult()) << ", " << product(in.take_front(d)) << ", "
        << product(in.drop_front(d)) << ", " << *axis << ", " << describe(op) << ");";
      return success();
    }
    if (auto rs = dyn_cast<shard::ReduceScatterOp>(op)) {
      auto axis = commAxis(op, rs.getGridAxes());
      if (failed(axis))
        return failure();
      if (rs.getReduction() != shard::ReductionKind::Sum)
        return op->emitOpError("the CPU runtime reduce-scatters sums only");
      auto out = ranked(rs.getResult()).getShape();
      int64_t d = rs.getScatterAxis().getSExtValue();
      c << "llamart::comm::reduce_scatter(" << n(rs.getInput()) << ", "
        << n(rs.getResult()) << ", " << product(out.take_front(d)) << ", "
        << product(out.drop_front(d)) << ", " << *axis << ", " << describe(op) << ");";
      return success();
    }
    return op->emitOpError("is not a collective the CPU runtime knows");
  }

  LogicalResult emitOp(Operation &op) {
    std::string call;
    llvm::raw_string_ostream c(call);
    bool handled = true;
    TypeSwitch<Operation *>(&op)
        .Case([&](ReshapeOp) {})
        .Case([&](FillOp f) {
          c << "std::fill_n(" << n(f.getResult()) << ", " << numel(f.getResult())
            << ", T(" << lit(f.getValue().convertToDouble()) << "));";
        })
        .Case([&](EmbeddingOp e) {
          auto t = ranked(e.getTable());
          if (auto shard = e.getVocabShard()) {
            auto row0 = vocabOffset(e, shard, t.getDimSize(0));
            if (failed(row0)) {
              failed_ = true;
              return;
            }
            c << "k::embedding_forward_shard<T>(" << n(e.getTable()) << ", "
              << n(e.getIds()) << ", " << n(e.getResult()) << ", "
              << numel(e.getIds()) << ", " << (*shard)[1] << ", " << *row0
              << ", " << t.getDimSize(0) << ", " << t.getDimSize(1) << ");";
            return;
          }
          c << "k::embedding_forward<T>(" << n(e.getTable()) << ", " << n(e.getIds())
            << ", " << n(e.getResult()) << ", " << numel(e.getIds()) << ", "
            << t.getDimSize(0) << ", " << t.getDimSize(1) << ");";
        })
        .Case([&](EmbeddingGradOp e) {
          auto t = ranked(e.getResult());
          if (auto shard = e.getVocabShard()) {
            auto row0 = vocabOffset(e, shard, t.getDimSize(0));
            if (failed(row0)) {
              failed_ = true;
              return;
            }
            c << "k::embedding_backward_shard<T>(" << n(e.getGrad()) << ", "
              << n(e.getIds()) << ", " << n(e.getResult()) << ", "
              << numel(e.getIds()) << ", " << (*shard)[1] << ", " << *row0
              << ", " << t.getDimSize(0) << ", " << t.getDimSize(1) << ");";
            return;
          }
          c << "k::embedding_backward<T>(" << n(e.getGrad()) << ", " << n(e.getIds())
            << ", " << n(e.getResult()) << ", " << numel(e.getIds()) << ", "
            << t.getDimSize(0) << ", " << t.getDimSize(1) << ");";
        })
        .Case([&](RMSNormOp r) {
          int64_t d = ranked(r.getWeight()).getDimSize(0);
          c << "k::rms_norm_forward<T>(" << n(r.getX()) << ", " << n(r.getWeight())
            << ", " << n(r.getResult()) << ", " << numel(r.getX()) / d << ", " << d
            << ", " << lit(r.getEps().convertToDouble()) << ");";
        })
        .Case([&](RMSNormGradOp r) {
          int64_t d = ranked(r.getWeight()).getDimSize(0);
          c << "k::rms_norm_backward<T>(" << n(r.getGrad()) << ", " << n(r.getX())
            << ", " << n(r.getWeight()) << ", " << n(r.getXGrad()) << ", "
            << n(r.getWeightGrad()) << ", " << numel(r.getX()) / d << ", " << d
            << ", " << lit(r.getEps().convertToDouble()) << ");";
        })
        .Case([&](MatmulOp m) {
          c << "k::matmul<T>(" << n(m.getLhs()) << ", " << n(m.getRhs()) << ", "
            << n(m.getResult()) << ", " << m.getBatchSize() << ", " << m.getM()
            << ", " << m.getN() << ", " << m.getK() << ", "
            << (m.getTransposeLhs() ? "true" : "false") << ", "
            << (m.getTransposeRhs() ? "true" : "false") << ", "
            << (m.isRhsShared() ? "true" : "false") << ");";
        })
        .Case([&](RopeOp r) {
          auto s = ranked(r.getInput()).getShape();
          c << "k::rope_forward<T>(" << n(r.getInput()) << ", " << n(r.getResult())
            << ", " << s[0] << ", " << s[1] << ", " << s[2] << ", " << s[3] << ", "
            << lit(r.getTheta().convertToDouble()) << ropeScaling(r) << ");";
        })
        .Case([&](RopeGradOp r) {
          auto s = ranked(r.getGrad()).getShape();
          c << "k::rope_backward<T>(" << n(r.getGrad()) << ", " << n(r.getResult())
            << ", " << s[0] << ", " << s[1] << ", " << s[2] << ", " << s[3] << ", "
            << lit(r.getTheta().convertToDouble()) << ropeScaling(r) << ");";
        })
        .Case([&](AttentionOp a) {
          auto q = ranked(a.getQuery()).getShape();
          c << "k::attention_forward<T>(" << n(a.getQuery()) << ", " << n(a.getKey())
            << ", " << n(a.getValue()) << ", " << n(a.getResult()) << ", "
            << n(a.getLogsumexp()) << ", " << q[0] << ", " << q[1] << ", " << q[2]
            << ", " << ranked(a.getKey()).getDimSize(2) << ", " << q[3] << ", "
            << lit(a.getScale().convertToDouble()) << ");";
        })
        .Case([&](AttentionGradOp a) {
          auto q = ranked(a.getQuery()).getShape();
          c << "k::attention_backward<T>(" << n(a.getGrad()) << ", " << n(a.getQuery())
            << ", " << n(a.getKey()) << ", " << n(a.getValue()) << ", "
            << n(a.getResult()) << ", " << n(a.getLogsumexp()) << ", "
            << n(a.getQueryGrad()) << ", " << n(a.getKeyGrad()) << ", "
            << n(a.getValueGrad()) << ", " << q[0] << ", " << q[1] << ", " << q[2]
            << ", " << ranked(a.getKey()).getDimSize(2) << ", " << q[3] << ", "
            << lit(a.getScale().convertToDouble()) << ");";
        })
        .Case([&](SwigluOp s) {
          c << "k::swiglu_forward<T>(" << n(s.getGate()) << ", " << n(s.getUp())
            << ", " << n(s.getResult()) << ", " << numel(s.getResult()) << ");";
        })
        .Case([&](SwigluGradOp s) {
          c << "k::swiglu_backward<T>(" << n(s.getGrad()) << ", " << n(s.getGate())
            << ", " << n(s.getUp()) << ", " << n(s.getGateGrad()) << ", "
            << n(s.getUpGrad()) << ", " << numel(s.getGrad()) << ");";
        })
        .Case([&](AddOp a) {
          c << "k::add<T>(" << n(a.getLhs()) << ", " << n(a.getRhs()) << ", "
            << n(a.getResult()) << ", " << numel(a.getResult()) << ");";
        })
        .Case([&](CrossEntropyOp x) {
          int64_t v = ranked(x.getLogits()).getShape().back();
          c << "k::cross_entropy_forward<T>(" << n(x.getLogits()) << ", "
            << n(x.getTargets()) << ", " << n(x.getResult()) << ", "
            << numel(x.getTargets()) << ", " << v << ", " << x.getIgnoreIndexAttr().getInt()
            << ");";
        })
        .Case([&](CrossEntropyGradOp x) {
          int64_t v = ranked(x.getLogits()).getShape().back();
          c << "k::cross_entropy_backward<T>(" << n(x.getGrad()) << ", "
            << n(x.getLogits()) << ", " << n(x.getTargets()) << ", "
            << n(x.getResult()) << ", " << numel(x.getTargets()) << ", " << v
            << ", " << x.getIgnoreIndexAttr().getInt() << ");";
        })
        .Case([&](RopeAtOp r) {
          auto sh = ranked(r.getInput()).getShape();
          c << "k::rope_forward_at<T>(" << n(r.getInput()) << ", " << n(r.getResult())
            << ", " << sh[0] << ", " << sh[1] << ", " << sh[2] << ", " << sh[3] << ", "
            << lit(r.getTheta().convertToDouble()) << ", " << n(r.getPosition()) << ", "
            << r.getMaxPositionsAttr().getInt() << ropeScaling(r) << ");";
        })
        .Case([&](AttentionCachedOp a) {
          auto q = ranked(a.getQuery()).getShape();
          c << "k::attention_cached_forward<T>(" << n(a.getQuery()) << ", "
            << n(a.getKey()) << ", " << n(a.getValue()) << ", " << n(a.getKeyCache())
            << ", " << n(a.getValueCache()) << ", " << n(a.getResult()) << ", " << q[0]
            << ", " << q[1] << ", " << q[2] << ", " << ranked(a.getKey()).getDimSize(2)
            << ", " << q[3] << ", " << ranked(a.getKeyCache()).getDimSize(1) << ", "
            << n(a.getPosition()) << ", " << lit(a.getScale().convertToDouble()) << ");";
        })
        .Case([&](LogitsMaxOp m) {
          int64_t v = ranked(m.getLogits()).getShape().back();
          c << "k::logits_row_max<T>(" << n(m.getLogits()) << ", " << n(m.getResult())
            << ", " << numel(m.getResult()) << ", " << v << ");";
        })
        .Case([&](CEPartialSumsOp p) {
          int64_t v = ranked(p.getLogits()).getShape().back();
          auto col0 = vocabOffset(p, p.getVocabShard(), v);
          if (failed(col0)) {
            failed_ = true;
            return;
          }
          int64_t vocab = p.getVocabShard() ? (*p.getVocabShard())[1] : v;
          c << "k::ce_partial_sums<T>(" << n(p.getLogits()) << ", " << n(p.getMax())
            << ", " << n(p.getTargets()) << ", " << n(p.getResult()) << ", "
            << numel(p.getTargets()) << ", " << v << ", " << *col0 << ", " << vocab
            << ", " << p.getIgnoreIndexAttr().getInt() << ");";
        })
        .Case([&](CEPartialSumsGradOp p) {
          int64_t v = ranked(p.getLogits()).getShape().back();
          auto col0 = vocabOffset(p, p.getVocabShard(), v);
          if (failed(col0)) {
            failed_ = true;
            return;
          }
          c << "k::ce_partial_sums_backward<T>(" << n(p.getGrad()) << ", "
            << n(p.getLogits()) << ", " << n(p.getMax()) << ", " << n(p.getTargets())
            << ", " << n(p.getResult()) << ", " << numel(p.getTargets()) << ", " << v
            << ", " << *col0 << ", " << p.getIgnoreIndexAttr().getInt() << ");";
        })
        .Case([&](CountValidOp cv) {
          c << "k::count_valid<T>(" << n(cv.getTargets()) << ", " << n(cv.getResult())
            << ", " << numel(cv.getTargets()) << ", " << cv.getIgnoreIndexAttr().getInt() << ");";
        })
        .Case([&](CECombineOp x) {
          c << "k::ce_combine<T>(" << n(x.getMax()) << ", " << n(x.getSums()) << ", "
            << n(x.getTargets()) << ", " << n(x.getCount()) << ", " << n(x.getResult())
            << ", " << numel(x.getTargets()) << ", " << x.getIgnoreIndexAttr().getInt() << ");";
        })
        .Case([&](CECombineGradOp x) {
          c << "k::ce_combine_backward<T>(" << n(x.getGrad()) << ", " << n(x.getSums())
            << ", " << n(x.getTargets()) << ", " << n(x.getCount()) << ", "
            << n(x.getResult()) << ", " << numel(x.getTargets()) << ", "
            << x.getIgnoreIndexAttr().getInt() << ");";
        })
        .Case([&](AddRMSNormOp r) {
          int64_t d = ranked(r.getWeight()).getDimSize(0);
          c << "k::add_rms_norm_forward<T>(" << n(r.getLhs()) << ", " << n(r.getRhs())
            << ", " << n(r.getWeight()) << ", " << n(r.getSum()) << ", "
            << n(r.getResult()) << ", " << n(r.getRstd()) << ", "
            << numel(r.getLhs()) / d << ", " << d << ", "
            << lit(r.getEps().convertToDouble()) << ");";
        })
        .Case([&](RMSNormRstdOp r) {
          int64_t d = ranked(r.getWeight()).getDimSize(0);
          c << "k::rms_norm_forward_rstd<T>(" << n(r.getX()) << ", " << n(r.getWeight())
            << ", " << n(r.getResult()) << ", " << n(r.getRstd()) << ", "
            << numel(r.getX()) / d << ", " << d << ", "
            << lit(r.getEps().convertToDouble()) << ");";
        })
        .Case([&](RMSNormGradRstdOp r) {
          int64_t d = ranked(r.getWeight()).getDimSize(0);
          c << "k::rms_norm_backward_rstd<T>(" << n(r.getGrad()) << ", " << n(r.getX())
            << ", " << n(r.getWeight()) << ", " << n(r.getRstd()) << ", "
            << (r.getAccumulate() ? n(r.getAccumulate()) : std::string("nullptr"))
            << ", " << n(r.getXGrad()) << ", " << n(r.getWeightGrad()) << ", "
            << numel(r.getX()) / d << ", " << d << ");";
        })
        .Case([&](CrossEntropyFusedOp x) {
          int64_t v = ranked(x.getLogits()).getShape().back();
          c << "k::cross_entropy_fused<T>(" << n(x.getLogits()) << ", "
            << n(x.getTargets()) << ", " << n(x.getLoss()) << ", "
            << n(x.getLogitsGrad()) << ", " << numel(x.getTargets()) << ", " << v
            << ", " << x.getIgnoreIndexAttr().getInt() << ", "
            << lit(x.getGradScale().convertToDouble()) << ");";
        })
        .Case([&](RopeQKOp r) {
          // Two calls of the CPU kernel: there is no launch to save here.
          const char *kernel = r.getInverse() ? "rope_backward" : "rope_forward";
          for (auto [in, out] : {std::pair(r.getQuery(), r.getQueryResult()),
                                 std::pair(r.getKey(), r.getKeyResult())}) {
            auto sh = ranked(in).getShape();
            c << "k::" << kernel << "<T>(" << n(in) << ", " << n(out) << ", "
              << sh[0] << ", " << sh[1] << ", " << sh[2] << ", " << sh[3] << ", "
              << lit(r.getTheta().convertToDouble()) << ropeScaling(r) << ");";
            if (in == r.getQuery())
              c << "\n  ";
          }
        })
        .Case([&](SumOp s) {
          c << "{ const T *in_[] = {";
          for (auto [i, v] : llvm::enumerate(s.getInputs()))
            c << (i ? ", " : "") << n(v);
          c << "}; k::sum<T>(in_, " << s.getInputs().size() << ", "
            << n(s.getResult()) << ", " << numel(s.getResult()) << "); }";
        })
        .Case<shard::AllReduceOp, shard::AllGatherOp, shard::ReduceScatterOp>(
            [&](Operation *coll) {
              if (failed(emitCollective(coll, c)))
                failed_ = true;
            })
        .Case([&](GradAllReduceOp) {})
        .Default([&](Operation *) { handled = false; });
    if (failed_)
      return failure();
    if (!handled)
      return op.emitOpError("has no CPU lowering");
    os << declarations;
    declarations.clear();
    if (!call.empty())
      os << "  " << call << "\n";
    return success();
  }

  /// The trailing arguments of a CPU RoPE call for a scaled rope op
  /// (", inv_freq, attention_factor"; plain RoPE: none). Each distinct set
  /// of frequencies becomes one static array of the function, declared
  /// before its first call.
  std::string ropeScaling(Operation *op) {
    RopeFrequencies f = getRopeFrequencies(op);
    if (!f.scaled())
      return "";
    std::string array = "nullptr";
    if (f.explicitFrequencies) {
      std::vector<double> key(f.invFreq.begin(), f.invFreq.end());
      auto [it, inserted] =
          ropeArrays.try_emplace(key, "rope_inv_freq_" + std::to_string(ropeArrays.size()));
      if (inserted) {
        llvm::raw_string_ostream d(declarations);
        d << "  static const double " << it->second << "[] = {";
        for (auto [i, v] : llvm::enumerate(key))
          d << (i ? ", " : "") << lit(v);
        d << "};\n";
      }
      array = it->second;
    }
    return ", " + array + ", " + lit(f.attentionFactor);
  }

  LogicalResult emitReturn(func::ReturnOp ret) {
    for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
      Operation *def = v.getDefiningOp();
      auto outputs = def ? def->getAttrOfType<DenseI64ArrayAttr>(kOutputAttr)
                         : DenseI64ArrayAttr();
      bool direct = outputs && llvm::is_contained(outputs.asArrayRef(),
                                                  static_cast<int64_t>(i));
      if (direct)
        continue;
      bool returnsLoss = kind == EntryKind::TrainStep || kind == EntryKind::EvalLoss;
      if (returnsLoss && i == 0) {
        os << "  *loss_ = static_cast<double>(*" << n(v) << ");\n";
        continue;
      }
      std::string dst = isTrainStep
                            ? "G + " + std::to_string(params[i - 1].offset)
                            : std::string("O");
      os << "  std::memcpy(" << dst << ", " << n(v) << ", sizeof(T) * "
         << numel(v) << ");\n";
    }
    os << "}\n\n";
    return success();
  }

  func::FuncOp fn;
  const std::vector<ParamEntry> &params;
  raw_ostream &os;
  EntryKind kind;
  bool isTrainStep;
  bool failed_ = false; // a case above reported an error
  DenseMap<Value, std::string> names;
  std::map<std::vector<double>, std::string> ropeArrays; // frequencies -> array name
  std::string declarations; // emitted before the next call
};
} // namespace

namespace llama {
LogicalResult emitCpuSource(ModuleOp module, raw_ostream &os, bool cudaDevice,
                            ArrayRef<int64_t> gradBucketBounds) {
  auto forward = module.lookupSymbol<func::FuncOp>("forward");
  auto step = module.lookupSymbol<func::FuncOp>("train_step");
  auto logits = module.lookupSymbol<func::FuncOp>("logits");
  // A partitioned program (llama-shard) has no @logits: generation runs the
  // single-rank program on the same, grid-independent checkpoint.
  int64_t gridDp = 1, gridTp = 1;
  if (auto grid = module->getAttrOfType<DenseI64ArrayAttr>(kGridAttr)) {
    if (grid.size() != 2 || grid[0] < 1 || grid[1] < 1)
      return module.emitError("llama.grid must be [dp, tp] with both >= 1");
    gridDp = grid[0];
    gridTp = grid[1];
  }
  const bool partitioned = gridDp * gridTp > 1;
  // A generation-only program (llama-compile --mode generate) has @forward
  // (eval_loss), @prefill and @decode, and no @train_step or @logits.
  const bool generateOnly = !step && module.lookupSymbol<func::FuncOp>("prefill");
  if (!forward || (!step && !generateOnly) ||
      (!logits && !partitioned && !generateOnly))
    return module.emitError("emission needs @forward, @train_step and @logits "
                            "(run the training pipeline)");
  SmallVector<func::FuncOp> planned{forward};
  if (step)
    planned.push_back(step);
  if (logits)
    planned.push_back(logits);
  for (auto fn : planned)
    if (!getArenaBytes(fn))
      return fn.emitError("has no memory plan (run llama-plan-memory)");

  // Parameters: the float arguments, laid out back to back in one buffer.
  std::vector<ParamEntry> params;
  int64_t offset = 0;
  Type elem;
  // Parameters: the float arguments of @train_step (the same as @forward's).
  func::FuncOp source = step ? step : forward;
  for (BlockArgument arg : source.getArguments()) {
    auto t = ranked(arg);
    if (!isa<FloatType>(t.getElementType()))
      continue;
    auto name = source.getArgAttrOfType<StringAttr>(arg.getArgNumber(), kParamNameAttr);
    if (!name)
      return source.emitError("parameter argument #")
             << arg.getArgNumber() << " has no llama.param_name";
    if (t.getRank() < 1 || t.getRank() > 4)
      return source.emitError("parameter '") << name.getValue() << "' must have rank 1 to 4";
    elem = t.getElementType();
    ParamEntry entry{name.getValue().str(), SmallVector<int64_t>(t.getShape()),
                     SmallVector<int64_t>(t.getShape()), -1, offset};
    if (auto full = source.getArgAttrOfType<DenseI64ArrayAttr>(arg.getArgNumber(),
                                                             kFullShapeAttr))
      entry.fullShape.assign(full.asArrayRef().begin(), full.asArrayRef().end());
    if (auto dim = source.getArgAttrOfType<IntegerAttr>(arg.getArgNumber(), kShardDimAttr))
      entry.shardDim = dim.getInt();
    if (entry.fullShape.size() != entry.shape.size())
      return source.emitError("parameter '") << name.getValue()
                                           << "': llama.full_shape has the wrong rank";
    for (size_t d = 0; d < entry.shape.size(); ++d) {
      int64_t parts = static_cast<int64_t>(d) == entry.shardDim ? gridTp : 1;
      if (entry.fullShape[d] != entry.shape[d] * parts)
        return source.emitError("parameter '")
               << name.getValue() << "': local shape and llama.full_shape disagree";
    }
    params.push_back(std::move(entry));
    offset += t.getNumElements();
  }
  int64_t fullOffset = 0;
  for (const auto &p : params)
    fullOffset += product(p.fullShape);
  if (params.empty())
    return source.emitError("the model has no parameters");
  std::set<std::string> seen;
  for (const auto &p : params)
    if (!seen.insert(p.name).second)
      return source.emitError("parameter name '") << p.name << "' is used twice";

  Value tokens, targets;
  for (BlockArgument arg : source.getArguments())
    if (auto role = source.getArgAttrOfType<StringAttr>(arg.getArgNumber(), kInputAttr))
      (role.getValue() == "tokens" ? tokens : targets) = arg;
  if (!tokens || !targets || ranked(tokens).getRank() != 2)
    return source.emitError("@forward needs [batch, seq] i32 arguments marked "
                          "llama.input = \"tokens\" and \"targets\"");
  // The vocabulary and ignore_index: from the cross-entropy, or from the
  // partitioned pieces it became.
  int64_t vocab = -1, ignoreIndex = -100;
  source.walk([&](CrossEntropyOp op) {
    vocab = ranked(op.getLogits()).getShape().back();
    ignoreIndex = op.getIgnoreIndexAttr().getInt();
  });
  source.walk([&](CrossEntropyFusedOp op) {
    vocab = ranked(op.getLogits()).getShape().back();
    ignoreIndex = op.getIgnoreIndexAttr().getInt();
  });
  source.walk([&](CEPartialSumsOp op) {
    vocab = op.getVocabShard() ? (*op.getVocabShard())[1]
                               : ranked(op.getLogits()).getShape().back();
    ignoreIndex = op.getIgnoreIndexAttr().getInt();
  });
  if (vocab < 0)
    return source.emitError("the model has no llama.cross_entropy");
  Value genTokens;
  if (logits) {
    for (BlockArgument arg : logits.getArguments())
      if (logits.getArgAttrOfType<StringAttr>(arg.getArgNumber(), kInputAttr))
        genTokens = arg;
    if (!genTokens)
      return logits.emitError("@logits has no token argument");
  }

  auto model = module->getAttrOfType<StringAttr>(kModelNameAttr);
  auto config = module->getAttrOfType<StringAttr>(kConfigAttr);
  auto tokShape = ranked(tokens).getShape();
  auto arenaBytes = [](func::FuncOp fn) { return *getArenaBytes(fn); };

  os << "// Generated by llama-compile";
  if (model)
    os << " for model '" << model.getValue() << "'";
  os << ". Do not edit: regenerate.\n"
        "#include \"runtime/comm/comm.h\"\n"
        "#include \"runtime/cpu/kernels.h\"\n"
        "#include \"runtime/program/program.h\"\n\n"
        "#include <algorithm>\n#include <cstring>\n\n"
        "namespace {\n"
        "using T = " << (elem.isF64() ? "double" : "float") << ";\n"
        "namespace k = llamart::cpu;\n\n";
  if ((step &&
       failed(FunctionEmitter(step, params, os, EntryKind::TrainStep).emit())) ||
      (logits &&
       failed(FunctionEmitter(logits, params, os, EntryKind::Logits).emit())) ||
      failed(FunctionEmitter(forward, params, os, EntryKind::EvalLoss).emit()))
    return failure();
  // Generation with a KV cache (llama-compile adds @prefill and @decode to
  // single-process programs).
  auto prefill = module.lookupSymbol<func::FuncOp>("prefill");
  auto decode = module.lookupSymbol<func::FuncOp>("decode");
  if (static_cast<bool>(prefill) != static_cast<bool>(decode))
    return module.emitError("@prefill and @decode come together");
  int64_t kvBytes = 0, kvCapacity = 0, prefillChunk = 0, genBatch = 0;
  if (logits)
    genBatch = ranked(genTokens).getDimSize(0);
  if (prefill) {
    for (auto fn : {prefill, decode})
      if (!getArenaBytes(fn))
        return fn.emitError("has no memory plan (run llama-plan-memory)");
    for (BlockArgument arg : prefill.getArguments())
      if (prefill.getArgAttr(arg.getArgNumber(), kKvCacheAttr)) {
        kvBytes += numel(arg) * (elem.getIntOrFloatBitWidth() / 8);
        kvCapacity = ranked(arg).getDimSize(1);
      }
    for (BlockArgument arg : prefill.getArguments())
      if (auto role = prefill.getArgAttrOfType<StringAttr>(arg.getArgNumber(), kInputAttr);
          role && role.getValue() == "tokens") {
        prefillChunk = ranked(arg).getDimSize(1);
        if (genBatch && genBatch != ranked(arg).getDimSize(0))
          return prefill.emitError("@prefill and @logits must have the same batch");
        genBatch = ranked(arg).getDimSize(0);
      }
    if (failed(FunctionEmitter(prefill, params, os, EntryKind::Prefill).emit()) ||
        failed(FunctionEmitter(decode, params, os, EntryKind::Decode).emit()))
      return failure();
  }

  os << "const llamart::ParamInfo kParams[] = {\n";
  for (const auto &p : params) {
    os << "    {" << cString(p.name) << ", " << p.shape.size() << ", {";
    for (size_t d = 0; d < 4; ++d)
      os << (d ? ", " : "") << (d < p.shape.size() ? p.shape[d] : 0);
    int64_t count = 1;
    for (int64_t d : p.shape)
      count *= d;
    os << "}, " << count << ", " << p.offset << ", "
       << (p.shape.size() == 1 ? "llamart::ParamInit::Ones"
                               : "llamart::ParamInit::Normal")
       << ", " << p.shardDim << ", {";
    for (size_t d = 0; d < 4; ++d)
      os << (d ? ", " : "") << (d < p.fullShape.size() ? p.fullShape[d] : 0);
    os << "}},\n";
  }
  os << "};\n\n";
  // HF's default initializer_range when the module does not say.
  double initStd = 0.02;
  if (auto attr = module->getAttrOfType<FloatAttr>(kInitStdAttr))
    initStd = attr.getValueAsDouble();
  // The device side (EmitCuda, session = true): the training session where
  // there is a train step, the generator where there are KV-cache functions.
  const bool deviceTrain = cudaDevice && step, deviceGenerate = cudaDevice && prefill && decode;
  if (deviceTrain || deviceGenerate) {
    os << "} // namespace\n\n// Defined by the generated CUDA source (EmitCuda, session = true).\n";
    if (deviceTrain)
      os << "llamart::DeviceSession *llama_cuda_open_device(const llamart::ProgramInfo &);\n";
    if (deviceGenerate)
      os << "llamart::DeviceGenerator *llama_cuda_open_generator(const "
            "llamart::ProgramInfo &);\n";
    os << "\nnamespace {\n";
  }
  if (!gradBucketBounds.empty()) {
    os << "// The ZeRO-1 gradient buckets of the device train step (EmitCuda).\n"
          "const int64_t kGradBucketBounds[] = {";
    for (auto [i, b] : llvm::enumerate(gradBucketBounds))
      os << (i ? ", " : "") << b;
    os << "};\n\n";
  }
  os << "const llamart::ProgramInfo kProgram = {\n"
     << "    llamart::kProgramAbiVersion,\n"
     << "    " << cString(model ? model.getValue() : "model") << ",\n"
     << "    " << cString(config ? config.getValue() : "{}") << ",\n"
     << "    " << (elem.isF64() ? "llamart::DType::F64" : "llamart::DType::F32") << ",\n"
     << "    /*batch=*/" << tokShape[0] << ", /*seq_len=*/" << tokShape[1]
     << ", /*vocab_size=*/" << vocab << ", /*ignore_index=*/" << ignoreIndex
     << ",\n"
     << "    /*num_params=*/" << params.size() << ", kParams, /*param_numel=*/"
     << offset << ", /*init_std=*/" << lit(initStd) << ",\n"
     << "    /*train_arena_bytes=*/" << (step ? arenaBytes(step) : 0) << ", "
     << (step ? "train_step" : "nullptr") << ",\n"
     << "    /*gen_batch=*/" << genBatch
     << ", /*logits_arena_bytes=*/" << (logits ? arenaBytes(logits) : 0) << ", "
     << (logits ? "logits" : "nullptr") << ",\n"
     << "    /*eval_arena_bytes=*/" << arenaBytes(forward) << ", eval_loss,\n"
     << "    /*grid_dp=*/" << gridDp << ", /*grid_tp=*/" << gridTp
     << ", /*sequence_parallel=*/"
     << (module->hasAttr(kSequenceParallelAttr) ? 1 : 0)
     << ", /*global_batch=*/" << tokShape[0] * gridDp
     << ", /*full_param_numel=*/" << fullOffset << ",\n"
     << "    /*kv_capacity=*/" << kvCapacity << ", /*kv_cache_bytes=*/" << kvBytes
     << ", /*prefill_chunk=*/" << prefillChunk << ",\n"
     << "    /*prefill_arena_bytes=*/" << (prefill ? arenaBytes(prefill) : 0) << ", "
     << (prefill ? "prefill" : "nullptr") << ",\n"
     << "    /*decode_arena_bytes=*/" << (decode ? arenaBytes(decode) : 0) << ", "
     << (decode ? "decode" : "nullptr") << ",\n"
     << "    /*target=*/" << (cudaDevice ? "\"cuda\", " : "\"cpu\", ")
     << (deviceTrain ? "llama_cuda_open_device" : "nullptr") << ",\n"
     << "    /*num_grad_buckets=*/"
     << (gradBucketBounds.empty() ? std::string("0, nullptr")
                                  : std::to_string(gradBucketBounds.size() - 1) +
                                        ", kGradBucketBounds")
     << ",\n"
     << "    /*open_generator=*/"
     << (deviceGenerate ? "llama_cuda_open_generator" : "nullptr") << ",\n"
     << "};\n"
     << "} // namespace\n\n"
     << "extern \"C\" const llamart::ProgramInfo *llamart_program() { return &kProgram; }\n";
  return success();
}
} // namespace llama
