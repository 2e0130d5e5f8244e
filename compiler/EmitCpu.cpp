//===- EmitCpu.cpp - C++ source for the CPU runtime ----------------------===//
//
// Straight-line code: one kernel call per op, every shape a literal, every
// tensor a constant offset into the arena, a parameter or an output buffer.
// Views (reshape) cost nothing: they resolve to their root's pointer.
//
//===----------------------------------------------------------------------===//
#include "compiler/EmitCpu.h"

#include "dialects/llama/IR/LlamaOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"

#include <map>
#include <set>

using namespace mlir;
using namespace mlir::llama;

namespace {
RankedTensorType ranked(Value v) { return cast<RankedTensorType>(v.getType()); }
int64_t numel(Value v) { return ranked(v).getNumElements(); }
std::string lit(double d) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << llvm::format("%.17g", d);
  return s;
}
std::string cString(StringRef s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\')
      out += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) {
      out += llvm::formatv("\\x{0:x-2}", static_cast<unsigned>(ch)).str();
      continue;
    }
    out += ch;
  }
  return out + "\"";
}

struct ParamEntry {
  std::string name;
  SmallVector<int64_t> shape;
  int64_t offset;
};

/// The three entry points of a program (runtime/train/program.h).
enum class EntryKind { TrainStep, Logits, EvalLoss };

class FunctionEmitter {
public:
  FunctionEmitter(func::FuncOp fn, const std::vector<ParamEntry> &params,
                  raw_ostream &os, EntryKind kind)
      : fn(fn), params(params), os(os), kind(kind),
        isTrainStep(kind == EntryKind::TrainStep) {}

  LogicalResult emit() {
    // Arguments: parameters (float) in order, then token inputs.
    unsigned p = 0;
    for (BlockArgument arg : fn.getArguments()) {
      if (isa<FloatType>(ranked(arg).getElementType())) {
        names[arg] = "(P + " + std::to_string(params[p++].offset) + ")";
        continue;
      }
      auto role = fn.getArgAttrOfType<StringAttr>(arg.getArgNumber(), kInputAttr);
      if (!role || (role.getValue() != "tokens" && role.getValue() != "targets"))
        return fn.emitError("integer argument #")
               << arg.getArgNumber()
               << " needs llama.input = \"tokens\" or \"targets\"";
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
    if (auto reshape = dyn_cast<ReshapeOp>(op)) {
      names[reshape.getResult()] = names.lookup(reshape.getInput());
      return success();
    }
    auto offsets = op.getAttrOfType<DenseI64ArrayAttr>("llama.offset");
    auto outputs = op.getAttrOfType<DenseI64ArrayAttr>("llama.output");
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
          c << "k::embedding_forward<T>(" << n(e.getTable()) << ", " << n(e.getIds())
            << ", " << n(e.getResult()) << ", " << numel(e.getIds()) << ", "
            << t.getDimSize(0) << ", " << t.getDimSize(1) << ");";
        })
        .Case([&](EmbeddingGradOp e) {
          auto t = ranked(e.getResult());
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
            << lit(r.getTheta().convertToDouble()) << ");";
        })
        .Case([&](RopeGradOp r) {
          auto s = ranked(r.getGrad()).getShape();
          c << "k::rope_backward<T>(" << n(r.getGrad()) << ", " << n(r.getResult())
            << ", " << s[0] << ", " << s[1] << ", " << s[2] << ", " << s[3] << ", "
            << lit(r.getTheta().convertToDouble()) << ");";
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
        .Default([&](Operation *) { handled = false; });
    if (!handled)
      return op.emitOpError("has no CPU lowering");
    if (!call.empty())
      os << "  " << call << "\n";
    return success();
  }

  LogicalResult emitReturn(func::ReturnOp ret) {
    for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
      Operation *def = v.getDefiningOp();
      auto outputs = def ? def->getAttrOfType<DenseI64ArrayAttr>("llama.output")
                         : DenseI64ArrayAttr();
      bool direct = outputs && llvm::is_contained(outputs.asArrayRef(),
                                                  static_cast<int64_t>(i));
      if (direct)
        continue;
      if (kind != EntryKind::Logits && i == 0) {
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
  DenseMap<Value, std::string> names;
};
} // namespace

namespace llama {
LogicalResult emitCpuSource(ModuleOp module, raw_ostream &os) {
  auto forward = module.lookupSymbol<func::FuncOp>("forward");
  auto step = module.lookupSymbol<func::FuncOp>("train_step");
  auto logits = module.lookupSymbol<func::FuncOp>("logits");
  if (!forward || !step || !logits)
    return module.emitError("emission needs @forward, @train_step and @logits "
                            "(run the training pipeline)");
  for (auto fn : {forward, step, logits})
    if (!fn->hasAttr("llama.arena_bytes"))
      return fn.emitError("has no memory plan (run llama-plan-memory)");

  // Parameters: the float arguments, laid out back to back in one buffer.
  std::vector<ParamEntry> params;
  int64_t offset = 0;
  Type elem;
  for (BlockArgument arg : step.getArguments()) {
    auto t = ranked(arg);
    if (!isa<FloatType>(t.getElementType()))
      continue;
    auto name = step.getArgAttrOfType<StringAttr>(arg.getArgNumber(), kParamNameAttr);
    if (!name)
      return step.emitError("parameter argument #")
             << arg.getArgNumber() << " has no llama.param_name";
    if (t.getRank() < 1 || t.getRank() > 4)
      return step.emitError("parameter '") << name.getValue() << "' must have rank 1 to 4";
    elem = t.getElementType();
    params.push_back({name.getValue().str(), SmallVector<int64_t>(t.getShape()), offset});
    offset += t.getNumElements();
  }
  if (params.empty())
    return step.emitError("the model has no parameters");
  std::set<std::string> seen;
  for (const auto &p : params)
    if (!seen.insert(p.name).second)
      return step.emitError("parameter name '") << p.name << "' is used twice";

  Value tokens, targets;
  for (BlockArgument arg : step.getArguments())
    if (auto role = step.getArgAttrOfType<StringAttr>(arg.getArgNumber(), kInputAttr))
      (role.getValue() == "tokens" ? tokens : targets) = arg;
  if (!tokens || !targets || ranked(tokens).getRank() != 2)
    return step.emitError("@forward needs [batch, seq] i32 arguments marked "
                          "llama.input = \"tokens\" and \"targets\"");
  CrossEntropyOp ce;
  step.walk([&](CrossEntropyOp op) { ce = op; });
  if (!ce)
    return step.emitError("the model has no llama.cross_entropy");
  Value genTokens;
  for (BlockArgument arg : logits.getArguments())
    if (logits.getArgAttrOfType<StringAttr>(arg.getArgNumber(), kInputAttr))
      genTokens = arg;
  if (!genTokens)
    return logits.emitError("@logits has no token argument");

  auto model = module->getAttrOfType<StringAttr>("llama.model_name");
  auto config = module->getAttrOfType<StringAttr>("llama.config");
  auto tokShape = ranked(tokens).getShape();
  auto arenaBytes = [](func::FuncOp fn) {
    return fn->getAttrOfType<IntegerAttr>("llama.arena_bytes").getInt();
  };

  os << "// Generated by llama-compile";
  if (model)
    os << " for model '" << model.getValue() << "'";
  os << ". Do not edit: regenerate.\n"
        "#include \"runtime/cpu/kernels.h\"\n"
        "#include \"runtime/train/program.h\"\n\n"
        "#include <algorithm>\n#include <cstring>\n\n"
        "namespace {\n"
        "using T = " << (elem.isF64() ? "double" : "float") << ";\n"
        "namespace k = llamart::cpu;\n\n";
  if (failed(FunctionEmitter(step, params, os, EntryKind::TrainStep).emit()) ||
      failed(FunctionEmitter(logits, params, os, EntryKind::Logits).emit()) ||
      failed(FunctionEmitter(forward, params, os, EntryKind::EvalLoss).emit()))
    return failure();

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
       << "},\n";
  }
  os << "};\n\n";
  // HF's default initializer_range when the module does not say.
  double initStd = 0.02;
  if (auto attr = module->getAttrOfType<FloatAttr>("llama.init_std"))
    initStd = attr.getValueAsDouble();
  os << "const llamart::ProgramInfo kProgram = {\n"
     << "    llamart::kProgramAbiVersion,\n"
     << "    " << cString(model ? model.getValue() : "model") << ",\n"
     << "    " << cString(config ? config.getValue() : "{}") << ",\n"
     << "    " << (elem.isF64() ? "llamart::DType::F64" : "llamart::DType::F32") << ",\n"
     << "    /*batch=*/" << tokShape[0] << ", /*seq_len=*/" << tokShape[1]
     << ", /*vocab_size=*/" << ranked(ce.getLogits()).getShape().back()
     << ", /*ignore_index=*/" << ce.getIgnoreIndexAttr().getInt() << ",\n"
     << "    /*num_params=*/" << params.size() << ", kParams, /*param_numel=*/"
     << offset << ", /*init_std=*/" << lit(initStd) << ",\n"
     << "    /*train_arena_bytes=*/" << arenaBytes(step) << ", train_step,\n"
     << "    /*gen_batch=*/" << ranked(genTokens).getDimSize(0)
     << ", /*logits_arena_bytes=*/" << arenaBytes(logits) << ", logits,\n"
     << "    /*eval_arena_bytes=*/" << arenaBytes(forward) << ", eval_loss,\n"
     << "};\n"
     << "} // namespace\n\n"
     << "extern \"C\" const llamart::ProgramInfo *llamart_program() { return &kProgram; }\n";
  return success();
}
} // namespace llama
