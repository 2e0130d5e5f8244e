// The training loop every compiled training binary runs around its generated
// train_step: data, gradient accumulation, clipping, AdamW, LR schedule,
// evaluation, metrics, checkpoints and exact resume.
//
// One optimizer update = grad_accum micro-batches of program.batch sequences;
// their gradients are summed and scaled by 1/grad_accum, the loss averaged.
// The global L2 norm of that mean gradient (computed in double) is clipped to
// grad_clip, then AdamW updates with the scheduled LR.
//
// Resume is exact: the run state (params, AdamW moments, update count, data
// position, RNG, the spike detector's window) is checkpointed in full
// precision and every reduction in the driver has a fixed order, so N updates
// straight and N/2 + resume + N/2 produce the same bits (given a
// deterministic train_step).
//
// Bad updates are skipped, not fatal (docs/reliability.md): an update whose
// loss or gradients are non-finite, or whose loss / gradient norm spikes
// (anomaly.h), leaves the parameters and AdamW moments untouched; the step
// counter and the data stream move on and metrics.jsonl records the skip. A
// burst of skips rolls the run state back to the newest checkpoint before the
// burst while the data stream keeps going forward, past the batches that led
// to it.
//
// A partitioned program (one rank of a dp x tp grid, program.h) trains as one
// rank of an MPI job started by the CLI (comm::init). Every rank follows the
// data stream of the single-rank run with batch = global_batch and reads and
// trains on only its dp rank's sequences of each batch, so the grid consumes exactly the
// single-rank samples in the same order; its tp slice of every param starts
// as the slice of the single-rank init; the optimizer is ZeRO-1
// (zero_optimizer.h); everything that steers control flow (skip and rollback
// verdicts, ABFT failures, stop signals, the checkpoint chosen) is agreed
// across the grid (distributed.h). Checkpoints keep the single-rank format
// (full tensors, HF names), written by world rank 0 alone from tensors
// gathered over the grid, so a run resumes on any grid; rank 0 alone also
// holds the run lock and writes metrics and progress.
#pragma once
#include "runtime/train/anomaly.h"
#include "runtime/train/fault_inject.h"
#include "runtime/train/optimizer.h"
#include "runtime/program/program.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace llamart::train {

struct TrainOptions {
  std::string data_dir;           // --data
  int64_t steps = 0;              // --steps: total updates (LR schedule length)
  std::string run_dir = "run";    // --run-dir
  bool resume = false;            // --resume
  int64_t checkpoint_every = 0;   // --checkpoint-every: 0 = only at the end
  int keep_last = 3;              // --keep-last: 0 = keep all
  int64_t eval_every = 0;         // --eval-every: 0 = only at the end
  int64_t eval_batches = 8;       // --eval-batches
  double lr = 3e-4;               // --lr (peak)
  double min_lr_ratio = 0.1;      // --min-lr-ratio
  int64_t warmup = -1;            // --warmup; < 0 = default_warmup_steps(steps)
  AdamWConfig adamw;              // --beta1 --beta2 --eps --weight-decay
  double grad_clip = 1.0;         // --grad-clip: <= 0 disables clipping
  int64_t grad_accum = 1;         // --grad-accum
  uint64_t seed = 1234;           // --seed: init and data order
  bool shuffle = true;            // --no-shuffle clears it
  std::string init_from_checkpoint; // --init-from-checkpoint: weights only,
                                    // unless --resume finds a checkpoint
  bool quiet = false;             // --quiet: no progress lines
  bool tensorboard = false;       // --tensorboard: event files in
                                  // <run-dir>/tensorboard (tensorboard.h)
  int64_t stop_at = 0;            // --stop-at: checkpoint and exit after this
                                  // update (schedule still spans `steps`)
  SpikeConfig spike;              // --spike-window --spike-zscore
                                  // --max-skips-before-rollback
  std::vector<Fault> faults;      // --inject
  int64_t verify_gemm_every = 0;  // --verify-gemm-every: ABFT-check every GEMM
                                  // of every K-th update (0 = off)
};

struct TrainResult {
  int64_t step = 0;                     // updates done when train() returned
  double final_train_loss = 0.0;        // loss of the last update
  std::optional<double> final_val_loss; // when the dataset has a val split
  int stop_signal = 0;                  // SIGINT/SIGTERM that stopped the run, or 0
};

// Runs (or resumes) training as described above. Prints progress to stderr
// and "final train loss: X" / "final val loss: X" to stdout (world rank 0
// only). Throws std::runtime_error with a one-line message on bad options or
// data, or when a partitioned program runs outside its grid.
TrainResult train(const ProgramInfo &program, const TrainOptions &options);

// Throws std::runtime_error naming the flag of the first invalid option
// (ranges, the data directory and its train split).
void validate_train_options(const TrainOptions &options);

// Whether `dir` holds shards of `split` (files <split>_*.tok).
bool has_split(const std::string &dir, const std::string &split);

} // namespace llamart::train
