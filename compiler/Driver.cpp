//===- Driver.cpp - the llama-compile driver -----------------------------===//
#include "compiler/Driver.h"

#include "compiler/EmitCpu.h"
#include "compiler/EmitCuda.h"
#include "compiler/Estimate.h"
#include "compiler/InputGuard.h"
#include "compiler/Pipelines.h"
#include "compiler/Registration.h"
#include "compiler/Report.h"
#include "compiler/Toolchain.h"
#include "dialects/llama/IR/LlamaOps.h"
#include "models/LlamaBuilder.h"
#include "models/LlamaConfig.h"
#include "passes/Passes.h"
#include "passes/remat/RematBudget.h"
#include "runtime/cuda/kernels/shapes.h"
#include "runtime/cuda/layout.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <optional>
#include <stdexcept>

namespace cl = llvm::cl;
using namespace mlir;

namespace {
cl::OptionCategory category("llama-compile options");
cl::opt<std::string> inputFile(cl::Positional, cl::desc("[MODEL.mlir]"),
                               cl::init(""), cl::cat(category));
cl::opt<std::string> presetName("preset", cl::desc("model preset (see --list-presets)"),
                                cl::cat(category));
cl::opt<std::string> configFile("config",
                                cl::desc("HF config.json or Meta params.json"),
                                cl::cat(category));
cl::opt<int64_t> vocabSize("vocab-size",
                           cl::desc("vocabulary of a Meta params.json that says -1 "
                                    "(original LLaMA: it comes from the tokenizer)"),
                           cl::init(0), cl::cat(category));
cl::opt<bool> listPresets("list-presets", cl::desc("print the presets and exit"),
                          cl::cat(category));
cl::opt<std::string> target("target",
                            cl::desc("cpu | cuda (a GPU training binary, or --emit kernels)"),
                            cl::init("cpu"), cl::cat(category));
cl::opt<std::string> cudaActivations(
    "cuda-activations", cl::desc("storage type of CUDA activations: bf16 | f32"),
    cl::init("bf16"), cl::cat(category));
cl::opt<int64_t> gradBucket(
    "grad-bucket",
    cl::desc("--target cuda with --dp > 1: elements per ZeRO-1 bucket, each "
             "reduce-scattered under the rest of the backward and all-gathered under the "
             "next forward (default max(40M, 1M x dp), Megatron's)"),
    cl::init(0), cl::cat(category));
cl::opt<int64_t> batch("batch", cl::desc("sequences per step (default 4)"),
                       cl::init(4), cl::cat(category));
cl::opt<int64_t> seqLen("seq-len",
                        cl::desc("tokens per sequence (default min(256, max_position_embeddings))"),
                        cl::init(0), cl::cat(category));
cl::opt<std::string> remat("remat", cl::desc("none | selective | full | budget=BYTES (e.g. budget=12GiB)"),
                           cl::init("selective"), cl::cat(category));
cl::opt<std::string> dtype("dtype", cl::desc("f32 | f64 (f64 for gradient checks)"),
                           cl::init("f32"), cl::cat(category));
cl::opt<std::string> emit("emit", cl::desc("mlir | train-mlir | source | kernels (--target cuda) | hf-config"),
                          cl::init(""), cl::cat(category));
cl::opt<std::string> fitMemory(
    "fit-memory",
    cl::desc("pick the remat plan (and micro-batch, with gradient accumulation) "
             "that fits training in this many bytes, e.g. 80GiB"),
    cl::init(""), cl::cat(category));
cl::opt<long> estimateGradAccum(
    "grad-accum",
    cl::desc("with --gpu: micro-batches per optimizer step (the training binary's "
             "--grad-accum): the data-parallel collectives and AdamW run once per step"),
    cl::init(1), cl::cat(category));
cl::opt<std::string> gpuName(
    "gpu", cl::desc("with --report: estimate step time, MFU and GPU-hours on "
                    "a100-40gb | a100-80gb | h100-sxm | h100-pcie | h200"),
    cl::init(""), cl::cat(category));
cl::opt<std::string> tokenBudget(
    "tokens", cl::desc("with --gpu: GPU-hours to train on this many tokens (e.g. 1T, 1.4e12)"),
    cl::init(""), cl::cat(category));
cl::opt<double> assumeMfu("assume-mfu",
                          cl::desc("with --tokens: MFU to assume instead of the roofline's"),
                          cl::init(0.0), cl::cat(category));
cl::opt<int64_t> gridDp("dp",
                        cl::desc("data-parallel ranks (ZeRO-1; --batch stays the global batch)"),
                        cl::init(1), cl::cat(category));
cl::opt<int64_t> gridTp("tp", cl::desc("tensor-parallel ranks (Megatron: heads, FFN width, vocabulary)"),
                        cl::init(1), cl::cat(category));
cl::opt<int64_t> gridPp(
    "pp", cl::desc("pipeline-parallel stages: not built (accepted only as 1, so that a "
                   "published grid's missing axis is named, not ignored)"),
    cl::init(1), cl::cat(category));
cl::opt<bool> sequenceParallel(
    "sp", cl::desc("sequence parallelism: norms and residuals split along the "
                   "sequence over the --tp ranks"),
    cl::cat(category));
cl::opt<std::string> mode("mode",
                          cl::desc("train (default: train step, eval, generation) | "
                                   "generate (forward only: eval and KV-cache generation)"),
                          cl::init("train"), cl::cat(category));
cl::opt<int64_t> genChunk("gen-chunk",
                          cl::desc("tokens per prefill call of KV-cache generation (default 32)"),
                          cl::init(32), cl::cat(category));
cl::opt<int64_t> kvCapacity("kv-capacity",
                            cl::desc("KV cache positions for generation "
                                     "(default max_position_embeddings)"),
                            cl::init(0), cl::cat(category));
cl::opt<bool> noFuse("no-fuse",
                     cl::desc("skip llama-fuse (every op its own kernel; for comparisons)"),
                     cl::init(false), cl::cat(category));
cl::opt<bool> report("report", cl::desc("print parameter and memory figures"),
                     cl::cat(category));
cl::opt<bool> printParams("print-params", cl::desc("print 'params: N'"),
                          cl::cat(category));
cl::opt<std::string> outputFile("o", cl::desc("output file (executable unless --emit)"),
                                cl::value_desc("OUT"), cl::init(""), cl::cat(category));
cl::opt<bool> keepSource("keep-source", cl::desc("also write OUT.cpp (and OUT.cu for --target cuda) when building"),
                         cl::cat(category));
cl::opt<std::string> cxx("cxx", cl::desc("C++ compiler (default $CXX or c++)"),
                         cl::init(""), cl::cat(category));
cl::opt<bool> cudaEmulate(
    "cuda-emulate",
    cl::desc("--target cuda: build the binary with the generated kernels run on "
             "the CPU (runtime/cuda/emulate.h; slow, for testing without a GPU)"),
    cl::cat(category));
cl::opt<std::string> cudaArch(
    "arch", cl::desc("--target cuda: the GPU architecture (sm_90a: Hopper, the one the "
                     "runtime's CUDA library is built for)"),
    cl::init("sm_90a"), cl::cat(category));
cl::opt<std::string> nvccPath("nvcc", cl::desc("CUDA compiler (default: the one found at build time)"),
                              cl::init(""), cl::cat(category));

int fail(const llvm::Twine &msg) {
  llvm::errs() << "llama-compile: " << msg << "\n";
  return 1;
}

bool writeFile(StringRef path, StringRef text) {
  std::string err;
  auto out = openOutputFile(path, &err);
  if (!out) {
    llvm::errs() << "llama-compile: " << err << "\n";
    return false;
  }
  out->os() << text;
  out->keep();
  return true;
}

/// The string options as typed values, parsed once by parseOptions() at the
/// start of run() (which also checks each value); the code after reads
/// these, never the strings.
enum class Target { Cpu, Cuda };
enum class Emit { None, Mlir, TrainMlir, Source, Kernels, HfConfig };
enum class Mode { Train, Generate };
struct TypedOptions {
  Target target = Target::Cpu;
  Emit emit = Emit::None; // None: build an executable (or only report)
  Mode mode = Mode::Train;
  ::llama::CudaStorage storage = ::llama::CudaStorage::BF16;
  bool float64 = false; // --dtype f64
};
TypedOptions opts;

/// The value a string option names among `choices`; false (after the error
/// line, which lists `expected`) when it names none.
template <typename T>
bool choose(const cl::opt<std::string> &option, ArrayRef<std::pair<StringRef, T>> choices,
            const char *expected, T &out) {
  for (const auto &[name, value] : choices)
    if (option.getValue() == name) {
      out = value;
      return true;
    }
  fail("unknown --" + option.ArgStr + " '" + option.getValue() + "' (expected " + expected + ")");
  return false;
}

int parseOptions() {
  using ::llama::CudaStorage;
  if (!choose<Target>(target, {{"cpu", Target::Cpu}, {"cuda", Target::Cuda}}, "cpu or cuda",
                      opts.target) ||
      !choose<Emit>(emit,
                    {{"", Emit::None},
                     {"mlir", Emit::Mlir},
                     {"train-mlir", Emit::TrainMlir},
                     {"source", Emit::Source},
                     {"kernels", Emit::Kernels},
                     {"hf-config", Emit::HfConfig}},
                    "mlir, train-mlir, source, kernels or hf-config", opts.emit) ||
      !choose<Mode>(mode, {{"train", Mode::Train}, {"generate", Mode::Generate}},
                    "train or generate", opts.mode) ||
      !choose<CudaStorage>(cudaActivations,
                           {{"bf16", CudaStorage::BF16}, {"f32", CudaStorage::F32}},
                           "bf16 or f32", opts.storage))
    return 1;
  if (dtype != "f32" && dtype != "f64")
    return fail("--dtype must be f32 or f64, got '" + dtype + "'");
  opts.float64 = dtype == "f64";
  if (remat != "none" && remat != "selective" && remat != "full" &&
      !StringRef(remat).starts_with("budget="))
    return fail("unknown --remat '" + remat +
                "' (expected none, selective, full or budget=BYTES)");
  return 0;
}

/// This executable's path (set first thing in run()).
std::string mainExecutable;

/// Builds OUT from the emitted source(s) with the options above
/// (compiler/Toolchain.h).
int buildExecutable(StringRef source, StringRef out, StringRef cudaSource = "") {
  ::llama::ToolchainOptions t;
  t.mainExecutable = mainExecutable;
  t.cxx = cxx;
  t.nvcc = nvccPath;
  t.cudaArch = cudaArch;
  t.keepSource = keepSource;
  t.cudaEmulate = cudaEmulate;
  t.partitioned = gridDp * gridTp > 1;
  return ::llama::buildExecutable(source, out, cudaSource, t);
}

/// `--report --target cuda`: which attention kernels the training step uses
/// (EmitCuda picks by storage and head dim), with the tile rule's sizes and
/// dynamic shared memory (runtime/cuda/kernels/shapes.h; registers and
/// occupancy need ptxas: tools/bench/kernel_audit).
void printCudaAttention(ModuleOp module) {
  int64_t hd = 0;
  module.walk([&](mlir::llama::AttentionOp op) {
    hd = cast<RankedTensorType>(op.getQuery().getType()).getDimSize(3);
  });
  if (!hd)
    return;
  const bool bf16 = opts.storage == ::llama::CudaStorage::BF16;
  auto &os = llvm::outs();
  os << "cuda-attention-forward: ";
  if (bf16 && llk::flash_sm90_supports(hd))
    os << "tensor cores, wgmma + TMA, warp-specialized (flash_attention_sm90.cuh), head dim "
       << hd << ": " << llk::flash_sm90_query_rows(hd) << " query rows x "
       << llk::flash_sm90_key_rows(hd) << " keys a tile, " << llk::flash_sm90_threads(hd)
       << " threads (a producer and 2 consumer warpgroups), "
       << llk::flash_sm90_smem_bytes(hd) << " bytes of shared memory a block\n";
  else if (bf16 && llk::flash_attention_supports(hd))
    os << "tensor cores (flash_attention.cuh), head dim " << hd << ": "
       << llk::flash_query_rows(hd) << " query rows x " << llk::flash_key_rows(hd)
       << " keys a tile, " << llk::flash_warps(hd) << " warps, "
       << llk::flash_smem_bytes(hd) << " bytes of shared memory a block\n";
  else
    os << "CUDA cores (attention.cuh), head dim " << hd << ": a warp per query row\n";
  os << "cuda-attention-backward: ";
  if (bf16 && llk::flash_sm90_supports(hd))
    os << "tensor cores, wgmma + TMA, warp-specialized (flash_attention_sm90.cuh), head dim "
       << hd << ", deterministic: dQ " << llk::flash_sm90_dq_rows(hd) << " query rows x "
       << llk::flash_sm90_dq_keys(hd) << " keys (" << llk::flash_sm90_dq_smem_bytes(hd)
       << " bytes of shared memory), dK/dV " << llk::flash_sm90_bwd_keys(hd) << " keys x "
       << llk::flash_sm90_bwd_query_rows(hd) << " query rows ("
       << llk::flash_sm90_bwd_smem_bytes(hd) << " bytes), 384 threads\n";
  else if (bf16 && llk::flash_attention_backward_supports(hd))
    os << "tensor cores (flash_attention.cuh), head dim " << hd << ", deterministic: dQ 64 "
       << "query rows x 64 keys (" << llk::flash_bwd_dq_smem_bytes(hd)
       << " bytes of shared memory), dK/dV 64 keys x " << llk::flash_bwd_query_rows(hd)
       << " query rows (" << llk::flash_bwd_dkv_smem_bytes(hd) << " bytes), 4 warps\n";
  else
    os << "CUDA cores (attention.cuh), head dim " << hd << ": a warp per query row, then per "
       << "key row\n";
}

/// `--report --target cuda`: the device memory the binary's sessions will
/// hold, from the plan the CUDA emitter makes and the layout functions the
/// sessions allocate by (runtime/cuda/layout.h): the training session
/// (fp32 master weights and a bf16 copy with bf16 storage, fp32 gradients
/// and AdamW moments, one arena for the larger of the train and eval plans,
/// workspaces, the batch, chunk tables, ABFT rows, collective staging) and
/// the generator; then cuBLASLt's 32 MiB workspace. `memcheck` on the
/// binary reports the bytes the session holds: the same number.
LogicalResult printCudaMemory(ModuleOp module, const ::llama::GpuSpec *gpu) {
  std::string discard;
  llvm::raw_string_ostream os(discard);
  ::llama::CudaEmitOptions options;
  options.activations = opts.storage;
  options.session = true;
  options.gradBucketElements = gradBucket;
  ::llama::CudaPlanFigures f;
  if (failed(::llama::emitCudaKernels(module, os, options, &f)))
    return failure();
  const int64_t local = ::llama::countParams(module);
  const int64_t cublasLt = int64_t(32) << 20;
  llvm::outs() << "cuda-storage: " << ::llama::storageName(opts.storage) << "\n";
  printCudaAttention(module);
  // Generation (@prefill / @decode): the device generator's allocations,
  // by the layout function the generator allocates with.
  if (f.genChunk > 0) {
    const llamart::cuda::GeneratorLayout g = llamart::cuda::generator_layout(
        local, ::llama::storageBytes(opts.storage), f.kvCacheElements, f.prefillArenaBytes,
        f.decodeArenaBytes, f.workspaceBytes, f.genRows, f.genChunk, f.vocab);
    llvm::outs() << "cuda-generate-weights-bytes: " << g.weights << "\n"
                 << "cuda-kv-cache-bytes: " << g.kv_cache << "\n"
                 << "cuda-generate-arena-bytes: " << g.arena << "\n"
                 << "cuda-generator-bytes: " << g.total() << "\n"
                 << "cuda-generator-device-bytes: " << g.total() + cublasLt << "\n";
  }
  if (!module.lookupSymbol<func::FuncOp>("train_step"))
    return success(); // --mode generate: no training session
  // The training session's block, by the layout function the session
  // allocates with: this rank's parameters padded to a multiple of dp,
  // ZeRO-1's moments (and, with dp > 1, the dp-reduced gradient) of its
  // shard, bf16 masters of the shard alone on a dp grid, the arena and its
  // memcheck guard, workspaces, the batch, the chunk tables, the ABFT rows,
  // and the collectives' staging.
  llamart::cuda::SessionSizes sizes;
  sizes.param_numel = local;
  sizes.dp = gridDp;
  sizes.act_bytes = ::llama::storageBytes(opts.storage);
  sizes.buckets = f.gradBucketBounds.empty() ? 1 : int64_t(f.gradBucketBounds.size()) - 1;
  sizes.train_arena = f.trainArenaBytes;
  sizes.eval_arena = f.evalArenaBytes;
  sizes.workspace = f.workspaceBytes;
  sizes.gemm_max_dim = f.gemmMaxDim;
  sizes.collective_staging = f.stagingBytes;
  if (auto fn = module.lookupSymbol<func::FuncOp>("forward"))
    for (BlockArgument arg : fn.getArguments()) {
      if (fn.getArgAttr(arg.getArgNumber(), mlir::llama::kParamNameAttr))
        ++sizes.num_params;
      else if (auto rt = dyn_cast<RankedTensorType>(arg.getType());
               rt && isa<IntegerType>(rt.getElementType()) && !sizes.tokens)
        sizes.tokens = rt.getNumElements();
    }
  const llamart::cuda::SessionLayout layout = llamart::cuda::session_layout(sizes);
  llvm::outs() << "cuda-train-arena-bytes: " << f.trainArenaBytes << "\n"
               << "cuda-eval-arena-bytes: " << f.evalArenaBytes << "\n"
               << "cuda-state-bytes: " << layout.state_bytes() << "\n"
               << "cuda-session-bytes: " << layout.total() << "\n"
               << "cuda-device-bytes: " << layout.total() + cublasLt << "\n";
  if (gpu) {
    // Plainly whether this grid fits the GPU, and when the state alone does
    // not, the axis that would: pipeline stages, which are not built.
    const double need = double(layout.total() + cublasLt), have = gpu->memoryBytes;
    llvm::outs() << "cuda-fits-" << gpu->name << ": "
                 << (need <= have ? "yes" : "no") << " ("
                 << llvm::format("%.1f", need / 1e9) << " of " << llvm::format("%.1f", have / 1e9)
                 << " GB)";
    if (need > have && double(layout.state_bytes()) > have)
      llvm::outs() << "; parameters, gradients and optimizer state alone are "
                   << llvm::format("%.1f", double(layout.state_bytes()) / 1e9)
                   << " GB a rank: more --tp, or layers split over pipeline stages "
                      "(pipeline parallelism is not built)";
    else if (need > have)
      llvm::outs() << "; activations dominate: --remat full or selective, --sp, a smaller "
                      "--batch, or --fit-memory";
    llvm::outs() << "\n";
  }
  if (f.collectives)
    llvm::outs() << "cuda-collectives: " << f.collectives << " (" << f.overlappedCollectives
                 << " overlapping " << f.overlappedOps << " kernels and GEMMs)\n"
                 << "cuda-collective-staging-bytes: " << f.stagingBytes << "\n";
  if (!f.gradBucketBounds.empty())
    llvm::outs() << "cuda-grad-buckets: " << f.gradBucketBounds.size() - 1
                 << " (reduce-scatters overlap the last " << f.opsAfterFirstBucket << " of "
                 << f.trainComputeOps << " train-step kernels and GEMMs)\n";
  if (!f.gradBucketBounds.empty())
    llvm::outs() << "cuda-param-gathers: " << f.gradBucketBounds.size() - 1
                 << " (all-gathers overlap the first " << f.opsBeforeLastGather << " of "
                 << f.trainComputeOps << " train-step kernels and GEMMs)\n";
  return success();
}

/// The config of a --preset / --config model (none for MODEL.mlir).
std::optional<::llama::LlamaConfig> loadedConfig;

/// Grids that cannot split the model: one line naming the flag and the
/// dimension, before any pass runs. (A MODEL.mlir's shapes are checked by
/// llama-shard itself, which names the op.)
void validateGrid(const ::llama::LlamaConfig &c, int64_t globalBatch,
                  int64_t seq) {
  auto bad = [](const std::string &m) { throw std::runtime_error(m); };
  if (gridDp < 1 || gridTp < 1)
    bad("--dp and --tp must be >= 1");

  if (sequenceParallel && gridTp < 2)
    bad("--sp splits the sequence over the tensor-parallel ranks: it needs --tp >= 2");
  std::string tp = "--tp " + std::to_string(gridTp) + ": ";
  auto divides = [&](int64_t n, const char *what) {
    if (n % gridTp != 0)
      bad(tp + "the " + std::to_string(n) + " " + what + " of '" + c.name +
          "' do not split over " + std::to_string(gridTp) +
          " tensor-parallel ranks");
  };
  divides(c.num_heads, "attention heads");
  divides(c.num_kv_heads, "KV heads");
  divides(c.intermediate_size, "feed-forward units (intermediate_size)");
  divides(c.vocab_size, "vocabulary entries");
  if (sequenceParallel && seq % gridTp != 0)
    bad("--sp: --seq-len " + std::to_string(seq) + " does not split over " +
        std::to_string(gridTp) + " tensor-parallel ranks");
  if (globalBatch % gridDp != 0)
    bad("--dp " + std::to_string(gridDp) + ": the global --batch " +
        std::to_string(globalBatch) + " does not split over " +
        std::to_string(gridDp) + " data-parallel ranks");
}

OwningOpRef<ModuleOp> loadModel(MLIRContext &ctx, llvm::SourceMgr &sourceMgr,
                                std::optional<int64_t> batchOverride = std::nullopt) {
  int sources = !presetName.empty() + !configFile.empty() + !inputFile.empty();
  if (sources != 1)
    throw std::runtime_error(
        "give exactly one of --preset NAME, --config FILE or MODEL.mlir");
  if (!inputFile.empty()) {
    if (batch.getNumOccurrences() || seqLen.getNumOccurrences() ||
        dtype.getNumOccurrences())
      throw std::runtime_error(
          "--batch, --seq-len and --dtype apply to --preset/--config; " +
          inputFile + " fixes its own shapes and element type");
    std::string err;
    auto file = openInputFile(inputFile, &err);
    if (!file)
      throw std::runtime_error(inputFile + ": " + err);
    if (auto deep = ::llama::checkNesting(file->getBuffer()))
      throw std::runtime_error(inputFile + ": " + *deep);
    sourceMgr.AddNewSourceBuffer(std::move(file), llvm::SMLoc());
    auto module = parseSourceFile<ModuleOp>(sourceMgr, &ctx);
    if (!module)
      throw std::runtime_error(inputFile + ": not a valid llama module (see the errors above)");
    if (!(*module)->hasAttr(mlir::llama::kModelNameAttr))
      (*module)->setAttr(mlir::llama::kModelNameAttr,
                         StringAttr::get(&ctx, llvm::sys::path::stem(inputFile)));
    return module;
  }
  if (vocabSize.getNumOccurrences() && configFile.empty())
    throw std::runtime_error("--vocab-size applies to --config PARAMS.json only");
  ::llama::MetaParamsOptions meta;
  if (vocabSize.getNumOccurrences())
    meta.vocabSize = vocabSize;
  ::llama::LlamaConfig config = presetName.empty() ? ::llama::loadConfigFile(configFile, meta)
                                                 : ::llama::preset(presetName);
  ::llama::BuildOptions options;
  options.batch = batchOverride.value_or(batch);
  options.seqLen = seqLen ? int64_t(seqLen)
                          : std::min<int64_t>(256, config.max_position_embeddings);
  options.float64 = opts.float64;
  loadedConfig = config;
  validateGrid(config, options.batch, options.seqLen);
  auto module = ::llama::buildForward(ctx, config, options);
  // Single-process programs also get @prefill / @decode (KV-cache
  // generation); a partitioned one generates with the one-rank binary.
  if (gridDp * gridTp == 1) {
    ::llama::GenerateOptions gen;
    gen.chunk = std::min<int64_t>(genChunk, kvCapacity ? int64_t(kvCapacity)
                                                       : config.max_position_embeddings);
    gen.capacity = kvCapacity;
    gen.float64 = options.float64;
    ::llama::addGenerateFunctions(*module, config, gen);
  }
  return module;
}

/// The training pipeline on `module` with one remat policy (--mode
/// generate: no train step, only the memory plan of the forward functions).
LogicalResult compileWith(ModuleOp module, const std::string &rematPolicy) {
  PassManager pm(module.getContext());
  if (opts.mode == Mode::Generate) {
    if (!noFuse)
      pm.addPass(mlir::llama::createLlamaFuse());
    pm.addPass(mlir::llama::createLlamaPlanMemory());
    return pm.run(module);
  }
  ::llama::TrainingPipelineOptions options;
  options.remat = rematPolicy;
  options.dp = gridDp;
  options.tp = gridTp;
  options.sequenceParallel = sequenceParallel;
  options.fuse = !noFuse;
  ::llama::buildTrainingPipeline(pm, options);
  return pm.run(module);
}

/// --emit mlir of a partitioned program: the forward one rank runs.
LogicalResult partitionOnly(ModuleOp module) {
  if (gridDp * gridTp == 1)
    return success();
  PassManager pm(module.getContext());
  pm.addPass(mlir::llama::createLlamaShard({gridDp, gridTp, sequenceParallel}));
  return pm.run(module);
}

/// --fit-memory: the largest micro-batch (a divisor of --batch, the rest made
/// up by gradient accumulation) whose training memory fits with some remat
/// plan, and the plan with the least recomputation at that micro-batch.
/// Returns the compiled module, or null after printing why nothing fits.
OwningOpRef<ModuleOp> fitToMemory(MLIRContext &ctx, llvm::SourceMgr &sourceMgr,
                                  ModuleOp loaded, int64_t limit) {
  // A MODEL.mlir fixes its own batch (the leading dimension of its tokens);
  // presets and configs can be rebuilt at any divisor of --batch.
  int64_t globalBatch = batch;
  if (!inputFile.empty())
    if (auto fwd = loaded.lookupSymbol<func::FuncOp>("forward"))
      for (BlockArgument arg : fwd.getArguments())
        if (fwd.getArgAttr(arg.getArgNumber(), mlir::llama::kInputAttr))
          if (auto t = dyn_cast<RankedTensorType>(arg.getType()); t && t.getRank() > 0)
            globalBatch = t.getDimSize(0);
  std::vector<int64_t> microBatches{globalBatch};
  if (inputFile.empty())
    for (int64_t b = globalBatch - 1; b >= 1; --b)
      if (globalBatch % b == 0 && b % gridDp == 0)
        microBatches.push_back(b);
  int64_t smallest = -1;
  std::string smallestWhat;
  for (int64_t b : microBatches) {
    auto build = [&]() -> OwningOpRef<ModuleOp> {
      if (b == globalBatch)
        return loaded.clone();
      return loadModel(ctx, sourceMgr, b);
    };
    int64_t accum = globalBatch / b;
    // `full` is the smallest fixed plan (the budget search may beat it a
    // little); it needs layer tags, without which `selective` is the floor.
    // If even that does not fit, try a smaller micro-batch.
    OwningOpRef<ModuleOp> probe = build();
    bool layered = false;
    probe->walk([&](Operation *op) { layered |= op->hasAttr(mlir::llama::kLayerAttr); });
    if (failed(compileWith(*probe, layered ? "full" : "selective")))
      return nullptr;
    ::llama::MemoryReport minimal = ::llama::computeMemoryReport(*probe);
    int64_t minimalTotal = ::llama::totalTrainingBytes(minimal, accum);
    if (smallest < 0 || minimalTotal < smallest) {
      smallest = minimalTotal;
      smallestWhat = "micro-batch " + std::to_string(b) + ", remat " +
                     (layered ? "full" : "selective");
    }
    int64_t budget = limit - (minimalTotal - minimal.arenaPeakBytes);
    if (budget < minimal.arenaPeakBytes)
      continue;
    OwningOpRef<ModuleOp> module = build();
    if (failed(compileWith(*module, "budget=" + std::to_string(budget))))
      return nullptr;
    ::llama::MemoryReport chosen = ::llama::computeMemoryReport(*module);
    llvm::outs() << "fit-memory: " << ::llama::totalTrainingBytes(chosen, accum)
                 << " of " << limit << " bytes with micro-batch " << b
                 << " x grad-accum " << accum << " (global batch " << globalBatch
                 << "), remat plan " << chosen.rematPlan << "\n";
    if (accum > 1)
      llvm::outs() << "fit-memory: train with --grad-accum " << accum << "\n";
    return module;
  }
  llvm::errs() << "llama-compile: training does not fit in " << limit
               << " bytes; the smallest it reaches is " << smallest << " bytes ("
               << smallestWhat << ")\n";
  return nullptr;
}

int run(int argc, char **argv) {
  mainExecutable = llvm::sys::fs::getMainExecutable(argv[0], reinterpret_cast<void *>(&run));
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(argc, argv,
                              "llama-compile: a LLaMA config or model in, a training binary out\n");
  // LLVM's cl lets a repeated option silently override the first; a compile
  // command with two presets or two remat policies is a mistake.
  for (cl::Option *opt : std::initializer_list<cl::Option *>{
           &presetName, &configFile, &target, &batch, &seqLen, &remat, &dtype,
           &emit, &outputFile, &cxx, &fitMemory, &vocabSize, &gridDp, &gridTp, &gridPp, &cudaActivations,
           &genChunk, &kvCapacity, &mode, &gradBucket})
    if (opt->getNumOccurrences() > 1)
      return fail("--" + opt->ArgStr + " given more than once");
  if (listPresets) {
    for (const auto &name : ::llama::presetNames())
      llvm::outs() << name << "\n";
    return 0;
  }
  if (gridPp != 1)
    return fail("--pp " + std::to_string(gridPp) +
                ": pipeline parallelism is not built (the grid has data, tensor and sequence "
                "parallelism: --dp, --tp, --sp); --report --gpu says what a grid without it "
                "needs per GPU");
  if (int rc = parseOptions())
    return rc;
  const bool cuda = opts.target == Target::Cuda;
  if (cuda && opts.emit == Emit::Source)
    return fail("--target cuda: --emit " + emit +
                " is CPU source; --emit kernels writes the CUDA source");
  if (cudaEmulate && !cuda)
    return fail("--cuda-emulate needs --target cuda");
  if (cudaArch.getNumOccurrences() && !cuda)
    return fail("--arch needs --target cuda");
  if (gradBucket.getNumOccurrences() && (!cuda || gridDp < 2))
    return fail("--grad-bucket sizes the gradient buckets of --target cuda on a --dp grid");
  if (gradBucket < 0 || (gradBucket.getNumOccurrences() && gradBucket == 0))
    return fail("--grad-bucket must be a positive number of elements");
  if (cudaArch != "sm_90a")
    return fail("--arch " + cudaArch +
                ": the runtime's CUDA library (cuBLASLt GEMMs, device probe) is built "
                "for sm_90a only; Hopper (H100, H200) is the supported GPU");
  const bool cudaBinary = cuda && opts.emit == Emit::None && !outputFile.empty();
  if (cudaBinary) {
    if (opts.float64)
      return fail("--target cuda: --dtype " + dtype + " is not available on the GPU "
                  "(fp32 master weights; --cuda-activations picks bf16 or fp32 storage)");
  }
  if (opts.emit == Emit::Kernels && !cuda)
    return fail("--emit kernels needs --target cuda");
  if (opts.mode == Mode::Generate) {
    if (gridDp * gridTp > 1)
      return fail("--mode generate builds a single-process program; drop --dp/--tp "
                  "(checkpoints of partitioned runs load into it as they are)");
    if (!inputFile.empty())
      return fail("--mode generate needs --preset or --config (the KV-cache "
                  "functions are built from the model's config)");
    for (cl::Option *opt : std::initializer_list<cl::Option *>{&remat, &fitMemory})
      if (opt->getNumOccurrences())
        return fail("--" + opt->ArgStr + " applies to training; --mode generate has no backward");
  }
  if (opts.emit == Emit::None && !report && !printParams && outputFile.empty())
    return fail("nothing to do: give -o OUT, --emit, --report or --print-params");

  DialectRegistry registry;
  ::llama::registerCompilerDialects(registry);
  MLIRContext ctx(registry);
  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler diagnostics(sourceMgr, &ctx);

  OwningOpRef<ModuleOp> module;
  try {
    module = loadModel(ctx, sourceMgr);
  } catch (const std::exception &e) {
    return fail(e.what());
  }
  if (failed(verify(*module)))
    return fail("the model does not verify (see the errors above)");

  if (printParams)
    llvm::outs() << "params: " << ::llama::countParams(*module) << "\n";
  if (opts.emit == Emit::HfConfig) {
    auto config = (*module)->getAttrOfType<StringAttr>(mlir::llama::kConfigAttr);
    if (!config)
      return fail("the model carries no llama.config attribute (HF config.json text)");
    if (outputFile.empty()) {
      llvm::outs() << config.getValue() << "\n";
      return 0;
    }
    return writeFile(outputFile, config.getValue().str() + "\n") ? 0 : 1;
  }
  if (opts.emit == Emit::Mlir) {
    if (failed(partitionOnly(*module)))
      return fail("partitioning failed (see the errors above)");
    if (outputFile.empty()) {
      module->print(llvm::outs());
      llvm::outs() << "\n";
      return 0;
    }
    std::string text;
    llvm::raw_string_ostream os(text);
    module->print(os);
    os << "\n";
    return writeFile(outputFile, text) ? 0 : 1;
  }
  if (!report && opts.emit == Emit::None && outputFile.empty())
    return 0;

  if (!fitMemory.empty()) {
    if (remat.getNumOccurrences())
      return fail("--fit-memory chooses the remat plan; do not also give --remat");
    std::optional<int64_t> limit = mlir::llama::parseByteSize(fitMemory);
    if (!limit || *limit <= 0)
      return fail("cannot read --fit-memory '" + fitMemory + "' (bytes, e.g. 80GiB)");
    try {
      module = fitToMemory(ctx, sourceMgr, *module, *limit);
    } catch (const std::exception &e) {
      return fail(e.what());
    }
    if (!module)
      return 1;
  } else if (failed(compileWith(*module, remat))) {
    return fail("compilation failed (see the errors above)");
  }
  if (report) {
    const ::llama::GpuSpec *gpu = nullptr;
    if (!gpuName.empty() && !(gpu = ::llama::findGpu(gpuName))) {
      std::string known;
      for (const auto &g : ::llama::knownGpus())
        known += (known.empty() ? "" : ", ") + g.name;
      return fail("unknown --gpu '" + gpuName + "' (known: " + known + ")");
    }
    ::llama::printReport(::llama::computeMemoryReport(*module), llvm::outs());
    if (cuda && failed(printCudaMemory(*module, gpu)))
      return fail("CUDA emission failed (see the errors above)");
    std::optional<double> tokens;
    if (!tokenBudget.empty()) {
      StringRef t(tokenBudget);
      double scale = 1;
      if (t.ends_with("T")) scale = 1e12, t = t.drop_back();
      else if (t.ends_with("B")) scale = 1e9, t = t.drop_back();
      else if (t.ends_with("M")) scale = 1e6, t = t.drop_back();
      double v;
      if (t.getAsDouble(v) || v <= 0)
        return fail("cannot read --tokens '" + tokenBudget + "' (e.g. 1T, 300B, 1.4e12)");
      tokens = v * scale;
      if (!gpu)
        return fail("--tokens needs --gpu");
    }
    std::optional<double> mfu;
    if (assumeMfu.getNumOccurrences()) {
      if (!(assumeMfu > 0 && assumeMfu <= 1))
        return fail("--assume-mfu must be in (0, 1]");
      mfu = assumeMfu;
    }
    if (estimateGradAccum < 1)
      return fail("--grad-accum must be at least 1");
    if (estimateGradAccum.getNumOccurrences() && !gpu)
      return fail("--grad-accum needs --gpu (the training binary takes its own --grad-accum)");
    auto estimate = gpu ? ::llama::estimateTraining(*module, *gpu, estimateGradAccum)
                        : ::llama::estimateFlops(*module);
    ::llama::printEstimate(estimate, gpu, tokens, mfu, llvm::outs());
  }

  std::string text;
  llvm::raw_string_ostream os(text);
  if (opts.emit == Emit::TrainMlir) {
    module->print(os);
    os << "\n";
  } else if (opts.emit == Emit::Kernels) {
    ::llama::CudaEmitOptions cudaOptions;
    cudaOptions.activations = opts.storage;
    cudaOptions.gradBucketElements = gradBucket;
    if (failed(::llama::emitCudaKernels(*module, os, cudaOptions)))
      return fail("CUDA emission failed (see the errors above)");
  } else if (cudaBinary) {
    // The CUDA source first: its train step's schedule decides the gradient
    // buckets that the program's ProgramInfo names.
    std::string cudaText;
    llvm::raw_string_ostream cos(cudaText);
    ::llama::CudaEmitOptions cudaOptions;
    cudaOptions.activations = opts.storage;
    cudaOptions.session = true;
    cudaOptions.gradBucketElements = gradBucket;
    ::llama::CudaPlanFigures figures;
    if (failed(::llama::emitCudaKernels(*module, cos, cudaOptions, &figures)))
      return fail("CUDA emission failed (see the errors above)");
    if (failed(::llama::emitCpuSource(*module, os, true, figures.gradBucketBounds)))
      return fail("emission failed (see the errors above)");
    return buildExecutable(text, outputFile, cudaText);
  } else if (opts.emit == Emit::Source || !outputFile.empty()) {
    if (failed(::llama::emitCpuSource(*module, os)))
      return fail("emission failed (see the errors above)");
  } else {
    return 0;
  }
  if (opts.emit != Emit::None) {
    if (outputFile.empty()) {
      llvm::outs() << text;
      return 0;
    }
    return writeFile(outputFile, text) ? 0 : 1;
  }
  return buildExecutable(text, outputFile);
}
} // namespace

int ::llama::compileMain(int argc, char **argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception &e) {
    return fail(e.what());
  }
}
