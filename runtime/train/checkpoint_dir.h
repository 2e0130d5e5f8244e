// Training-state checkpoints under <run-dir>/checkpoints/:
//
//   step_000123/model.safetensors      params by HF name, program dtype
//   step_000123/optimizer.safetensors  "<name>.exp_avg", "<name>.exp_avg_sq"
//   step_000123/state.json             step, data position, seed, RNG, model
//                                      and schedule settings, checksums
//   LATEST                             "step_000123\n"
//
// A checkpoint is written into a temporary directory, every file fsynced,
// then the directory is renamed into place and only after that LATEST is
// atomically replaced: a crash at any point leaves LATEST naming a complete
// checkpoint. state.json records the FNV-1a 64 checksum of both safetensors
// files, so silent corruption (bit rot, a truncated copy) is detected on
// resume and the previous checkpoint is used instead.
#pragma once
#include "runtime/train/optimizer.h"
#include "runtime/train/program.h"
#include "runtime/train/rng.h"
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

// FNV-1a 64 of a file's bytes; throws naming the file when it cannot be read.
uint64_t fnv1a64_file(const std::string &path);

// Writes checkpoint `state.step` under `root` as described above, points
// LATEST at it, and deletes all but the newest `keep_last` checkpoints
// (keep_last <= 0 keeps all). Returns the checkpoint directory.
template <typename T>
std::string save_checkpoint(const ProgramInfo &program, const std::string &root,
                            const TrainState &state, const T *params,
                            const T *exp_avg, const T *exp_avg_sq,
                            int keep_last);

// Reads `dir`/state.json and checks both safetensors files against its
// checksums. Throws std::runtime_error naming the bad file.
nlohmann::json verify_checkpoint(const std::string &dir);

// The checkpoint to resume from: the one LATEST names if it verifies, else
// the newest older one that does (each skipped one reported through `warn`,
// naming the bad file). nullopt when `root` holds no checkpoint at all;
// throws when checkpoints exist but none verifies.
std::optional<CheckpointRef> find_resume_checkpoint(const std::string &root,
                                                    const Warn &warn);

// Loads a verified checkpoint: params always, the AdamW moments when exp_avg
// and exp_avg_sq are non-null. A checkpoint of a model with other parameter
// names or shapes is an error naming the tensor. Returns its state.
template <typename T>
TrainState load_checkpoint(const ProgramInfo &program, const std::string &dir,
                           T *params, T *exp_avg, T *exp_avg_sq);

// Model weights from what a user may point at: a .safetensors file, a
// checkpoint directory, a checkpoints/ directory (its LATEST) or a run
// directory (its checkpoints/LATEST). Checkpoints are verified first; the
// usual fallback to an older one applies. Returns the file it loaded.
template <typename T>
std::string load_model_weights(const ProgramInfo &program,
                               const std::string &path, T *params,
                               const Warn &warn);

// state.json <-> TrainState (exposed for tests and tools).
nlohmann::json state_to_json(const ProgramInfo &program, const TrainState &state);
TrainState state_from_json(const nlohmann::json &j, const std::string &path);

} // namespace llamart::train
