// Sanity checks of the ProgramInfo a generated program hands the driver, done
// once before any buffer is sized from it: a wrong table here would otherwise
// show up as memory corruption deep inside a step.
#pragma once
#include "runtime/train/program.h"

#include <string>
#include <vector>

namespace llamart::train {

// Throws std::runtime_error("program <model>: <what is wrong>") on an ABI
// version mismatch, a null entry point, a param whose shape does not match its
// numel, or params that overlap or run past param_numel.
void validate_program(const ProgramInfo &program);

// "f32" / "f64".
const char *dtype_name(DType dtype);
size_t dtype_size(DType dtype);

// The param's shape as a vector (rank entries of ParamInfo::shape).
std::vector<int64_t> param_shape(const ParamInfo &param);
// "[4096, 11008]"
std::string shape_string(const std::vector<int64_t> &shape);

} // namespace llamart::train
