//===- EmitCuda.cpp - CUDA kernels from the fused llama ops --------------===//
//
// Prints what the IR says as CUDA: one launcher per distinct op (op, buffer
// types, shapes, own attributes) that instantiates a kernel family of
// runtime/cuda/kernels/ (norms, elementwise, RoPE, cross-entropy, embedding,
// attention, cached attention) with the shapes as template arguments, and
// the host functions (train step, evaluation, prefill, decode) that launch
// them, the cuBLASLt GEMMs and the collectives in program order at the
// memory plan's offsets. The decisions are passes run on a copy of the
// module first (llama-assign-precision, llama-schedule-collectives,
// llama-plan-memory{storage-bytes}, llama-plan-grad-buckets); the emitter
// checks its launchers against them; no kernel is printed as text.
//===----------------------------------------------------------------------===//
#include "compiler/EmitCuda.h"
#include "compiler/EmitUtil.h"

#include "dialects/llama/IR/LlamaOps.h"
#include "passes/Passes.h"
#include "passes/lowering/Collectives.h"
#include "passes/lowering/PlanGradBuckets.h"
#include "runtime/cuda/kernels/shapes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Format.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <map>
#include <optional>
#include <set>

using namespace mlir;
using namespace mlir::llama;

namespace {

using ::llama::emit::cString;
using ::llama::CudaStorage;
using ::llama::emit::lit;
using ::llama::emit::product;
using ::llama::emit::numel;
using ::llama::emit::ranked;

/// A float literal that round-trips the fp32 value (9 significant digits).
std::string litf(double d) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << llvm::format("%.9g", static_cast<double>(static_cast<float>(d)));
  if (s.find_first_of(".e") == std::string::npos)
    s += ".0";
  return s + "f";
}

// The kernel families (runtime/cuda/kernels/*.cuh) the launchers
// instantiate, and the scalar helpers the kernels still emitted here use.
const char *kPrelude = R"(#include "runtime/cuda/kernels/attention.cuh"
#include "runtime/cuda/kernels/attention_cached.cuh"
#include "runtime/cuda/kernels/flash_attention.cuh"
#include "runtime/cuda/kernels/flash_attention_sm90.cuh"
#include "runtime/cuda/kernels/cross_entropy.cuh"
#include "runtime/cuda/kernels/cross_entropy_parallel.cuh"
#include "runtime/cuda/kernels/elementwise.cuh"
#include "runtime/cuda/kernels/embedding.cuh"
#include "runtime/cuda/kernels/norms.cuh"
#include "runtime/cuda/kernels/rope.cuh"

// ABFT checks of the GEMMs (--verify-gemm-every, --inject bitflip).
#include "runtime/cuda/gemm_check.inl"

)";

// The GEMMs of the host step: cuBLASLt on the GPU, the CPU runtime's BLAS
// matmul under emulation. fp32 storage: fp32 operands and products.
const char *kGemmF32 = R"(#ifdef LLAMA_CUDA_EMULATE
#include "runtime/cpu/kernels.h"
namespace llamart::cuda { class LtGemm; }
inline void llama_gemm(llamart::cuda::LtGemm *, cudaStream_t s, const float *a,
                       const float *b, float *c, int64_t batch, int64_t m,
                       int64_t n, int64_t k, bool ta, bool tb, bool shared) {
  llamart::cpu::matmul<float>(a, b, c, batch, m, n, k, ta, tb, shared);
  llama_abft::after_gemm(s, a, b, c, batch, m, n, k, ta, tb, shared);
}
inline void llama_copy(void *dst, const void *src, size_t bytes, cudaStream_t) {
  std::memcpy(dst, src, bytes);
}
#else
#include "runtime/cuda/check.h"
#include "runtime/cuda/lt_gemm.h"
inline void llama_gemm(llamart::cuda::LtGemm *g, cudaStream_t s, const float *a,
                       const float *b, float *c, int64_t batch, int64_t m,
                       int64_t n, int64_t k, bool ta, bool tb, bool shared) {
  g->matmul(s, a, b, c, llamart::cuda::OutType::F32, batch, m, n, k, ta, tb,
            shared, false, llamart::cuda::InType::F32);
  llama_abft::after_gemm(s, a, b, c, batch, m, n, k, ta, tb, shared);
}
inline void llama_copy(void *dst, const void *src, size_t bytes, cudaStream_t s) {
  LLAMART_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
}
#endif

)";

// bf16 storage: bf16 operands, fp32 accumulation, a bf16 product or an fp32
// one (weight gradients), chosen by the type of C. Under emulation the
// operands are widened to fp32 (exactly) and the product rounded once.
const char *kGemmBF16 = R"(#ifdef LLAMA_CUDA_EMULATE
#include "runtime/cpu/kernels.h"
#include <vector>
namespace llamart::cuda { class LtGemm; }
inline void llama_widen(const __nv_bfloat16 *x, std::vector<float> &out, int64_t n) {
  out.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i)
    out[size_t(i)] = __bfloat162float(x[i]);
}
inline void llama_store(float *c, const std::vector<float> &v) {
  std::memcpy(c, v.data(), v.size() * sizeof(float));
}
inline void llama_store(__nv_bfloat16 *c, const std::vector<float> &v) {
  for (size_t i = 0; i < v.size(); ++i)
    c[i] = __float2bfloat16(v[i]);
}
template <typename C>
void llama_gemm(llamart::cuda::LtGemm *, cudaStream_t s, const __nv_bfloat16 *a,
                const __nv_bfloat16 *b, C *c, int64_t batch, int64_t m, int64_t n,
                int64_t k, bool ta, bool tb, bool shared) {
  std::vector<float> a32, b32, c32(size_t(batch * m * n));
  llama_widen(a, a32, batch * m * k);
  llama_widen(b, b32, (shared ? 1 : batch) * k * n);
  llamart::cpu::matmul<float>(a32.data(), b32.data(), c32.data(), batch, m, n, k, ta,
                              tb, shared);
  llama_store(c, c32);
  llama_abft::after_gemm(s, a, b, c, batch, m, n, k, ta, tb, shared);
}
inline void llama_copy(void *dst, const void *src, size_t bytes, cudaStream_t) {
  std::memcpy(dst, src, bytes);
}
#else
#include "runtime/cuda/check.h"
#include "runtime/cuda/lt_gemm.h"
inline llamart::cuda::OutType llama_out_type(const float *) {
  return llamart::cuda::OutType::F32;
}
inline llamart::cuda::OutType llama_out_type(const __nv_bfloat16 *) {
  return llamart::cuda::OutType::BF16;
}
template <typename C>
void llama_gemm(llamart::cuda::LtGemm *g, cudaStream_t s, const __nv_bfloat16 *a,
                const __nv_bfloat16 *b, C *c, int64_t batch, int64_t m, int64_t n,
                int64_t k, bool ta, bool tb, bool shared) {
  g->matmul(s, a, b, c, llama_out_type(c), batch, m, n, k, ta, tb, shared, false,
            llamart::cuda::InType::BF16);
  llama_abft::after_gemm(s, a, b, c, batch, m, n, k, ta, tb, shared);
}
inline void llama_copy(void *dst, const void *src, size_t bytes, cudaStream_t s) {
  LLAMART_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
}
#endif

)";

class CudaEmitter {
public:
  CudaEmitter(raw_ostream &out, const ::llama::CudaEmitOptions &options)
      : out(out), options(options) {}

  LogicalResult emitModule(ModuleOp module) {
    os << "// Generated by llama-compile --target cuda. Do not edit: regenerate.\n"
       << kPrelude;
    os << "typedef " << (options.activations == CudaStorage::BF16 ? "__nv_bfloat16" : "float")
       << " act_t;\n\n";
    if (auto g = module->getAttrOfType<DenseI64ArrayAttr>(kGridAttr); g && g.size() == 2) {
      grid[0] = g[0];
      grid[1] = g[1];
    }
    if (grid[0] * grid[1] > 1)
      os << "// A partitioned program: its collectives (NCCL on the GPU; the\n"
         << "// implementation is the library the binary links).\n"
         << "#include \"runtime/cuda/collectives.h\"\n\n";
    os << (options.activations == CudaStorage::F32 ? kGemmF32 : kGemmBF16);
    readPrecision(module);
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (fn.isExternal())
        continue;
      for (Operation &op : fn.getBody().front()) {
        if (isa<func::ReturnOp>(op) || isViewOp(&op) || isa<MatmulOp>(op) ||
            op.getDialect()->getNamespace() != "llama")
          continue; // GEMMs: cuBLASLt; views: no code
        // Named by its place among the distinct launchers (shared by every
        // function and layer that runs the same kernel).
        std::string name = "op_" + std::to_string(entries.size()) + "_" +
                           op.getName().stripDialect().str();
        const size_t mark = text.size();
        if (failed(emitOp(op, name)))
          return failure();
        assert(entries.back().name == name); // emitOp added exactly one
        // Identical kernels (same op, buffer types, shapes and attributes)
        // exist once: every layer launches the first one's launcher.
        auto [it, isNew] = launcherByKey.try_emplace(kernelKey(op, entries.back()),
                                                     entries.size() - 1);
        if (!isNew) {
          entries.pop_back();
          text.resize(mark);
        }
        launcherOf[&op] = it->second;
      }
    }
    auto step = module.lookupSymbol<func::FuncOp>("train_step");
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    // Generation's KV-cache functions (single-process programs have them).
    auto prefill = module.lookupSymbol<func::FuncOp>("prefill");
    auto decode = module.lookupSymbol<func::FuncOp>("decode");
    const bool generation = prefill && decode;
    const bool partitioned = grid[0] * grid[1] > 1;
    if (failed(checkStorage(module)))
      return failure();
    if (step && failed(emitHostFunction(step, Host::Train)))
      return failure();
    if (options.session) {
      if (step && !forward)
        return module.emitError("a CUDA training binary needs @forward beside @train_step");
      if (!step && !generation)
        return module.emitError(
            "a CUDA binary needs @train_step and @forward, or @prefill and @decode");
      if (step && failed(emitHostFunction(forward, Host::Eval)))
        return failure();
    }
    if (generation && (failed(emitHostFunction(prefill, Host::Prefill)) ||
                       failed(emitHostFunction(decode, Host::Decode))))
      return failure();
    os << "struct LlamaCudaOp {\n  const char *name, *op, *types, *shapes, *attrs;\n"
          "  void (*launch)(void *const *, void *, cudaStream_t);\n"
          "  size_t workspace_bytes;\n};\n\n"
          "extern \"C\" const LlamaCudaOp llama_cuda_ops[] = {\n";
    for (const Entry &e : entries)
      os << "    {\"" << e.name << "\", \"" << e.op << "\", \"" << e.types << "\", \""
         << e.shapes << "\", " << e.attrs << ", &" << e.name << ", " << e.workspace
         << "},\n";
    os << "};\nextern \"C\" const size_t llama_cuda_op_count = " << entries.size()
       << ";\n";
    if (step && forward)
      figures = {arenaBytes(step), arenaBytes(forward), std::max<int64_t>(maxWorkspace, 4),
                 gemmMaxDim};
    figures.collectives = collectiveCount;
    figures.overlappedCollectives = overlappedCollectives;
    figures.overlappedOps = overlappedOps;
    figures.stagingBytes = stagingBytes;
    figures.gradBucketBounds = bucketBounds;
    figures.trainComputeOps = trainComputeOps;
    figures.opsAfterFirstBucket = opsAfterFirstBucket;
    figures.opsBeforeLastGather = opsBeforeLastGather;
    if (collectiveCount)
      os << "// " << collectiveCount << " collectives; " << overlappedCollectives
         << " of them overlap " << overlappedOps << " kernels and GEMMs in all.\n";
    if (!bucketBounds.empty())
      os << "// " << bucketBounds.size() - 1 << " gradient buckets; their reduce-scatters "
         << "overlap the last " << opsAfterFirstBucket << " of the train step's "
         << trainComputeOps << " kernels and GEMMs; their parameter all-gathers (started "
         << "by the next step) the first " << opsBeforeLastGather << ".\n";
    if (options.session && step)
      os << "\n// The device session of the training binary (runtime/cuda/session.h;\n"
         << "// compiled once into the runtime's CUDA library).\n"
         << "#include \"runtime/cuda/session.h\"\n\n"
         << "llamart::DeviceSession *llama_cuda_open_device(const llamart::ProgramInfo "
            "&program) {\n"
         << "  llamart::cuda::StepProgram<act_t> s;\n"
         << "  s.train_step = llama_cuda_train_step;\n"
         << "  s.eval_loss = llama_cuda_eval_loss;\n"
         << "  s.train_arena_bytes = " << arenaBytes(step) << ";\n"
         << "  s.eval_arena_bytes = " << arenaBytes(forward) << ";\n"
         << "  s.workspace_bytes = " << std::max<int64_t>(maxWorkspace, 4) << ";\n"
         << "  s.gemm_count = " << gemmCount << ";\n"
         << "  s.gemm_max_dim = " << gemmMaxDim << ";\n"
         << "  s.collective_staging_bytes = " << stagingBytes << ";\n"
         << "  s.partitioned = " << (grid[0] * grid[1] > 1 ? "true" : "false") << ";\n"
         << (grid[0] * grid[1] > 1 ? "  s.make_communicator = llama_coll::make_communicator;\n"
                                    : "")
         << "  return llamart::cuda::open_session(program, s);\n}\n";
    if (options.session && generation) {
      Value tokensArg = tokensOf(prefill);
      if (!tokensArg)
        return prefill.emitError("has no token input");
      auto tok = ranked(tokensArg);
      auto logits = cast<RankedTensorType>(prefill.getResultTypes()[0]);
      figures.prefillArenaBytes = arenaBytes(prefill);
      figures.decodeArenaBytes = arenaBytes(decode);
      figures.kvCacheElements = kvCacheElements;
      figures.genRows = tok.getDimSize(0);
      figures.genChunk = tok.getDimSize(1);
      figures.vocab = logits.getShape().back();
      figures.workspaceBytes = std::max<int64_t>(maxWorkspace, 4);
      os << "\n// Generation on the device (runtime/cuda/generator.h; compiled once into\n"
         << "// the runtime's CUDA library).\n"
         << "#include \"runtime/cuda/generator.h\"\n\n"
         << "llamart::DeviceGenerator *llama_cuda_open_generator(const llamart::ProgramInfo "
            "&program) {\n"
         << "  llamart::cuda::GenerateProgram<act_t> g;\n"
         << "  g.prefill = llama_cuda_prefill;\n"
         << "  g.decode = llama_cuda_decode;\n"
         << "  g.prefill_arena_bytes = " << arenaBytes(prefill) << ";\n"
         << "  g.decode_arena_bytes = " << arenaBytes(decode) << ";\n"
         << "  g.workspace_bytes = " << std::max<int64_t>(maxWorkspace, 4) << ";\n"
         << "  g.kv_cache_elements = " << kvCacheElements << ";\n"
         << "  g.rows = " << tok.getDimSize(0) << ";\n"
         << "  g.chunk = " << tok.getDimSize(1) << ";\n"
         << "  g.vocab = " << logits.getShape().back() << ";\n"
         << "  return llamart::cuda::open_generator(program, g);\n}\n";
    }
    out << text;
    return success();
  }

private:
  /// The host functions: the train step, @forward's loss, generation's
  /// prefill and decode.
  enum class Host { Train, Eval, Prefill, Decode };

  /// A function's token input (`llama.input = "tokens"`).
  static Value tokensOf(func::FuncOp fn) {
    for (BlockArgument arg : fn.getArguments())
      if (auto role = fn.getArgAttrOfType<StringAttr>(arg.getArgNumber(), kInputAttr);
          role && role.getValue() == "tokens")
        return arg;
    return Value();
  }

  struct Entry {
    std::string name, op, types, shapes, attrs;
    int64_t workspace;
  };

  /// One char per buffer (operands, then results): 'i' for integer tensors,
  /// 'f' where `fp32` says so or the value is kept in fp32 (fp32Values),
  /// 'a' (activation type) otherwise.
  std::string types(Operation &op, ArrayRef<bool> fp32) const {
    std::string t;
    size_t i = 0;
    for (Value v : llvm::concat<Value>(op.getOperands(), op.getResults())) {
      bool isInt = isa<IntegerType>(ranked(v).getElementType());
      t += isInt ? 'i'
                 : ((i < fp32.size() && fp32[i]) || fp32Values.contains(v) ? 'f' : 'a');
      ++i;
    }
    return t;
  }

  static const char *typeName(char t) {
    return t == 'i' ? "int32_t" : t == 'f' ? "float" : "act_t";
  }

  /// `T *NAME = static_cast<T *>(b[i]);` for each buffer.
  void unpack(StringRef types) {
    for (size_t i = 0; i < types.size(); ++i) {
      const char *t = typeName(types[i]);
      os << "  " << t << " *b" << i << " = static_cast<" << t << " *>(b[" << i << "]);\n";
    }
  }

  /// Mixed precision (bf16 storage): the values llama-assign-precision
  /// recorded as kept in fp32 (`llama.fp32` on their ops: the parameter
  /// gradients and their partial sums). Statistics are fp32 by their op's
  /// kind (the launchers' `fp32` flags).
  void readPrecision(ModuleOp module) {
    module.walk([&](Operation *op) {
      if (auto results = op->getAttrOfType<DenseI64ArrayAttr>(kFp32Attr))
        for (int64_t r : results.asArrayRef())
          fp32Values.insert(op->getResult(unsigned(r)));
    });
  }

  /// What makes a launcher's code: the op, its buffer types and shapes and
  /// its own attributes (eps, theta, scale, ...); not the discardable
  /// `llama.*` ones the passes add (layer, memory plan, remat marks).
  static std::string kernelKey(Operation &op, const Entry &e) {
    std::string key = e.op + "|" + e.types + "|" + e.shapes + "|";
    llvm::raw_string_ostream k(key);
    for (NamedAttribute a : op.getAttrs())
      if (!a.getName().getValue().starts_with("llama.")) {
        k << a.getName().getValue() << "=";
        a.getValue().print(k);
        k << ";";
      }
    return key;
  }

  void beginLauncher(const std::string &name) {
    os << "extern \"C\" void " << name
       << "(void *const *b, void *workspace, cudaStream_t stream) {\n";
  }

  /// Records a launcher for the table: buffer shapes ("2x8x16,16,...";
  /// scalars are empty) and the op's attributes as MLIR prints them.
  void add(Operation &op, const std::string &name, const std::string &t,
           int64_t workspace) {
    std::string shapes;
    bool first = true;
    for (Value v : llvm::concat<Value>(op.getOperands(), op.getResults())) {
      if (!first)
        shapes += ",";
      first = false;
      for (auto [i, d] : llvm::enumerate(ranked(v).getShape()))
        shapes += (i ? "x" : "") + std::to_string(d);
    }
    std::string attrs;
    llvm::raw_string_ostream a(attrs);
    op.getAttrDictionary().print(a);
    entries.push_back({name, op.getName().getStringRef().str(), t, shapes,
                       cString(attrs), workspace});
  }


  LogicalResult emitOp(Operation &op, const std::string &name) {
    bool handled = true;
    TypeSwitch<Operation *>(&op)
        .Case([&](AddRMSNormOp r) {
          emitNorm(op, name, r.getEps().convertToDouble(), /*add=*/true,
                   /*rstd=*/true);
        })
        .Case([&](RMSNormRstdOp r) {
          emitNorm(op, name, r.getEps().convertToDouble(), false, true);
        })
        .Case([&](RMSNormOp r) {
          emitNorm(op, name, r.getEps().convertToDouble(), false, false);
        })
        .Case([&](RMSNormGradRstdOp r) {
          emitNormGrad(op, name, r.getX(), /*withRstd=*/true,
                       static_cast<bool>(r.getAccumulate()), 0.0);
        })
        .Case([&](RMSNormGradOp r) {
          emitNormGrad(op, name, r.getX(), /*withRstd=*/false, false,
                       r.getEps().convertToDouble());
        })
        .Case([&](CrossEntropyFusedOp x) {
          emitCrossEntropy(op, name, x.getLogits(), x.getTargets(),
                           x.getIgnoreIndexAttr().getInt(),
                           x.getGradScale().convertToDouble());
        })
        .Case([&](CrossEntropyGradOp g) { emitCrossEntropyGrad(g, name); })
        .Case([&](CrossEntropyOp x) {
          emitCrossEntropy(op, name, x.getLogits(), x.getTargets(),
                           x.getIgnoreIndexAttr().getInt(), std::nullopt);
        })
        .Case([&](RopeQKOp r) {
          emitRope(op, name, r.getQuery(), r.getKey(),
                   r.getInverse());
        })
        .Case([&](RopeOp r) {
          emitRope(op, name, r.getInput(), nullptr, false);
        })
        .Case([&](RopeGradOp r) {
          emitRope(op, name, r.getGrad(), nullptr, true);
        })
        .Case([&](RopeAtOp r) { emitRopeAt(r, name); })
        .Case([&](AttentionCachedOp a) { emitAttentionCached(a, name); })
        .Case([&](SwigluOp) { emitElementwise(op, name, "swiglu"); })
        .Case([&](SwigluGradOp) { emitElementwise(op, name, "swiglu_grad"); })
        .Case([&](AddOp) { emitElementwise(op, name, "add"); })
        .Case([&](SumOp) { emitElementwise(op, name, "sum"); })
        .Case([&](FillOp f) { emitFill(f, name); })
        .Case([&](EmbeddingOp e) { emitEmbedding(e, name); })
        .Case([&](EmbeddingGradOp e) { emitEmbeddingGrad(e, name); })
        .Case([&](AttentionOp a) { emitAttention(a, name); })
        .Case([&](AttentionGradOp a) { emitAttentionGrad(a, name); })
        .Case([&](LogitsMaxOp m) { emitLogitsMax(m, name); })
        .Case([&](CEPartialSumsOp p) { emitCEPartialSums(p, name); })
        .Case([&](CEPartialSumsGradOp p) { emitCEPartialSumsGrad(p, name); })
        .Case([&](CountValidOp c) { emitCountValid(c, name); })
        .Case([&](CECombineOp c) { emitCECombine(c, name); })
        .Case([&](CECombineGradOp c) { emitCECombineGrad(c, name); })
        .Default([&](Operation *) { handled = false; });
    if (!handled)
      return op.emitOpError("has no CUDA lowering yet");
    return failure(emitFailed);
  }

  /// rms_norm, rms_norm_rstd, add_rms_norm: llk::rms_norm_forward and
  /// llk::add_rms_norm_forward (runtime/cuda/kernels/norms.cuh).
  void emitNorm(Operation &op, const std::string &name, double eps, bool withAdd,
                bool withRstd) {
    Value x = op.getOperand(0);
    int64_t dim = ranked(x).getShape().back(), rows = numel(x) / dim;
    // Buffers: add_rms_norm (a, b, w, sum, y, rstd); rms_norm_rstd (x, w, y,
    // rstd); rms_norm (x, w, y).
    SmallVector<bool> fp32(op.getNumOperands() + op.getNumResults(), false);
    if (withRstd)
      fp32.back() = true;
    std::string t = types(op, fp32);
    beginLauncher(name);
    unpack(t);
    os << "  (void)workspace;\n";
    if (withAdd)
      os << "  llk::add_rms_norm_forward<act_t, " << dim << ">(b0, b1, b2, b3, b4, b5, ";
    else
      os << "  llk::rms_norm_forward<act_t, " << dim << ">(b0, b1, b2, "
         << (withRstd ? "b3" : "nullptr") << ", ";
    os << rows << ", " << litf(eps) << ", stream);\n}\n\n";
    add(op, name, t, 0);
  }

  /// rms_norm_grad_rstd (the forward's rstd) and the unfused rms_norm_grad
  /// (rstd recomputed from x): llk::rms_norm_backward (norms.cuh), dx per
  /// row and dw reduced per chunk of rows, then once.
  void emitNormGrad(Operation &op, const std::string &name, Value x, bool withRstd,
                    bool acc, double eps) {
    int64_t dim = ranked(x).getShape().back(), rows = numel(x) / dim;
    // Buffers: dy, x, w, [rstd], [acc], dx, dw.
    SmallVector<bool> fp32(op.getNumOperands() + 2, false);
    if (withRstd)
      fp32[3] = true;   // rstd
    fp32.back() = true; // dw: a weight gradient, fp32
    std::string t = types(op, fp32);
    beginLauncher(name);
    unpack(t);
    int next = withRstd ? 4 : 3;
    std::string rstd = withRstd ? "b3" : "nullptr";
    std::string accBuf = acc ? "b" + std::to_string(next++) : "nullptr";
    std::string dx = "b" + std::to_string(next), dw = "b" + std::to_string(next + 1);
    os << "  llk::rms_norm_backward<act_t, " << typeName(t.back()) << ", " << dim << ", "
       << (acc ? "true" : "false") << ">(b0, b1, b2, " << rstd << ", " << accBuf << ", "
       << dx << ", " << dw << ", " << rows << ", " << litf(eps)
       << ", workspace, stream);\n}\n\n";
    add(op, name, t, llk::norm_grad_workspace_bytes(actBytes(), rows, dim));
  }

  /// cross_entropy_fused (with its gradient) and cross_entropy:
  /// llk::cross_entropy_fused (runtime/cuda/kernels/cross_entropy.cuh): the
  /// scored rows counted, one block per row (online max and sum, then the
  /// gradient written over the logits when they alias), the loss summed.
  void emitCrossEntropy(Operation &op, const std::string &name, Value logits,
                        Value targets, int64_t ignore,
                        std::optional<double> gradScale) {
    int64_t vocab = ranked(logits).getShape().back();
    int64_t rows = numel(targets);
    const bool grad = gradScale.has_value();
    // Buffers: logits, targets, loss[, dlogits].
    SmallVector<bool> fp32 = {false, false, true, false};
    std::string t = types(op, fp32);
    beginLauncher(name);
    unpack(t);
    os << "  llk::cross_entropy_fused<act_t, " << vocab << ", " << (grad ? "true" : "false")
       << ">(b0, b1, b2, " << (grad ? "b3" : "static_cast<act_t *>(nullptr)") << ", " << rows
       << ", " << ignore << ", " << litf(grad ? *gradScale : 0.0)
       << ", workspace, stream);\n}\n\n";
    add(op, name, t, llk::cross_entropy_workspace_bytes(rows));
  }

  /// The unfused cross_entropy_grad (dloss on the device):
  /// llk::cross_entropy_backward.
  void emitCrossEntropyGrad(CrossEntropyGradOp g, const std::string &name) {
    int64_t vocab = ranked(g.getLogits()).getShape().back();
    int64_t rows = numel(g.getTargets());
    // Buffers: dloss, logits, targets, dlogits.
    std::string t = types(*g, {true, false, false, false});
    beginLauncher(name);
    unpack(t);
    os << "  llk::cross_entropy_backward<act_t, " << vocab << ">(b0, b1, b2, b3, " << rows
       << ", " << g.getIgnoreIndexAttr().getInt() << ", workspace, stream);\n}\n\n";
    add(*g, name, t, llk::cross_entropy_workspace_bytes(rows));
  }

  /// rope_qk (q and k together), rope and rope_grad (one tensor; the
  /// gradient rotates back): llk::rope (runtime/cuda/kernels/rope.cuh). The
  /// frequencies (the op's inv_freq, or theta^(-2i/d)), in turns per
  /// position as float pairs, are computed here in double (as the CPU
  /// runtime's table) and emitted once per distinct set.
  void emitRope(Operation &op, const std::string &name, Value q, Value k, bool inverse) {
    auto qs = ranked(q).getShape();
    std::string turns = ropeTurns(&op);
    std::string t = types(op, {});
    beginLauncher(name);
    unpack(t);
    // Buffers: q, k, qo, ko (rope_qk) or x, y.
    os << "  (void)workspace;\n  llk::rope<act_t, " << qs[3] << ", " << turns << ">(b0, "
       << (k ? "b1, b2, b3, " : "nullptr, b1, nullptr, ") << qs[0] << ", " << qs[1] << ", "
       << qs[2] << ", " << (k ? ranked(k).getDimSize(2) : 0) << ", 0, "
       << (inverse ? "true" : "false") << ", stream);\n}\n\n";
    add(op, name, t, 0);
  }

  /// rope_at (generation): llk::rope at the position in device memory.
  void emitRopeAt(RopeAtOp r, const std::string &name) {
    auto s = ranked(r.getInput()).getShape();
    std::string turns = ropeTurns(r);
    std::string t = types(*r, {}); // x, position, y
    beginLauncher(name);
    unpack(t);
    os << "  (void)workspace;\n  llk::rope<act_t, " << s[3] << ", " << turns
       << ">(b0, nullptr, b2, nullptr, " << s[0] << ", " << s[1] << ", " << s[2]
       << ", 0, 0, false, stream, b1);\n}\n\n";
    add(*r, name, t, 0);
  }

  /// attention_cached (generation's prefill and decode): the chunk's keys and
  /// values appended to the cache, then llk::attention_cached
  /// (runtime/cuda/kernels/attention_cached.cuh), its key range split
  /// (flash-decoding) as shapes.h picks for these shapes.
  void emitAttentionCached(AttentionCachedOp a, const std::string &name) {
    auto q = ranked(a.getQuery()).getShape();
    const int64_t kvHeads = ranked(a.getKey()).getDimSize(2),
                  capacity = ranked(a.getKeyCache()).getDimSize(1), hd = q[3];
    const int64_t group = q[2] / kvHeads, rows = q[0] * q[1] * kvHeads;
    if (hd / llk::pack_for(int(actBytes()), hd) > 32) {
      a.emitOpError("head_dim ") << hd << " is over 32 packs of 16 bytes: the cached "
                                          "attention kernel holds a key row in one warp";
      emitFailed = true;
      return;
    }
    const int64_t heads = llk::attention_cached_heads_per_block(
        group, llk::pack_for(int(actBytes()), hd));
    const int64_t splits = llk::attention_cached_splits(rows * (group / heads), capacity);
    std::string t = types(*a, {}); // q, k, v, k cache, v cache, position, out
    beginLauncher(name);
    unpack(t);
    os << "  llk::attention_cached<act_t, " << hd << ", " << group << ", " << splits
       << ">(b0, b1, b2, b3, b4, b6, " << q[0] << ", " << q[1] << ", " << kvHeads << ", "
       << capacity << ", b5, " << litf(a.getScale().convertToDouble())
       << ", workspace, stream);\n}\n\n";
    add(*a, name, t, llk::attention_cached_workspace_bytes(rows, group, hd, splits));
  }

  /// The traits type whose at(i) gives frequency i of a rope op in turns per
  /// position (hi + lo floats) and whose kScale is its cos/sin factor,
  /// emitted on first use of each distinct set.
  std::string ropeTurns(Operation *op) {
    RopeFrequencies f = getRopeFrequencies(op);
    std::string key = lit(f.attentionFactor);
    for (double v : f.invFreq)
      key += "/" + lit(v);
    auto [it, inserted] = ropeTables.try_emplace(key, "rope_turns_" + std::to_string(ropeTables.size()));
    if (!inserted)
      return it->second;
    const std::string &type = it->second;
    const int64_t dim = ranked(op->getOperand(0)).getDimSize(3), half = dim / 2;
    std::string text;
    llvm::raw_string_ostream t(text);
    t << "// RoPE frequencies of head_dim " << dim;
    if (f.scaled())
      t << " (scaled: the op's inv_freq, cos/sin factor " << lit(f.attentionFactor) << ")";
    else
      t << ", theta " << lit(f.theta);
    t << ", in turns per position: f_i / (2 pi) = hi + lo.\n"
      << "__constant__ float2 " << type << "_table[" << half << "] = {";
    for (int64_t i = 0; i < half; ++i) {
      const double turns = f.invFreq[size_t(i)] / (2.0 * 3.14159265358979323846);
      const float hi = float(turns), lo = float(turns - double(hi));
      t << (i ? ", " : "") << "{" << litf(hi) << ", " << litf(lo) << "}";
    }
    t << "};\nstruct " << type << " {\n  __device__ static float2 at(int i) { return "
      << type << "_table[i]; }\n";
    if (f.attentionFactor != 1.0)
      t << "  static constexpr float kScale = " << litf(float(f.attentionFactor)) << ";\n";
    t << "};\n\n";
    os << text;
    return type;
  }

  /// swiglu, swiglu_grad, add, sum: the flat kernels of
  /// runtime/cuda/kernels/elementwise.cuh.
  void emitElementwise(Operation &op, const std::string &name, StringRef kind) {
    int64_t n = numel(op.getResult(0));
    std::string t = types(op, {});
    unsigned nIn = op.getNumOperands();
    for (unsigned i = 1; i < nIn; ++i)
      if (t[i] != t[0]) {
        op.emitOpError("sums operands stored in different types");
        emitFailed = true;
        return;
      }
    beginLauncher(name);
    unpack(t);
    os << "  (void)workspace;\n";
    if (kind == "swiglu") {
      os << "  llk::swiglu_forward<act_t>(b0, b1, b2, " << n << ", stream);\n}\n\n";
    } else if (kind == "swiglu_grad") { // (dy, gate, up) -> (dgate, dup)
      os << "  llk::swiglu_backward<act_t>(b0, b1, b2, b3, b4, " << n
         << ", stream);\n}\n\n";
    } else { // add, sum: left to right, as the chain it replaces
      os << "  llk::sum<" << typeName(t[0]) << ", " << typeName(t[nIn]) << ", " << nIn
         << ">({{";
      for (unsigned i = 0; i < nIn; ++i)
        os << (i ? ", " : "") << "b" << i;
      os << "}}, b" << nIn << ", " << n << ", stream);\n}\n\n";
    }
    add(op, name, t, 0);
  }

  void emitFill(FillOp f, const std::string &name) {
    int64_t n = numel(f.getResult());
    bool scalar = ranked(f.getResult()).getRank() == 0;
    std::string t = types(*f, {scalar});
    beginLauncher(name);
    unpack(t);
    os << "  (void)workspace;\n  llk::fill<" << typeName(t[0]) << ">(b0, " << n << ", "
       << litf(f.getValue().convertToDouble()) << ", stream);\n}\n\n";
    add(*f, name, t, 0);
  }

  /// Row gather (llk::embedding_forward, runtime/cuda/kernels/embedding.cuh);
  /// ids outside the vocabulary give NaN rows (the loss turns NaN and the
  /// trainer stops), never an out-of-bounds read. A vocabulary shard
  /// (vocab-parallel embedding) holds rows [row0, row0 + rows) and gives
  /// zero rows for the ids other ranks hold (all-reduced after).
  void emitEmbedding(EmbeddingOp e, const std::string &name) {
    auto table = ranked(e.getTable());
    int64_t rows = table.getDimSize(0), dim = table.getDimSize(1);
    int64_t vocab = e.getVocabShard() ? (*e.getVocabShard())[1] : rows;
    std::string t = types(*e, {});
    beginLauncher(name);
    unpack(t);
    os << "  (void)workspace;\n  llk::embedding_forward<act_t, " << dim << ">(b0, b1, b2, "
       << numel(e.getIds()) << ", " << rows << ", " << vocab << ", "
       << vocabOffset(e.getVocabShard(), rows) << ", stream);\n}\n\n";
    add(*e, name, t, 0);
  }

  /// Embedding gradient in O(tokens x dim) without atomics
  /// (llk::embedding_backward): a stable sort of the positions by id, then
  /// each table row sums its positions' gradient rows in position order
  /// (the CPU's order) and rows without tokens get zeros.
  void emitEmbeddingGrad(EmbeddingGradOp e, const std::string &name) {
    auto table = ranked(e.getResult());
    int64_t vocab = table.getDimSize(0), dim = table.getDimSize(1);
    int64_t tokens = numel(e.getIds());
    std::string t = types(*e, {});
    beginLauncher(name);
    unpack(t);
    os << "  llk::embedding_backward<act_t, " << typeName(t[2]) << ", " << dim
       << ">(b0, b1, b2, " << tokens << ", " << vocab << ", "
       << vocabOffset(e.getVocabShard(), vocab) << ", workspace, stream);\n}\n\n";
    add(*e, name, t, llk::embedding_backward_workspace_bytes(tokens, vocab));
  }

  /// The first vocabulary row (column) this rank holds, as the launcher
  /// computes it: `rows * rank on the vocab_shard axis`, or 0 unsharded.
  static std::string vocabOffset(std::optional<ArrayRef<int64_t>> shard, int64_t rows) {
    if (!shard)
      return "int64_t(0)";
    return "int64_t(llama_coll::rank(" + std::to_string((*shard)[0]) + ")) * " +
           std::to_string(rows);
  }

  /// Vocabulary-parallel cross-entropy (Megatron's formulation; the CPU
  /// kernels are runtime/cpu/vocab_parallel.cpp). logits_max: one block per
  /// row; the row maxima are fp32 statistics.
  /// The vocabulary-parallel cross-entropy pieces (partitioned programs):
  /// llk::cep (runtime/cuda/kernels/cross_entropy_parallel.cuh), this rank's
  /// vocabulary width a template argument, its column offset the rank's.
  void emitLogitsMax(LogitsMaxOp m, const std::string &name) {
    int64_t v = ranked(m.getLogits()).getShape().back(), rows = numel(m.getResult());
    std::string t = types(*m, {false, true});
    beginLauncher(name);
    unpack(t);
    os << "  (void)workspace;\n  llk::cep::logits_max<act_t, " << v << ">(b0, b1, " << rows
       << ", stream);\n}\n\n";
    add(*m, name, t, 0);
  }

  void emitCEPartialSums(CEPartialSumsOp p, const std::string &name) {
    int64_t v = ranked(p.getLogits()).getShape().back(), rows = numel(p.getTargets());
    int64_t vocab = p.getVocabShard() ? (*p.getVocabShard())[1] : v;
    // Buffers: logits, max, targets, sums.
    std::string t = types(*p, {false, true, false, true});
    beginLauncher(name);
    unpack(t);
    os << "  (void)workspace;\n  llk::cep::partial_sums<act_t, " << v << ">(b0, b1, b2, b3, "
       << rows << ", " << vocabOffset(p.getVocabShard(), v) << ", "
       << p.getIgnoreIndexAttr().getInt() << ", " << vocab << ", stream);\n}\n\n";
    add(*p, name, t, 0);
  }

  void emitCEPartialSumsGrad(CEPartialSumsGradOp p, const std::string &name) {
    int64_t v = ranked(p.getLogits()).getShape().back();
    int64_t rows = numel(p.getLogits()) / v;
    // Buffers: dsums, logits, max, targets, dlogits.
    std::string t = types(*p, {true, false, true, false, false});
    beginLauncher(name);
    unpack(t);
    os << "  (void)workspace;\n  llk::cep::partial_sums_grad<act_t, " << v
       << ">(b0, b1, b2, b3, b4, " << rows << ", " << vocabOffset(p.getVocabShard(), v) << ", "
       << p.getIgnoreIndexAttr().getInt() << ", stream);\n}\n\n";
    add(*p, name, t, 0);
  }

  void emitCountValid(CountValidOp c, const std::string &name) {
    std::string t = types(*c, {false, true});
    beginLauncher(name);
    unpack(t);
    os << "  (void)workspace;\n  llk::cep::count_valid(b0, b1, " << numel(c.getTargets())
       << ", " << c.getIgnoreIndexAttr().getInt() << ", stream);\n}\n\n";
    add(*c, name, t, 0);
  }

  void emitCECombine(CECombineOp c, const std::string &name) {
    // Buffers: max, sums, targets, count, loss.
    std::string t = types(*c, {true, true, false, true, true});
    beginLauncher(name);
    unpack(t);
    os << "  (void)workspace;\n  llk::cep::combine(b0, b1, b2, b3, b4, " << numel(c.getTargets())
       << ", " << c.getIgnoreIndexAttr().getInt() << ", stream);\n}\n\n";
    add(*c, name, t, 0);
  }

  void emitCECombineGrad(CECombineGradOp c, const std::string &name) {
    // Buffers: dloss, sums, targets, count, dsums.
    std::string t = types(*c, {true, true, false, true, true});
    beginLauncher(name);
    unpack(t);
    os << "  (void)workspace;\n  llk::cep::combine_grad(b0, b1, b2, b3, b4, "
       << numel(c.getTargets()) << ", " << c.getIgnoreIndexAttr().getInt()
       << ", stream);\n}\n\n";
    add(*c, name, t, 0);
  }

  /// The arenas were planned from the IR's storage decisions
  /// (llama-assign-precision's `llama.fp32`, sized by
  /// llama-plan-memory{storage-bytes}); every launcher must store its
  /// results as the IR says, or the plan would not fit them.
  LogicalResult checkStorage(ModuleOp module) {
    WalkResult r = module.walk([&](Operation *op) {
      auto it = launcherOf.find(op);
      if (it == launcherOf.end())
        return WalkResult::advance();
      for (OpResult v : op->getResults()) {
        char have = entries[it->second].types[op->getNumOperands() + v.getResultNumber()];
        char want = !isa<FloatType>(ranked(v).getElementType()) ? 'i'
                    : fp32Values.contains(v)                    ? 'f'
                                                                : 'a';
        if (options.activations == CudaStorage::F32 && want == 'a')
          want = 'f';
        if (options.activations == CudaStorage::F32 && have == 'a')
          have = 'f';
        if (have != want) {
          op->emitOpError("its CUDA launcher stores result #")
              << v.getResultNumber() << " as '" << have << "', but the IR (llama.fp32) says '"
              << want << "'";
          return WalkResult::interrupt();
        }
      }
      return WalkResult::advance();
    });
    return failure(r.wasInterrupted());
  }

  static int64_t arenaBytes(func::FuncOp fn) { return getArenaBytes(fn).value_or(0); }

  /// The host side of @train_step (train) or @forward (its loss alone):
  /// every op in program order on one stream, buffers at the memory plan's
  /// offsets in one arena, parameter gradients written into the gradient
  /// buffer (llama.output) or copied there, the loss copied to `loss`.
  /// Nothing is allocated and nothing synchronizes, so the whole call can be
  /// captured in a CUDA Graph.
  LogicalResult emitHostFunction(func::FuncOp fn, Host kind) {
    const bool train = kind == Host::Train,
               generate = kind == Host::Prefill || kind == Host::Decode;
    DenseMap<Value, std::string> names;
    struct Param {
      std::string name;
      int64_t numel, offset;
    };
    std::vector<Param> params;
    int64_t offset = 0;
    Value tokens, targets, position;
    int64_t kvElements = 0;
    auto typeBytes = [&](char t) { return t == 'a' ? ::llama::storageBytes(options.activations) : 4; };
    for (BlockArgument arg : fn.getArguments()) {
      unsigned i = arg.getArgNumber();
      if (auto role = fn.getArgAttrOfType<StringAttr>(i, kInputAttr)) {
        names[arg] = role.getValue().str();
        StringRef r = role.getValue();
        (r == "tokens" ? tokens : r == "position" ? position : targets) = arg;
        storage[arg] = 'i';
        ranges[arg] = {r == "tokens"     ? Space::Tokens
                       : r == "position" ? Space::Position
                                         : Space::Targets,
                       0, numel(arg) * 4};
        continue;
      }
      // Generation's KV cache: every layer's keys and values in one device
      // buffer KV (storage type), each at a multiple of 16 elements.
      if (generate && fn.getArgAttr(i, kKvCacheAttr)) {
        names[arg] = "(KV + " + std::to_string(kvElements) + ")";
        storage[arg] = options.activations == CudaStorage::F32 ? 'f' : 'a';
        ranges[arg] = {Space::KvCache, kvElements * typeBytes('a'),
                       (kvElements + numel(arg)) * typeBytes('a')};
        kvElements += (numel(arg) + 15) / 16 * 16;
        continue;
      }
      auto pname = fn.getArgAttrOfType<StringAttr>(i, kParamNameAttr);
      if (!pname)
        return fn.emitError("argument #") << i << " is neither a parameter nor an input";
      params.push_back({pname.getValue().str(), numel(arg), offset});
      names[arg] = "(P + " + std::to_string(offset) + ")";
      storage[arg] = options.activations == CudaStorage::F32 ? 'f' : 'a';
      ranges[arg] = {Space::Params, offset * typeBytes('a'),
                     (offset + numel(arg)) * typeBytes('a')};
      offset += numel(arg);
    }
    if (!tokens || (generate ? !position : !targets))
      return fn.emitError(generate ? "needs token and position inputs"
                                   : "needs token and target inputs");
    std::string body;
    llvm::raw_string_ostream b(body);
    int64_t workspace = 0;
    pending.clear();
    // Dp grids: the gradient buckets and where in the step each is ready.
    std::vector<std::pair<int64_t, int>> readyAt; // (position, bucket), in order
    if (train && grid[0] > 1 && failed(readGradBuckets(fn, offset, readyAt)))
      return failure();
    size_t nextReady = 0;
    // ZeRO-1's parameter all-gathers, deferred from the optimizer into the
    // next train step (Megatron's overlap_param_gather): the step starts
    // every bucket's gather first and waits for bucket k just before the
    // first op that reads a parameter in it, so the forward up to there runs
    // under the gathers still in flight.
    const bool gatherParams = train && !bucketBounds.empty();
    const int64_t paramBytes = typeBytes('a');
    std::vector<bool> gatherWaited(gatherParams ? bucketBounds.size() - 1 : 0, false);
    std::vector<int> gatherOrder;
    auto waitGather = [&](size_t k) {
      gatherWaited[k] = true;
      gatherOrder.push_back(int(k));
      opsBeforeLastGather = trainComputeOps;
      b << "  llama_coll::params_needed(" << k << ", stream);\n";
    };
    auto needParams = [&](Operation &op) {
      for (Value v : op.getOperands()) {
        const Range r = ranges.lookup(v);
        if (r.space != Space::Params)
          continue;
        for (size_t k = 0; k < gatherWaited.size(); ++k) {
          const Range bucket{Space::Params, bucketBounds[k] * paramBytes,
                             bucketBounds[k + 1] * paramBytes};
          if (!gatherWaited[k] && bucket.overlaps(r))
            waitGather(k);
        }
      }
    };
    SmallVector<int> deferred; // written last by a collective still in flight
    bool anyReady = false;
    auto markReady = [&](int64_t pos) {
      for (; nextReady < readyAt.size() && readyAt[nextReady].first <= pos; ++nextReady)
        deferred.push_back(readyAt[nextReady].second);
      // A gradient that a collective in flight writes (a replicated norm
      // gain's, all-reduced over tp) is complete once the step waited for
      // it, where the compiler placed that wait anyway.
      for (size_t j = 0; j < deferred.size();) {
        const int k = deferred[j];
        const Range g{Space::Gradients, bucketBounds[size_t(k)] * 4,
                      bucketBounds[size_t(k) + 1] * 4};
        if (llvm::any_of(pending, [&](const InFlight &c) {
              return llvm::any_of(c.writes, [&](const Range &w) { return w.overlaps(g); });
            })) {
          ++j;
          continue;
        }
        if (!anyReady)
          computeOpsAtFirstBucket = trainComputeOps;
        anyReady = true;
        b << "  llama_coll::grads_ready(" << k << ", stream);\n";
        deferred.erase(deferred.begin() + j);
      }
    };
    int64_t pos = -1;
    for (Operation &op : fn.getBody().front()) {
      ++pos;
      markReady(pos);
      if (auto ret = dyn_cast<func::ReturnOp>(op)) {
        // A bucket no op read (none in a LLaMA) is still gathered.
        for (size_t k = 0; k < gatherWaited.size(); ++k)
          if (!gatherWaited[k])
            waitGather(k);
        // Every collective completes before the step's results are read.
        if (!pending.empty())
          waitFor(b, pending.size() - 1);
        for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
          if (!train && i > 0)
            break; // @forward: the loss alone
          if (writtenInPlace(v, i))
            continue;
          std::string dst = i > 0      ? "(G + " + std::to_string(params[i - 1].offset) + ")"
                            : generate ? "logits"
                                       : "loss";
          if (storage.lookup(v) != 'f')
            return ret.emitOpError("result #")
                   << i << " (" << (generate ? "the logits" : "the loss or a gradient")
                   << ") is not stored in fp32";
          b << "  llama_copy(" << dst << ", " << names.lookup(v) << ", "
            << numel(v) * 4 << ", stream);\n";
        }
        markReady(pos + 1); // the gradients the copies above wrote
        continue;
      }
      if (isViewOp(&op)) {
        names[op.getResult(0)] = names.lookup(op.getOperand(0));
        storage[op.getResult(0)] = storage.lookup(op.getOperand(0));
        ranges[op.getResult(0)] = ranges.lookup(op.getOperand(0));
        continue;
      }
      auto offsets = op.getAttrOfType<DenseI64ArrayAttr>(kOffsetAttr);
      auto outputs = op.getAttrOfType<DenseI64ArrayAttr>(kOutputAttr);
      if (!offsets)
        return op.emitOpError("has no memory plan (run llama-plan-memory)");
      auto launcher = launcherOf.find(&op);
      for (auto [i, r] : llvm::enumerate(op.getResults())) {
        // The storage type: the launcher's for its results, the input's for
        // a collective; a GEMM's C is fp32 when it is kept in fp32 (a weight
        // gradient).
        char type = launcher != launcherOf.end()
                        ? entries[launcher->second].types[op.getNumOperands() + i]
                    : isShardCollective(&op) ? storage.lookup(op.getOperand(0))
                                        : (fp32Values.contains(r) ? 'f' : 'a');
        if (type == 'a' && options.activations == CudaStorage::F32)
          type = 'f'; // fp32 storage: every float buffer is fp32
        storage[r] = type;
        int64_t out = outputs ? outputs[i] : -1;
        if (out >= 1 && type != 'f')
          return op.emitOpError("writes a parameter gradient that is not stored in fp32");
        if (generate && out == 0) {
          // The logits, written straight into the fp32 logits buffer.
          if (type != 'f')
            return op.emitOpError("writes generation's logits, which are not stored in fp32");
          names[r] = "logits";
          ranges[r] = Range{Space::Logits, 0, numel(r) * 4};
          continue;
        }
        names[r] = out >= 1 ? "(G + " + std::to_string(params[out - 1].offset) + ")"
                            : "reinterpret_cast<" + hostType(type) + " *>(A + " +
                                  std::to_string(offsets[i]) + ")";
        ranges[r] = out >= 1 ? Range{Space::Gradients, params[out - 1].offset * 4,
                                     (params[out - 1].offset + numel(r)) * 4}
                             : Range{Space::Arena, offsets[i],
                                     offsets[i] + numel(r) * typeBytes(type)};
      }
      if (gatherParams)
        needParams(op);
      // Collectives still in flight that this op depends on (it reads
      // their output, or writes over their input or output) complete first.
      beforeOp(b, op, /*compute=*/!isShardCollective(&op));
      if (isShardCollective(&op)) {
        if (failed(emitCollective(b, op, names)))
          return failure();
        continue;
      }
      if (train)
        ++trainComputeOps;
      if (auto m = dyn_cast<MatmulOp>(op)) {
        if (train) {
          ++gemmCount;
          gemmMaxDim = std::max({gemmMaxDim, m.getM(), m.getN(), m.getK()});
        }
        b << "  llama_gemm(gemm, stream, " << names.lookup(m.getLhs()) << ", "
          << names.lookup(m.getRhs()) << ", " << names.lookup(m.getResult()) << ", "
          << m.getBatchSize() << ", " << m.getM() << ", " << m.getN() << ", "
          << m.getK() << ", " << (m.getTransposeLhs() ? "true" : "false") << ", "
          << (m.getTransposeRhs() ? "true" : "false") << ", "
          << (m.isRhsShared() ? "true" : "false") << ");\n";
        continue;
      }
      auto it = launcherOf.find(&op);
      if (it == launcherOf.end())
        return op.emitOpError("has no CUDA lowering in the train step");
      const Entry &entry = entries[it->second];
      // The launcher reads each buffer as the type its producer stored.
      for (auto [i, v] : llvm::enumerate(op.getOperands())) {
        char want = entry.types[i], have = storage.lookup(v);
        if (options.activations == CudaStorage::F32 && want == 'a')
          want = 'f';
        if (want != have)
          return op.emitOpError("reads operand #")
                 << i << " as '" << want << "' but it is stored as '" << have << "'";
      }
      // The kernels move 16-byte packs (runtime/cuda/kernels/common.cuh):
      // every float buffer must start 16-byte aligned. The arena's offsets
      // are multiples of 64; parameter and gradient offsets are when the
      // model's widths are multiples of 8 (every LLaMA's are).
      for (auto [i, v] : llvm::enumerate(
               llvm::concat<Value>(op.getOperands(), op.getResults()))) {
        const Range r = ranges.lookup(v);
        if (storage.lookup(v) != 'i' && r.begin % 16 != 0)
          return op.emitOpError("buffer #")
                 << i << " starts at byte " << r.begin << " of the "
                 << (r.space == Space::Params      ? "parameters"
                     : r.space == Space::Gradients ? "gradients"
                                                   : "arena")
                 << ", not a multiple of 16: the CUDA kernels use 16-byte accesses, so "
                    "the CUDA target needs model widths that are multiples of 8";
      }
      b << "  {\n    void *const b[] = {";
      for (auto [i, v] : llvm::enumerate(
               llvm::concat<Value>(op.getOperands(), op.getResults())))
        b << (i ? ", " : "") << "(void *)" << names.lookup(v);
      b << "};\n    " << entry.name << "(b, workspace, stream);\n  }\n";
      workspace = std::max(workspace, entry.workspace);
    }
    maxWorkspace = std::max(maxWorkspace, workspace);
    if (train && !readyAt.empty())
      opsAfterFirstBucket = trainComputeOps - computeOpsAtFirstBucket;
    if (gatherParams) {
      std::string starts;
      for (int k : gatherOrder)
        starts += "  llama_coll::params_gather(" + std::to_string(k) + ", stream);\n";
      body = starts + body;
    }
    if (generate) {
      const bool prefill = kind == Host::Prefill;
      kvCacheElements = kvElements;
      os << "// Generation's " << (prefill ? "prefill of a chunk of tokens" : "decode of one token")
         << " (@" << fn.getName() << "): its keys and values appended to the KV cache at\n"
         << "// *position, the logits of its tokens to `logits` (fp32), all on the device.\n"
         << "extern \"C\" void llama_cuda_" << fn.getName() << "(const " << hostType('a')
         << " *P, const int32_t *tokens, const int32_t *position, " << hostType('a')
         << " *KV, void *arena, void *workspace, float *logits, llamart::cuda::LtGemm *gemm, "
            "cudaStream_t stream) {\n"
         << "  char *A = static_cast<char *>(arena);\n  (void)A;\n"
         << body << "}\n\n";
      return success();
    }
    if (!train) {
      os << "// The loss of one batch, forward only (@forward), on the device.\n"
         << "extern \"C\" void llama_cuda_eval_loss(const " << hostType('a')
         << " *P, const int32_t "
            "*tokens, const int32_t *targets, void *arena, void *workspace, float "
            "*loss, llamart::cuda::LtGemm *gemm, cudaStream_t stream) {\n"
         << "  char *A = static_cast<char *>(arena);\n  (void)A;\n"
         << body << "}\n\n";
      return success();
    }
    os << "struct LlamaCudaParam {\n  const char *name;\n  int64_t numel, offset;\n};\n"
       << "extern \"C\" const LlamaCudaParam llama_cuda_params[] = {\n";
    for (const Param &p : params)
      os << "    {\"" << p.name << "\", " << p.numel << ", " << p.offset << "},\n";
    auto tok = ranked(tokens).getShape();
    os << "};\nextern \"C\" const size_t llama_cuda_param_count = " << params.size()
       << ";\nextern \"C\" const int64_t llama_cuda_batch = " << tok[0]
       << ", llama_cuda_seq_len = " << tok[1]
       << ";\nextern \"C\" const size_t llama_cuda_arena_bytes = "
       << arenaBytes(fn)
       << ", llama_cuda_workspace_bytes = " << std::max<int64_t>(workspace, 4) << ";\n\n"
       << "// One training step: loss and every parameter gradient (fp32) for\n"
       << "// the parameters P (in the storage type) and one batch, all pointers\n"
       << "// on the device.\n"
       << "extern \"C\" void llama_cuda_train_step(const " << hostType('a')
       << " *P, float *G, const "
          "int32_t *tokens, const int32_t *targets, void *arena, void *workspace, "
          "float *loss, llamart::cuda::LtGemm *gemm, cudaStream_t stream) {\n"
       << "  char *A = static_cast<char *>(arena);\n  (void)A;\n"
       << body << "}\n\n";
    return success();
  }

  /// Whether result #`result` of the step (`v`) is written straight into
  /// its output buffer by its producer (the plan's `llama.output`), or
  /// copied there at the return.
  static bool writtenInPlace(Value v, size_t result) {
    Operation *def = v.getDefiningOp();
    auto outs = def ? def->getAttrOfType<DenseI64ArrayAttr>(kOutputAttr)
                    : DenseI64ArrayAttr();
    return outs && llvm::is_contained(outs.asArrayRef(), int64_t(result));
  }

  /// ZeRO-1 gradient buckets of a dp grid: llama-plan-grad-buckets on the
  /// replanned, scheduled step records the bounds and the op after which
  /// each bucket is complete; `readyAt` gets (position of the op after it,
  /// bucket) in ready order, buckets ready together from the buffer's end.
  LogicalResult readGradBuckets(func::FuncOp fn, int64_t paramElements,
                                std::vector<std::pair<int64_t, int>> &readyAt) {
    if (failed(mlir::llama::planGradBuckets(fn, grid[0], options.gradBucketElements)))
      return failure();
    auto bounds = fn->getAttrOfType<DenseI64ArrayAttr>(kGradBucketsAttr);
    bucketBounds.assign(bounds.asArrayRef().begin(), bounds.asArrayRef().end());
    if (bucketBounds.back() != (paramElements + grid[0] - 1) / grid[0] * grid[0])
      return fn.emitError("gradient buckets end at ")
             << bucketBounds.back() << ", not at the padded gradient buffer";
    int64_t pos = -1;
    for (Operation &op : fn.getBody().front()) {
      ++pos;
      if (auto ready = op.getAttrOfType<DenseI64ArrayAttr>(kGradsReadyAttr))
        for (int64_t k : ready.asArrayRef())
          readyAt.push_back({pos + 1, int(k)});
    }
    std::sort(readyAt.begin(), readyAt.end(), [](auto a, auto b) {
      return a.first != b.first ? a.first < b.first : a.second > b.second;
    });
    return success();
  }

  /// The device buffers of a step: a value's bytes lie in one of them.
  enum class Space { None, Arena, Gradients, Params, Tokens, Targets, Position, KvCache, Logits };
  /// A buffer as bytes of one space.
  struct Range {
    Space space = Space::None;
    int64_t begin = 0, end = 0;
    bool overlaps(const Range &o) const {
      return space == o.space && begin < o.end && o.begin < end;
    }
  };
  /// A collective started and not yet waited for.
  struct InFlight {
    int index;
    SmallVector<Range> reads, writes;
    int64_t opsSince = 0;
  };

  /// Before `op`: wait for the latest in-flight collective that `op`
  /// conflicts with (waiting for it covers every earlier one: they run in
  /// order on one stream).
  void beforeOp(raw_ostream &b, Operation &op, bool compute) {
    auto conflicts = [&](const InFlight &c) {
      for (Value v : op.getOperands())
        for (const Range &w : c.writes)
          if (ranges.lookup(v).overlaps(w))
            return true;
      for (Value r : op.getResults())
        for (const Range &x : llvm::concat<const Range>(c.reads, c.writes))
          if (ranges.lookup(r).overlaps(x))
            return true;
      return false;
    };
    for (size_t i = pending.size(); i-- > 0;)
      if (conflicts(pending[i])) {
        waitFor(b, i);
        break;
      }
    if (compute)
      for (InFlight &c : pending)
        ++c.opsSince;
  }

  /// Waits for pending[i] and so for everything started before it.
  void waitFor(raw_ostream &b, size_t i) {
    b << "  llama_coll::wait(" << pending[i].index << ", stream);\n";
    for (size_t j = 0; j <= i; ++j) {
      overlappedOps += pending[j].opsSince;
      overlappedCollectives += pending[j].opsSince > 0;
    }
    pending.erase(pending.begin(), pending.begin() + i + 1);
  }

  /// A shard collective: started here, waited for by beforeOp.
  LogicalResult emitCollective(raw_ostream &b, Operation &op,
                               const DenseMap<Value, std::string> &names) {
    auto axesOf = [&](ArrayRef<int16_t> axes) -> FailureOr<int> {
      if (axes.size() == 1 && axes[0] <= 1)
        return int(axes[0]);
      if (axes.size() == 2 && axes[0] != axes[1] && axes[0] <= 1 && axes[1] <= 1)
        return -1;
      return op.emitOpError("has grid axes the CUDA runtime does not know (expected "
                            "[0], [1] or [0, 1] of a dp x tp grid)");
    };
    const char *kind;
    FailureOr<int> axis = failure();
    int64_t outer = 1, chunk = 0;
    if (auto ar = dyn_cast<shard::AllReduceOp>(op)) {
      axis = axesOf(ar.getGridAxes());
      if (ar.getReduction() == shard::ReductionKind::Sum)
        kind = "AllReduceSum";
      else if (ar.getReduction() == shard::ReductionKind::Max)
        kind = "AllReduceMax";
      else
        return op.emitOpError("uses a reduction the CUDA runtime lacks (sum, max)");
      if (ar.getInput().getType() != ar.getResult().getType())
        return op.emitOpError("changes the element type; the runtime reduces in the "
                              "buffer's own type");
      chunk = numel(ar.getResult());
    } else if (auto ag = dyn_cast<shard::AllGatherOp>(op)) {
      axis = axesOf(ag.getGridAxes());
      kind = "AllGather";
      auto in = ranked(ag.getInput()).getShape();
      int64_t d = ag.getGatherAxis().getSExtValue();
      outer = product(in.take_front(d));
      chunk = product(in.drop_front(d));
    } else {
      auto rs = cast<shard::ReduceScatterOp>(op);
      axis = axesOf(rs.getGridAxes());
      if (rs.getReduction() != shard::ReductionKind::Sum)
        return op.emitOpError("the CUDA runtime reduce-scatters sums only");
      kind = "ReduceScatter";
      auto out = ranked(rs.getResult()).getShape();
      int64_t d = rs.getScatterAxis().getSExtValue();
      outer = product(out.take_front(d));
      chunk = product(out.drop_front(d));
    }
    if (failed(axis))
      return failure();
    Value in = op.getOperand(0), out = op.getResult(0);
    char type = storage.lookup(in);
    if (outer > 1) {
      int64_t ranks = *axis < 0 ? grid[0] * grid[1] : grid[*axis];
      stagingBytes = std::max(stagingBytes, ranks * outer * chunk *
                                                (type == 'a' ? ::llama::storageBytes(options.activations) : 4));
    }
    std::string what = op.getName().getStringRef().str();
    if (auto layer = op.getAttrOfType<IntegerAttr>(kLayerAttr))
      what += " layer " + std::to_string(layer.getInt());
    if (op.hasAttr(kBackwardAttr))
      what += " (backward)";
    int index = collectiveCount++;
    b << "  llama_coll::start(" << index << ", llama_coll::Kind::" << kind << ", "
      << names.lookup(in) << ", " << names.lookup(out) << ", " << outer << ", " << chunk
      << ", " << (type == 'a' ? ::llama::storageBytes(options.activations) : 4) << ", " << *axis
      << ", " << cString(what)
      << ", stream);\n";
    pending.push_back({index, {ranges.lookup(in)}, {ranges.lookup(out)}, 0});
    return success();
  }

  /// Attention geometry shared by the forward and backward kernels.
  struct AttnShape {
    int64_t batch, seq, heads, kvHeads, dim;
    double scale;
  };
  static AttnShape attnShape(Value q, Value k, double scale) {
    auto qs = ranked(q).getShape();
    return {qs[0], qs[1], qs[2], ranked(k).getDimSize(2), qs[3], scale};
  }

  /// Causal attention forward (training). bf16 storage and head dim 64 or
  /// 128: the forward on sm_90a's warpgroup MMA (flash_attention_sm90.cuh;
  /// --arch is sm_90a); another multiple of 16: the tensor-core
  /// FlashAttention-2 forward on mma.sync (flash_attention.cuh), tiles chosen
  /// by the head dim (shapes.h: flash_*); otherwise (fp32 storage, micro's
  /// head dim 4) llk::attention_forward (attention.cuh, CUDA cores, one warp
  /// per row). All save the same lse, so any backward can follow any forward.
  void emitAttention(AttentionOp op, const std::string &name) {
    AttnShape a = attnShape(op.getQuery(), op.getKey(), op.getScale().convertToDouble());
    // Buffers: q, k, v, o, lse.
    std::string t = types(*op, {false, false, false, false, true});
    const bool flash = actBytes() == 2 && t.substr(0, 4) == "aaaa" &&
                       llk::flash_attention_supports(a.dim);
    const bool wgmma = flash && llk::flash_sm90_supports(a.dim);
    if (flash && flashDims.insert(a.dim).second) {
      // Read by tools/bench/kernel_audit (ptxas reports static shared memory only).
      if (wgmma)
        os << "// dynamic shared memory: llk::flash_attention_forward_sm90_kernel<" << a.dim
           << "> " << llk::flash_sm90_smem_bytes(a.dim) << "\n";
      else
        os << "// dynamic shared memory: llk::flash_attention_forward_kernel<" << a.dim << "> "
           << llk::flash_smem_bytes(a.dim) << "\n";
    }
    beginLauncher(name);
    unpack(t);
    if (wgmma)
      os << "  (void)workspace;\n  llk::flash_attention_forward_sm90<" << a.dim << ">(";
    else if (flash)
      os << "  (void)workspace;\n  llk::flash_attention_forward<" << a.dim << ">(";
    else
      os << "  (void)workspace;\n  llk::attention_forward<act_t, " << a.dim << ">(";
    os << "b0, b1, b2, b3, b4, " << a.batch << ", " << a.seq << ", " << a.heads << ", "
       << a.kvHeads << ", " << litf(a.scale) << ", stream);\n}\n\n";
    add(*op, name, t, 0);
  }

  /// Its backward: the tensor-core FlashAttention-2 backward (deterministic:
  /// D pre-pass, a dQ kernel, a dK/dV kernel) for bf16 storage and head dims
  /// that are multiples of 16 up to 128, its dQ and dK/dV kernels on wgmma +
  /// TMA at head dims 64 and 128 (flash_attention_sm90.cuh); otherwise
  /// llk::attention_backward.
  void emitAttentionGrad(AttentionGradOp op, const std::string &name) {
    AttnShape a = attnShape(op.getQuery(), op.getKey(), op.getScale().convertToDouble());
    // Buffers: dO, q, k, v, o, lse, dq, dk, dv.
    std::string t = types(*op, {false, false, false, false, false, true});
    const bool flash = actBytes() == 2 && t == "aaaaafaaa" &&
                       llk::flash_attention_backward_supports(a.dim);
    const bool wgmma = flash && llk::flash_sm90_supports(a.dim);
    if (flash && flashGradDims.insert(a.dim).second) {
      if (wgmma)
        os << "// dynamic shared memory: llk::flash_attention_dq_sm90_kernel<" << a.dim << "> "
           << llk::flash_sm90_dq_smem_bytes(a.dim)
           << "\n// dynamic shared memory: llk::flash_attention_dkv_sm90_kernel<" << a.dim
           << "> " << llk::flash_sm90_bwd_smem_bytes(a.dim) << "\n";
      else
        os << "// dynamic shared memory: llk::flash_attention_dq_kernel<" << a.dim << "> "
           << llk::flash_bwd_dq_smem_bytes(a.dim)
           << "\n// dynamic shared memory: llk::flash_attention_dkv_kernel<" << a.dim << "> "
           << llk::flash_bwd_dkv_smem_bytes(a.dim) << "\n";
    }
    beginLauncher(name);
    unpack(t);
    if (wgmma)
      os << "  llk::flash_attention_backward_sm90<" << a.dim << ">(";
    else if (flash)
      os << "  llk::flash_attention_backward<" << a.dim << ">(";
    else
      os << "  llk::attention_backward<act_t, " << a.dim << ">(";
    os << "b0, b1, b2, b3, b4, b5, b6, b7, b8, " << a.batch << ", " << a.seq << ", "
       << a.heads << ", " << a.kvHeads << ", " << litf(a.scale)
       << ", workspace, stream);\n}\n\n";
    add(*op, name, t, llk::attention_backward_workspace_bytes(a.batch, a.heads, a.seq));
  }

  raw_ostream &out; // gets the whole source once it is complete
  std::string text;  // the source as it is emitted (os writes here)
  llvm::raw_string_ostream textStream{text};
  raw_ostream &os = textStream;
  const ::llama::CudaEmitOptions &options;
  bool emitFailed = false; // a kernel emitter reported an error
  std::vector<Entry> entries;
  DenseMap<Operation *, size_t> launcherOf; // op -> its entry
  std::map<std::string, size_t> launcherByKey; // kernelKey -> its entry
  int64_t maxWorkspace = 0; // over the host functions emitted
  int64_t gemmCount = 0, gemmMaxDim = 0; // the train step's GEMMs (ABFT)
  int64_t kvCacheElements = 0;            // generation's device KV cache

public:
  ::llama::CudaPlanFigures figures; // filled by emitModule

private:
  DenseSet<Value> fp32Values; // bf16 storage: what stays fp32 (llama.fp32)
  std::set<int64_t> flashDims, flashGradDims; // head dims of the tensor-core attention emitted
  DenseMap<Value, char> storage; // host functions: each result's buffer type
  DenseMap<Value, Range> ranges;  // host functions: each buffer's bytes
  std::vector<InFlight> pending;  // host functions: collectives in flight
  int64_t grid[2] = {1, 1};       // the module's dp x tp grid
  int collectiveCount = 0;        // over the host functions emitted
  int64_t overlappedOps = 0, overlappedCollectives = 0, stagingBytes = 0;
  std::vector<int64_t> bucketBounds; // dp grids: the gradient buckets
  int64_t trainComputeOps = 0, computeOpsAtFirstBucket = 0, opsAfterFirstBucket = 0,
          opsBeforeLastGather = 0;

  std::map<std::string, std::string> ropeTables; // factor and frequencies -> traits type

  /// Bytes per element of the activation storage type.
  int actBytes() const { return ::llama::storageBytes(options.activations); }

  /// A buffer type as the host functions spell it.
  std::string hostType(char t) const {
    if (t == 'i')
      return "int32_t";
    return t == 'f' || options.activations == CudaStorage::F32 ? "float" : "act_t";
  }

};

} // namespace

mlir::LogicalResult (::llama::emitCudaKernels)(ModuleOp module, raw_ostream &os,
                                     const ::llama::CudaEmitOptions &options,
                                     ::llama::CudaPlanFigures *figures) {
  // The decisions the emitter prints, made by passes on the IR of a copy
  // (the caller's module keeps the fp32 plan its CPU source uses): which
  // values stay fp32 (bf16 storage), for a partitioned program the order
  // that overlaps collectives with independent work, and the arenas planned
  // for the storage types (2-byte bf16 buffers) and for collectives in
  // flight on their own stream.
  OwningOpRef<ModuleOp> copy(module.clone());
  PassManager pm(copy->getContext(), ModuleOp::getOperationName());
  const bool bf16 = options.activations != CudaStorage::F32;
  if (bf16)
    pm.addPass(mlir::llama::createLlamaAssignPrecision());
  auto grid = copy->getOperation()->getAttrOfType<DenseI64ArrayAttr>(kGridAttr);
  const bool partitioned = grid && grid.size() == 2 && grid[0] * grid[1] > 1;
  if (partitioned)
    pm.addPass(mlir::llama::createLlamaScheduleCollectives());
  if (bf16 || partitioned) {
    mlir::llama::LlamaPlanMemoryOptions plan;
    plan.storageBytes = bf16 ? 2 : 4;
    plan.collectivesInFlight = partitioned;
    pm.addPass(mlir::llama::createLlamaPlanMemory(plan));
  }
  if (failed(pm.run(*copy)))
    return failure();
  CudaEmitter emitter(os, options);
  if (failed(emitter.emitModule(*copy)))
    return failure();
  if (figures)
    *figures = emitter.figures;
  return success();
}
