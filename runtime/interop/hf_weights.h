// A compiled program's parameters to and from a Hugging Face model folder
// (runtime/checkpoint/hf_folder.h), and from a Meta checkpoint folder
// (runtime/checkpoint/meta_folder.h): the import behind `train
// --init-from-checkpoint DIR`, `generate --checkpoint DIR` and `export
// --checkpoint DIR`, and the tensor table `export` writes.
#pragma once
#include "runtime/checkpoint/hf_folder.h"
#include "runtime/program/program.h"

#include <nlohmann/json.hpp>

#include <string>

namespace llamart::interop {

// The program's embedded config.json as an object ({} when it has none, e.g.
// a model compiled from hand-written MLIR).
nlohmann::json program_config(const ProgramInfo &program);

// Loads every parameter of `program` from the HF folder `dir`:
//   - config.json must match the program (ckpt::check_hf_config_compatible);
//   - tensors come from model.safetensors or the shards of the index, in
//     F32/F64/F16/BF16, converted to T (exact widening; f64 -> f32 rounds);
//   - a missing parameter is an error naming it and the index (or
//     model.safetensors); a tensor the program has no parameter for is an
//     error naming it and the file holding it, except two that transformers
//     itself ignores: `*.rotary_emb.inv_freq` buffers of old checkpoints, and
//     an `lm_head.weight` of a tied model that equals the embedding;
//   - an index entry whose file lacks the tensor, or a file holding a tensor
//     the index maps elsewhere, is an error naming both.
// Shards are read one at a time. Returns `dir`.
template <typename T>
std::string load_hf_folder_weights(const ProgramInfo &program, const std::string &dir,
                                   T *params);

// Loads every parameter of `program` from the Meta folder `dir` (params.json
// + consolidated.NN.pth), as an HF folder of the same weights would load:
//   - params.json must match the program (ckpt::check_meta_params_compatible);
//   - the model-parallel files are merged, renamed and wq/wk permuted to the
//     HF layout (ckpt::MetaFolder), one tensor at a time, then converted to T
//     (F32/F16/BF16 widen exactly);
//   - missing and unexpected tensors and shape mismatches are errors naming
//     the tensor by its Meta and HF names and consolidated.00.pth.
// Returns `dir`.
template <typename T>
std::string load_meta_folder_weights(const ProgramInfo &program, const std::string &dir,
                                     T *params);

} // namespace llamart::interop
