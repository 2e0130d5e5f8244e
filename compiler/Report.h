//===- Report.h - what llama-compile --report prints ------------*- C++ -*-===//
#pragma once

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <string>

namespace llama {

/// Communication of one grid axis per train step, per rank: bytes each rank
/// sends with ring algorithms (all-reduce 2(n-1)/n S, all-gather and
/// reduce-scatter (n-1)/n S of the whole tensor S) and the payload (the
/// whole tensors' bytes).
struct AxisComm {
  int64_t collectives = 0;
  int64_t payloadBytes = 0;
  double sentBytes = 0;
};

struct MemoryReport {
  // Partitioning (llama-shard): 1 x 1 for a single process. Figures below
  // are per rank unless they say otherwise.
  int64_t gridDp = 1, gridTp = 1;
  bool sequenceParallel = false;
  int64_t fullParams = 0;             // the unpartitioned model
  int64_t optimizerShardElems = 0;    // ZeRO-1: AdamW state elements per moment
  AxisComm dpComm, tpComm;            // in the step program
  AxisComm zeroComm;                  // the optimizer's reduce-scatter + all-gather (dp)
  int64_t params = 0;                 // parameter count
  int64_t paramBytes = 0;             // also the gradient bytes
  int64_t numLayers = 0;              // distinct llama.layer values
  int64_t activationBytesPerLayer = 0; // saved for the backward by layer 0
  int64_t savedActivationBytes = 0;   // saved for the backward, whole model
  int64_t arenaPeakBytes = 0;         // @train_step arena
  int64_t liveLowerBoundBytes = 0;    // no placement can beat this
  int64_t logitsArenaBytes = 0;       // @logits arena
  int64_t evalArenaBytes = 0;         // @forward (eval_loss) arena
  double recomputeFlops = 0;          // FLOP-equivalents recomputed per step
  double stepFlops = 0;               // FLOP-equivalents of the whole step
  std::string rematPlan;              // what llama-remat chose (budget policy)
};

/// Reads a module after buildTrainingPipeline. Saved bytes count each
/// forward buffer (views resolved) that some backward op reads.
MemoryReport computeMemoryReport(mlir::ModuleOp module);

/// Parameter count of @forward's float arguments (works before any pass).
int64_t countParams(mlir::ModuleOp module);

/// What a training run holds: parameters, gradients, AdamW moments (and an
/// accumulation buffer with grad-accum > 1), the train and eval arenas.
int64_t totalTrainingBytes(const MemoryReport &r, int64_t gradAccum);

void printReport(const MemoryReport &r, llvm::raw_ostream &os);

} // namespace llama
