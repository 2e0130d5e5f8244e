// `--inject nan@N,spike@N,bitflip@N,...`: deliberate faults, so that the recovery paths
// of the driver (skipped updates, rollback) are exercised by tests and can be
// rehearsed on a real run before they are needed.
//
//   nan@N    the N-th update attempt gets one NaN gradient element (the loss
//            stays finite: detection must look at the gradients themselves)
//   spike@N  the N-th update attempt has its loss and every gradient
//            multiplied by kSpikeFactor, a loss spike the detector must catch
//   bitflip@N  during the N-th update attempt, one element of one GEMM output
//            (both chosen from --seed) gets a high exponent bit flipped right
//            after the GEMM wrote it (runtime/cpu/gemm_check.h): silent data
//            corruption, which --verify-gemm-every catches and recomputes
//   kill@N   after the N-th update attempt's gradients, the last rank of the
//            job (the only one in a single-process run) dies by SIGKILL, as
//            a crashed host would; only in the first launch of a job
//            (llama-run sets LLAMA_RUN_RESTART on restarts), so a run
//            restarted with --max-restarts continues past it
//
// N counts update attempts over the whole run, skipped and rolled-back ones
// included (TrainState::attempts), not the step counter: after a rollback the
// step counter repeats values, and a fault tied to a step number would fire
// again on the new data. Tied to the attempt, a fault hits one batch once, as
// a bad batch or a flipped bit does.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace llamart::train {

enum class FaultKind { NaN, Spike, BitFlip, Kill };

struct Fault {
  FaultKind kind;
  int64_t attempt; // 1-based
};

constexpr double kSpikeFactor = 1e4;

// Parses a comma-separated list of KIND@N. Throws std::runtime_error naming
// --inject and the bad item.
std::vector<Fault> parse_faults(const std::string &spec);

// The faults planned for update attempt `attempt`, in the order given.
std::vector<FaultKind> faults_at(const std::vector<Fault> &faults, int64_t attempt);

// Applies `kind` to an update's summed gradients (n elements) and loss.
// BitFlip is not applied here (it happens inside the step; the trainer arms
// it), so it leaves both unchanged. Kill does not return on the rank it
// kills.
template <typename T> void apply_fault(FaultKind kind, T *grads, int64_t n, double &loss);

} // namespace llamart::train
