//===- Estimate.h - step time, MFU and GPU-hours before running -*- C++ -*-===//
#pragma once

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace llama {

struct GpuSpec {
  std::string name;
  double peakFlops;     // dense bf16 tensor cores, FLOP/s
  double bandwidth;     // HBM, bytes/s
  int sms;              // streaming multiprocessors
  double clockHz;       // boost clock
  double nvlinkBw;      // NVLink per GPU and direction, bytes/s (0: none)
  double networkBw;     // the GPU's share of its node's InfiniBand, bytes/s
  int gpusPerNode;      // GPUs that share NVLink (DGX/HGX: 8)
  double memoryBytes;   // HBM capacity
};

/// Known GPUs (REFERENCE.md peaks; HBM bandwidth from the vendors' sheets).
const std::vector<GpuSpec> &knownGpus();
const GpuSpec *findGpu(const std::string &name);

/// Where an estimated optimizer step's time goes (seconds per rank; the
/// first five and tp are summed over the micro-batches).
struct StepTime {
  double gemm = 0, attention = 0, memoryBound = 0, launchFloor = 0, optimizer = 0;
  double tpComm = 0, dpComm = 0;           // collectives at link bandwidth
  double tpExposed = 0, dpExposed = 0;     // what the schedule does not hide
  double compute() const { return gemm + attention + memoryBound + launchFloor + optimizer; }
  double total() const { return compute() + tpExposed + dpExposed; }
};

struct TrainingEstimate {
  double flopsPerToken = 0;   // 6 N_non-embedding + 12 L H Q T (PaLM / torchtitan MFU convention)
  double nonEmbeddingParams = 0;
  int64_t tokensPerStep = 0;  // over the whole grid, per optimizer step
  int64_t microSteps = 1;     // micro-batches per optimizer step
  int64_t ranks = 1;          // dp x tp of a partitioned program
  double stepSeconds = 0;     // the kernels as generated (StepTime::total)
  double mfu = 0;             // flopsPerToken * tokensPerStep / (stepSeconds * peak * ranks)
  double rooflineSeconds = 0; // every FLOP at peak, every byte at HBM bandwidth
  StepTime time;
  /// The op kinds that take the most time, largest first: (op, seconds, launches).
  std::vector<std::tuple<std::string, double, int64_t>> bounds;
};

/// Needs a module after the training pipeline (@train_step). Prices each
/// kernel as the CUDA target generates it: GEMMs (cuBLASLt) at the measured
/// fraction of tensor-core peak, attention as the CUDA-core kernel it is (an
/// issue-bound model), every other kernel at 90% of HBM bandwidth in bf16
/// storage, a floor per kernel, AdamW on fp32 state, and the collectives at
/// NVLink (tensor parallel, within a node) or InfiniBand (data parallel
/// across nodes) bandwidth minus the overlap the schedule has (Estimate.cpp
/// states every constant).
/// `microSteps` micro-batches make one optimizer step (the binary's
/// --grad-accum): the step is that many forwards and backwards, then the
/// data-parallel collectives and AdamW once.
TrainingEstimate estimateTraining(mlir::ModuleOp module, const GpuSpec &gpu,
                                  int64_t microSteps = 1);
/// FLOPs per token alone (no GPU needed).
TrainingEstimate estimateFlops(mlir::ModuleOp module);

void printEstimate(const TrainingEstimate &e, const GpuSpec *gpu,
                   std::optional<double> tokens, std::optional<double> assumedMfu,
                   llvm::raw_ostream &os);

} // namespace llama
