//===- Estimate.cpp - step time, MFU and GPU-hours before running --------===//
#include "compiler/Estimate.h"
#include "compiler/Report.h"

#include "dialects/llama/IR/LlamaOps.h"
#include "passes/remat/CostModel.h"
#include "runtime/cuda/kernels/shapes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/Support/Format.h"

#include <algorithm>
#include <map>
#include "llvm/ADT/DenseSet.h"

using namespace mlir;
using namespace mlir::llama;

namespace llama {

// Peaks and bandwidths from the vendors' sheets (REFERENCE.md for the bf16
// peaks). NVLink per direction: A100 NVLink 3 300 GB/s, H100/H200 NVLink 4
// 450 GB/s (an H100 PCIe card has none: PCIe 5 x16, ~50 GB/s). Network: a
// DGX A100 has one 200 Gb/s HDR port per GPU (25 GB/s), a DGX H100 one
// 400 Gb/s NDR port per GPU (50 GB/s).
const std::vector<GpuSpec> &knownGpus() {
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  static const std::vector<GpuSpec> gpus = {
      {"a100-40gb", 312e12, 1.555e12, 108, 1.41e9, 300e9, 25e9, 8, 40.0 * kGiB},
      {"a100-80gb", 312e12, 2.039e12, 108, 1.41e9, 300e9, 25e9, 8, 80.0 * kGiB},
      {"h100-sxm", 989e12, 3.35e12, 132, 1.98e9, 450e9, 50e9, 8, 80.0 * kGiB},
      {"h100-pcie", 756e12, 2.0e12, 114, 1.755e9, 0, 50e9, 8, 80.0 * kGiB},
      {"h200", 989e12, 4.8e12, 132, 1.98e9, 450e9, 50e9, 8, 141e9},
  };
  return gpus;
}

namespace {

// The estimate's constants. Each is a measured figure or an explicit
// assumption; none is a GPU measurement of our own kernels (no GPU has run
// them yet): tools/gpu-check replaces them when one does.
// cuBLASLt GEMMs: 798 of 989 TF/s on an 8192^3 bf16 GEMM, measured on an
// H100 by this workplace (REFERENCE.md); the same fraction on every GPU.
constexpr double kGemmFraction = 798.0 / 989.0;
// Memory-bound kernels: 16-byte accesses, one pass (runtime/cuda/kernels),
// at 90% of HBM bandwidth (what a well-written copy reaches).
constexpr double kBandwidthFraction = 0.9;
// Every kernel takes at least this long (a graph-replayed launch and the
// ramp of a small grid): it is what prices the many small kernels of a
// small model.
constexpr double kKernelFloorSeconds = 2e-6;
// NCCL's ring collectives reach about 80% of the link's bandwidth.
constexpr double kLinkFraction = 0.8;
// The CUDA-core attention (EmitCuda.cpp: one warp per query row, a warp-wide
// reduction per key) issues about this many warp instructions per (query,
// key) pair and 32-element slot of the head dimension: forward 4 per slot
// (two loads, two FMAs) + 18 (the 5-step shuffle reduction, max, two exps,
// the running sums); each of the backward's two kernels 6 per slot + 26 (two
// dot products, two reductions). Priced at every SM issuing one warp
// instruction per scheduler per clock: an upper bound on that kernel's speed.
constexpr double kAttnFwdPerSlot = 4, kAttnFwdFixed = 18;
constexpr double kAttnBwdPerSlot = 12, kAttnBwdFixed = 52;
// The tensor-core attention (runtime/cuda/kernels/flash_attention.cuh; bf16
// storage, head dims that are multiples of 16: forward up to 256, backward
// up to 128; the forward at head dims 64 and 128 FA3-style on TMA and
// wgmma, flash_attention_sm90.cuh): its tile GEMMs at FlashAttention-2's
// measured H100 rate, about 35% of peak (298-335 TF/s forward, FA3 paper),
// not FA3's 521-616, until tools/gpu-check measures ours: an estimate does
// not credit a kernel no device has timed. The causal forward is 4 D FLOPs
// per (query, key) pair (QK^T
// and PV); the deterministic backward runs 7 such tile GEMMs to the
// forward's 2 (QK^T and dO V^T in both its kernels, then dV, dK, dQ): 3.5x.
constexpr double kFlashFraction = 0.35;
constexpr double kFlashBackwardOverForward = 3.5;
// AdamW on fp32 state: the gradient norm reads the gradient (4 bytes), the
// update reads gradient, both moments and the master weight (16) and writes
// the moments, the master and the bf16 copy (14).
constexpr double kOptimizerBytesPerParam = 34;

/// Kernels one op's launcher runs (EmitCuda.cpp / runtime/cuda/kernels).
int64_t kernelsOf(Operation *op) {
  if (isa<CrossEntropyFusedOp, CrossEntropyOp, EmbeddingGradOp>(op))
    return 3;
  if (isa<RMSNormGradRstdOp, RMSNormGradOp, AttentionGradOp, CrossEntropyGradOp>(op))
    return 2;
  return 1;
}

} // namespace

const GpuSpec *findGpu(const std::string &name) {
  for (const GpuSpec &g : knownGpus())
    if (g.name == name)
      return &g;
  return nullptr;
}

TrainingEstimate estimateFlops(ModuleOp module) {
  TrainingEstimate e;
  auto forward = module.lookupSymbol<func::FuncOp>("forward");
  if (!forward)
    return e;
  // Non-embedding parameters: every float argument but the embedding table,
  // which is a gather, not a matmul (unless tied to the output projection).
  llvm::DenseSet<Value> gatherOnly;
  forward.walk([&](EmbeddingOp op) {
    Value table = op.getTable();
    bool alsoMatmul = llvm::any_of(table.getUsers(), [](Operation *u) { return isa<MatmulOp>(u); });
    if (!alsoMatmul)
      gatherOnly.insert(table);
  });
  // A partitioned program (llama-shard) is one rank's: the model's FLOPs
  // come from the full parameter shapes, all heads and the global batch.
  int64_t dp = 1, tp = 1;
  if (auto grid = module->getAttrOfType<DenseI64ArrayAttr>(kGridAttr);
      grid && grid.size() == 2) {
    dp = grid[0];
    tp = grid[1];
  }
  e.ranks = dp * tp;
  for (BlockArgument arg : forward.getArguments()) {
    auto t = cast<RankedTensorType>(arg.getType());
    if (isa<FloatType>(t.getElementType())) {
      double n = double(t.getNumElements());
      if (auto full = forward.getArgAttrOfType<DenseI64ArrayAttr>(arg.getArgNumber(),
                                                                  kFullShapeAttr)) {
        n = 1;
        for (int64_t d : full.asArrayRef())
          n *= double(d);
      }
      e.nonEmbeddingParams += gatherOnly.contains(arg) ? 0 : n;
    } else if (!e.tokensPerStep) {
      e.tokensPerStep = t.getNumElements() * dp;
    }
  }
  // 12 L H Q T: attention scores and values, forward and backward.
  double attention = 0;
  forward.walk([&](AttentionOp op) {
    attention += 12.0 * op.getNumHeads() * tp * op.getHeadDim() *
                 cast<RankedTensorType>(op.getQuery().getType()).getDimSize(1);
  });
  e.flopsPerToken = 6.0 * e.nonEmbeddingParams + attention;
  return e;
}

TrainingEstimate estimateTraining(ModuleOp module, const GpuSpec &gpu, int64_t microSteps) {
  TrainingEstimate e = estimateFlops(module);
  e.microSteps = microSteps;
  e.tokensPerStep *= microSteps;
  auto step = module.lookupSymbol<func::FuncOp>("train_step");
  if (!step)
    return e;
  StepTime &t = e.time;
  std::map<std::string, std::pair<double, int64_t>> byOp; // seconds, launches
  const double issueRate = double(gpu.sms) * 4.0 * gpu.clockHz; // warp instr/s
  for (Operation &op : step.getBody().front()) {
    if (!op.getDialect() || op.getDialect()->getNamespace() != "llama" ||
        isa<func::ReturnOp>(op))
      continue;
    OpCost c = estimateCost(&op);
    // The IR counts in its own element type; the GPU stores activations in bf16.
    double bytes = c.bytes;
    for (Type ty : op.getResultTypes())
      if (auto rt = dyn_cast<RankedTensorType>(ty)) {
        bytes *= 2.0 / (rt.getElementTypeBitWidth() / 8);
        break;
      }
    if (c.flops == 0 && bytes == 0)
      continue; // views: no kernel
    e.rooflineSeconds += std::max(c.flops / gpu.peakFlops, bytes / gpu.bandwidth);
    double seconds;
    std::string kind = op.getName().stripDialect().str();
    if (isa<MatmulOp>(op)) {
      seconds = std::max(c.flops / (gpu.peakFlops * kGemmFraction),
                         bytes / (gpu.bandwidth * kBandwidthFraction));
      t.gemm += seconds;
    } else if (isa<AttentionOp, AttentionGradOp>(op)) {
      auto q = cast<RankedTensorType>(op.getOperand(isa<AttentionOp>(op) ? 0 : 1).getType())
                   .getShape();
      const double pairs = double(q[0]) * double(q[2]) * double(q[1]) * double(q[1] + 1) / 2;
      const bool forward = isa<AttentionOp>(op);
      if (forward ? llk::flash_attention_supports(q[3])
                  : llk::flash_attention_backward_supports(q[3])) {
        const double flops =
            4.0 * double(q[3]) * pairs * (forward ? 1.0 : kFlashBackwardOverForward);
        seconds = flops / (gpu.peakFlops * kFlashFraction);
      } else {
        const double slots = double((q[3] + 31) / 32);
        const double perPair = forward ? kAttnFwdPerSlot * slots + kAttnFwdFixed
                                       : kAttnBwdPerSlot * slots + kAttnBwdFixed;
        seconds = pairs * perPair / issueRate;
      }
      t.attention += seconds;
    } else {
      seconds = bytes / (gpu.bandwidth * kBandwidthFraction);
      t.memoryBound += seconds;
    }
    const int64_t kernels = isa<MatmulOp>(op) ? 1 : kernelsOf(&op);
    const double floor = double(kernels) * kKernelFloorSeconds;
    if (seconds < floor) {
      t.launchFloor += floor - seconds;
      seconds = floor;
    }
    auto &[total, launches] = byOp[kind];
    total += seconds;
    launches += 1;
  }
  double params = 0;
  for (Type ty : step.getArgumentTypes())
    if (auto rt = dyn_cast<RankedTensorType>(ty); rt && isa<FloatType>(rt.getElementType()))
      params += rt.getNumElements();
  int64_t dp = 1, tp = 1;
  if (auto grid = module->getAttrOfType<DenseI64ArrayAttr>(kGridAttr); grid && grid.size() == 2) {
    dp = grid[0];
    tp = grid[1];
  }
  // AdamW on fp32 state (ZeRO-1: this rank's shard of its parameters).
  t.optimizer = kOptimizerBytesPerParam * params / double(dp) /
                (gpu.bandwidth * kBandwidthFraction);
  e.rooflineSeconds = e.rooflineSeconds * double(microSteps) +
                      32.0 * params / double(dp) / gpu.bandwidth;
  // Collectives. Tensor parallelism stays inside a node (NVLink); the data-
  // parallel axis crosses nodes once the grid is larger than one. The IR
  // counts fp32 bytes: tensor-parallel traffic is bf16 activations on the
  // GPU; ZeRO-1 reduce-scatters fp32 gradients and all-gathers bf16 weights.
  const MemoryReport r = computeMemoryReport(module);
  auto link = [&](bool inNode) {
    return (inNode && gpu.nvlinkBw > 0 ? gpu.nvlinkBw : gpu.networkBw) * kLinkFraction;
  };
  const bool dpInNode = dp * tp <= gpu.gpusPerNode;
  t.tpComm = 0.5 * r.tpComm.sentBytes / link(tp <= gpu.gpusPerNode);
  const double reduceScatter = (0.5 * r.zeroComm.sentBytes + r.dpComm.sentBytes) / link(dpInNode);
  const double allGather = 0.25 * r.zeroComm.sentBytes / link(dpInNode);
  t.dpComm = reduceScatter + allGather;
  // Overlap: the tensor-parallel collectives sit between the kernels that
  // produce and consume them (the schedule overlaps a few with weight-gradient
  // GEMMs; not credited here). The ZeRO-1 reduce-scatters run under the rest
  // of the last micro-batch's backward and the all-gathers under the next
  // step's first forward (about 2/3 and 1/3 of one micro-batch's compute):
  // only what exceeds those is exposed.
  const double compute = t.gemm + t.attention + t.memoryBound + t.launchFloor;
  t.tpExposed = t.tpComm;
  t.dpExposed = std::max(0.0, reduceScatter - 2.0 / 3.0 * compute) +
                std::max(0.0, allGather - 1.0 / 3.0 * compute);
  // Every micro-batch runs the forward, the backward and their collectives.
  const double m = double(microSteps);
  t.gemm *= m;
  t.attention *= m;
  t.memoryBound *= m;
  t.launchFloor *= m;
  t.tpComm *= m;
  t.tpExposed *= m;
  for (auto &[kind, v] : byOp)
    v.first *= m;
  byOp["tp collectives (exposed)"] = {t.tpExposed, int64_t(r.tpComm.collectives)};
  byOp["dp collectives (exposed)"] = {t.dpExposed, int64_t(r.zeroComm.collectives +
                                                            r.dpComm.collectives)};
  byOp["optimizer"] = {t.optimizer, 1};
  e.stepSeconds = t.total();
  e.mfu = e.flopsPerToken * e.tokensPerStep / (e.stepSeconds * gpu.peakFlops * e.ranks);
  for (auto &[kind, v] : byOp)
    e.bounds.emplace_back(kind, v.first, v.second);
  std::sort(e.bounds.begin(), e.bounds.end(),
            [](const auto &a, const auto &b) { return std::get<1>(a) > std::get<1>(b); });
  return e;
}

void printEstimate(const TrainingEstimate &e, const GpuSpec *gpu,
                   std::optional<double> tokens, std::optional<double> assumedMfu,
                   llvm::raw_ostream &os) {
  os << "non-embedding-params: " << llvm::format("%.0f", e.nonEmbeddingParams) << "\n"
     << "flops-per-token: " << llvm::format("%.6e", e.flopsPerToken) << "\n";
  if (!gpu)
    return;
  auto ms = [](double s) { return llvm::format("%.3f", s * 1e3); };
  const StepTime &t = e.time;
  os << "gpu: " << gpu->name << " (" << llvm::format("%.0f", gpu->peakFlops / 1e12)
     << " TFLOP/s bf16, " << llvm::format("%.2f", gpu->bandwidth / 1e12) << " TB/s)\n";
  if (e.microSteps > 1)
    os << "estimate-micro-batches: " << e.microSteps << " per optimizer step\n";
  os
     << "estimate-basis: the kernels as generated: GEMMs at "
     << llvm::format("%.1f", 100 * kGemmFraction)
     << "% of peak (measured, H100 8192^3), attention on tensor cores at "
     << llvm::format("%.0f", 100 * kFlashFraction)
     << "% of peak (FlashAttention-2's H100 rate; CUDA cores, issue-bound, for head dims "
        "the tensor-core kernels do not take), other kernels at "
     << llvm::format("%.0f", 100 * kBandwidthFraction) << "% of HBM bandwidth, "
     << llvm::format("%.0f", kKernelFloorSeconds * 1e6) << " us per kernel at least, "
     << "collectives at " << llvm::format("%.0f", 100 * kLinkFraction)
     << "% of NVLink/InfiniBand; not measured on a GPU\n"
     << "estimated-ms: gemm " << ms(t.gemm) << ", attention " << ms(t.attention)
     << ", memory-bound " << ms(t.memoryBound) << ", kernel-floor " << ms(t.launchFloor)
     << ", optimizer " << ms(t.optimizer) << ", tp-comm " << ms(t.tpComm) << " ("
     << ms(t.tpExposed) << " exposed), dp-comm " << ms(t.dpComm) << " (" << ms(t.dpExposed)
     << " exposed)\n"
     << "estimated-bound-by:";
  double total = e.stepSeconds > 0 ? e.stepSeconds : 1;
  for (size_t i = 0; i < e.bounds.size() && i < 4; ++i) {
    const auto &[kind, seconds, launches] = e.bounds[i];
    os << (i ? "," : "") << " " << kind << " " << llvm::format("%.0f", 100 * seconds / total)
       << "% (" << launches << (kind == "optimizer" ? " launch" : " ops") << ")";
  }
  os << "\n"
     << "estimated-step-seconds: " << llvm::format("%.6f", e.stepSeconds) << "\n"
     << "estimated-tokens-per-second: "
     << llvm::format("%.0f", e.tokensPerStep / e.stepSeconds) << "\n";
  if (e.ranks > 1)
    os << "estimated-tokens-per-second-per-gpu: "
       << llvm::format("%.0f", e.tokensPerStep / e.stepSeconds / e.ranks) << "\n";
  os << "estimated-mfu: " << llvm::format("%.4f", e.mfu) << "\n"
     << "roofline-mfu: "
     << llvm::format("%.4f", e.flopsPerToken * e.tokensPerStep /
                                 (e.rooflineSeconds * gpu->peakFlops * e.ranks))
     << " (every FLOP at peak, every byte at HBM bandwidth, no communication: an upper "
        "bound)\n";
  if (tokens) {
    double mfu = assumedMfu.value_or(e.mfu);
    double hours = *tokens * e.flopsPerToken / (gpu->peakFlops * mfu) / 3600.0;
    os << "gpu-hours: " << llvm::format("%.0f", hours) << " for "
       << llvm::format("%.4g", *tokens) << " tokens at MFU "
       << llvm::format("%.4f", mfu) << (assumedMfu ? " (assumed)" : " (estimated)")
       << "\n";
  }
}

} // namespace llama
