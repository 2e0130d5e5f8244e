//===- RematBudget.h - remat under an activation-memory budget --*- C++ -*-===//
#pragma once

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include <optional>
#include <string>
#include <vector>

namespace mlir::llama {

/// One remat plan: for each op of @forward (in order), save (true) or
/// recompute (false), and what it costs once compiled.
struct RematCandidate {
  std::string origin;          // "min-cut lambda=...", "selective", ...
  std::vector<bool> save;
  int64_t arenaBytes = 0;      // @train_step arena with this plan
  int64_t savedBytes = 0;      // forward buffers the backward reads
  double recomputeCost = 0;    // FLOP-equivalents recomputed per step
};

/// Chooses the plan with the least recomputation whose @train_step arena
/// fits in `budgetBytes`, among min-cut plans for a sweep of trade-offs
/// between saved bytes and recompute cost (AOTAutograd/Checkmate-style: a
/// cut through the forward graph separates what is saved from what is
/// recomputed) and the given fixed plans. Every candidate is measured by
/// actually deriving its backward and planning its memory. Marks @forward
/// with the chosen plan; fails with a diagnostic naming the smallest arena
/// reached when nothing fits.
LogicalResult planRematForBudget(ModuleOp module, func::FuncOp forward,
                                 int64_t budgetBytes, double balance, bool fuse,
                                 std::vector<RematCandidate> fixedPlans,
                                 RematCandidate *chosen);

/// Measures one plan (clones the module, marks, derives, fuses if `fuse`,
/// plans memory).
FailureOr<RematCandidate> measureRematPlan(ModuleOp module,
                                           const std::vector<bool> &save,
                                           double balance, bool fuse);

/// Sets llama.remat on the ops of @forward from `save`.
void applyRematMarks(func::FuncOp forward, const std::vector<bool> &save);

/// "123", "64MiB", "12GiB", "1.5GB": a byte count with an optional binary
/// (KiB, MiB, GiB, TiB; also K, M, G, T) or decimal (KB, MB, GB, TB) unit.
std::optional<int64_t> parseByteSize(StringRef text);

/// The llama ops of @forward in program order (what `save` indexes).
std::vector<Operation *> rematOps(func::FuncOp forward);

} // namespace mlir::llama
