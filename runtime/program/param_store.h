// The program's flat parameter buffer seen as named tensors: deterministic
// initialization, and conversion to and from safetensors keyed by the
// Hugging Face names in ProgramInfo (model weights, optimizer moments,
// gradients all use this one mapping).
#pragma once
#include "runtime/checkpoint/safetensors.h"
#include "runtime/program/program.h"

#include <cstdint>
#include <string>
#include <vector>

namespace llamart {

// ParamInit::Normal -> N(0, init_std), from a stream seeded by (seed, name);
// ParamInit::Ones -> 1. Elements outside every param are zeroed.
template <typename T>
void init_params(const ProgramInfo &program, uint64_t seed, T *params);

// Adds one tensor per param, named `<hf name><suffix>`, with the param's shape
// and dtype T, holding flat[offset, offset + numel).
template <typename T>
void add_param_tensors(const ProgramInfo &program, const T *flat,
                       const std::string &suffix, ckpt::File &file);

// What load_param_tensors fills: tensors named `<hf name><suffix>` into dest.
template <typename T> struct ParamTensorSet {
  std::string suffix;
  T *dest;
};

// Fills every set from `file` (read from `path`, named in errors). Every
// program param must be present with its exact shape; a tensor the program
// does not have is an error too (a checkpoint of another model must not load
// half-way). F32/F64/F16/BF16 inputs are converted to T.
template <typename T>
void load_param_tensors(const ProgramInfo &program, const ckpt::File &file,
                        const std::string &path,
                        const std::vector<ParamTensorSet<T>> &sets);

} // namespace llamart
