//===- Report.h - what llama-compile --report prints ------------*- C++ -*-===//
#pragma once

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <string>

namespace llama {

struct MemoryReport {
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
