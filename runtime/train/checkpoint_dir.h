// Training-state checkpoints under <run-dir>/checkpoints/:
//
//   step_000123/model.safetensors      params by HF name, program dtype
//   step_000123/optimizer.safetensors  "<name>.exp_avg", "<name>.exp_avg_sq"
//   step_000123/state.json             step, data position, seed, RNG, model
//                                      and schedule settings, checksums
//   LATEST                             "step_000123\n"
//
// A checkpoint is written into a temporary directory (.tmp-step_N-PID), every
// file fsynced, then the directory is renamed into place (the commit point:
// a step_N directory is always complete) and LATEST is atomically replaced.
// Whole directories leave the same way: renamed to .old-step_N-PID first,
// then deleted, so rotation killed half-way never leaves a half checkpoint
// under a step_N name. A crash at any moment thus leaves complete
// checkpoints, plus at most leftovers with a leading dot that the next save
// or resume removes (clean_interrupted_saves).
//
// Resume takes the newest complete checkpoint that verifies; LATEST, which a
// crash between the rename and its update can leave one behind, is for people
// and tools. state.json records the FNV-1a 64 checksum of both safetensors
// files, so silent corruption (bit rot, a truncated copy) is detected on
// resume and the previous checkpoint is used instead.
#pragma once
#include "runtime/train/anomaly.h"
#include "runtime/train/optimizer.h"
#include "runtime/program/program.h"
#include "runtime/program/rng.h"
#include "runtime/train/schedule.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace llamart::train {

// Everything besides tensors that a resumed run needs to continue exactly.
struct TrainState {
  int64_t step = 0;          // optimizer updates done
  uint64_t data_epoch = 0;   // train Dataset position after `step` updates
  uint64_t data_index = 0;
  uint64_t seed = 0;         // param init and data order
  bool shuffle = true;       // data order: shuffled windows or file order
  // The driver's stream for stochastic training features. LLaMA training has
  // none today (no dropout), but saving it keeps resume exact once one uses it.
  Rng::State rng{};
  double elapsed_s = 0.0;    // training wall time over all runs so far
  double last_loss = NAN;    // train loss of update `step`
  int64_t tokens_seen = 0;
  LrSchedule schedule;
  AdamWConfig adamw;
  double grad_clip = 1.0;
  int64_t grad_accum = 1;

  // Updates skipped for non-finite values or spikes advance `step` (the LR
  // schedule) but not the optimizer, whose bias correction counts the
  // updates it applied.
  int64_t optimizer_updates = 0;
  // Update attempts over the whole run, skipped and rolled-back ones
  // included; never rewound. --inject counts these.
  int64_t attempts = 0;
  int64_t skipped_nonfinite = 0; // totals over the run, never rewound
  int64_t skipped_spike = 0;
  int64_t rollbacks = 0;
  // Rollbacks in a row to the same checkpoint (a run that keeps diverging
  // from one point stops instead of looping over the data forever).
  int64_t last_rollback_target = -1;
  int64_t rollbacks_to_target = 0;
  // The spike detector's window and burst, and its settings.
  AnomalyDetector anomaly;
};

using Warn = std::function<void(const std::string &)>;

struct CheckpointRef {
  int64_t step;
  std::string path; // the step_NNNNNN directory
};

// "step_000123" (six digits at least, more when the step needs them).
std::string checkpoint_name(int64_t step);

// Complete checkpoints (directories step_N holding state.json) under `root`,
// oldest first. A missing root is an empty list.
std::vector<CheckpointRef> list_checkpoints(const std::string &root);

// Removes what interrupted saves and deletions leave under `root`
// (.tmp-*, .old-* directories, LATEST.tmp.* files). Only safe while no other
// process writes there (the trainer holds RunDirLock). Returns how many.
int clean_interrupted_saves(const std::string &root);

// Deletes every checkpoint newer than `step` (a timeline a rollback
// abandoned), each renamed aside before it is deleted. Returns them.
std::vector<CheckpointRef> discard_checkpoints_after(const std::string &root,
                                                      int64_t step);

// Renames a checkpoint that failed verification to step_N.corrupt (or
// step_N.corrupt.K when taken), out of resume's and rotation's sight but kept
// for inspection. Returns the new path.
std::string quarantine_checkpoint(const CheckpointRef &checkpoint);

// FNV-1a 64 of a file's bytes; throws naming the file when it cannot be read.
uint64_t fnv1a64_file(const std::string &path);

// Writes checkpoint `state.step` under `root` as described above, points
// LATEST at it, and deletes all but the newest `keep_last` checkpoints
// (keep_last <= 0 keeps all). While a burst of skipped updates is open
// (state.anomaly), the newest checkpoint from before it is kept as well: it is
// the one a rollback will need. Returns the checkpoint directory.
template <typename T>
std::string save_checkpoint(const ProgramInfo &program, const std::string &root,
                            const TrainState &state, const T *params,
                            const T *exp_avg, const T *exp_avg_sq,
                            int keep_last);

// One tensor of a checkpoint: param `param` of the program, its weights
// (kind 0) or AdamW moments (1: exp_avg, 2: exp_avg_sq).
struct CheckpointTensor {
  int32_t param;
  int kind;
};
// The tensors in the order save_checkpoint writes them: model.safetensors,
// then optimizer.safetensors, each by tensor name as the files list them.
std::vector<CheckpointTensor> checkpoint_tensor_order(const ProgramInfo &program);
// The elements of one tensor (program.params[t.param].numel of them), valid
// until the next call.
template <typename T>
using CheckpointTensorSource = std::function<const T *(const CheckpointTensor &t)>;
// save_checkpoint streamed: each tensor is asked of `source` once, in
// checkpoint_tensor_order, and written to its file before the next is asked
// for, so no full copy of the model or optimizer state is made (a
// partitioned run gathers one tensor at a time onto the writing rank).
template <typename T>
std::string save_checkpoint(const ProgramInfo &program, const std::string &root,
                            const TrainState &state,
                            const CheckpointTensorSource<T> &source, int keep_last);

// Reads `dir`/state.json and checks both safetensors files against its
// checksums. Throws std::runtime_error naming the bad file.
nlohmann::json verify_checkpoint(const std::string &dir);

// The checkpoint to resume from: the newest complete one that verifies, else
// the newest older one that does (each skipped one reported through `warn`,
// naming the bad file, and appended to `rejected` when given). Only
// checkpoints with step < `before_step` are considered. nullopt when there is
// none to consider; throws when some exist but none verifies. A LATEST that
// lags the newest complete checkpoint (a crash between the rename and its
// update) is reported through `warn`.
std::optional<CheckpointRef>
find_resume_checkpoint(const std::string &root, const Warn &warn,
                       int64_t before_step = INT64_MAX,
                       std::vector<CheckpointRef> *rejected = nullptr);

// Loads a verified checkpoint: params always, the AdamW moments when exp_avg
// and exp_avg_sq are non-null. A checkpoint of a model with other parameter
// names or shapes is an error naming the tensor. Returns its state.
template <typename T>
TrainState load_checkpoint(const ProgramInfo &program, const std::string &dir,
                           T *params, T *exp_avg, T *exp_avg_sq);

// Model weights from what a user may point at: a .safetensors file, a
// checkpoint directory, a checkpoints/ directory (its LATEST), a run
// directory (its checkpoints/LATEST), a Hugging Face model folder
// (hf_weights.h: config.json checked against the program, one or sharded
// safetensors) or a Meta folder (params.json + consolidated.NN.pth, merged
// to the HF layout). Checkpoints are verified first; the usual fallback to an
// older one applies. Returns the file (or HF / Meta folder) it loaded.
template <typename T>
std::string load_model_weights(const ProgramInfo &program,
                               const std::string &path, T *params,
                               const Warn &warn);

// state.json <-> TrainState (exposed for tests and tools).
nlohmann::json state_to_json(const ProgramInfo &program, const TrainState &state);
TrainState state_from_json(const nlohmann::json &j, const std::string &path);

} // namespace llamart::train
