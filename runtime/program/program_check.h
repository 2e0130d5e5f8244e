// Sanity checks of the ProgramInfo a generated program hands the driver, done
// once before any buffer is sized from it: a wrong table here would otherwise
// show up as memory corruption deep inside a step.
#pragma once
#include "runtime/program/program.h"

#include <string>
#include <vector>

namespace llamart {

// Throws std::runtime_error("program <model>: <what is wrong>") on an ABI
// version mismatch, a null entry point (logits may be null on a partitioned
// program), a param whose shape does not match its numel, params that
// overlap or run past param_numel, or grid fields that do not fit together:
// grid_dp, grid_tp < 1, global_batch != batch * grid_dp, a shard_dim outside
// [-1, rank), a full_shape that is not the shape times grid_tp along
// shard_dim (equal to the shape when grid_tp is 1 or shard_dim -1), or
// full_param_numel != the sum of the full shapes' sizes.
void validate_program(const ProgramInfo &program);

// "f32" / "f64".
const char *dtype_name(DType dtype);

// The param's shape as a vector (rank entries of ParamInfo::shape).
std::vector<int64_t> param_shape(const ParamInfo &param);
// "[4096, 11008]"
std::string shape_string(const std::vector<int64_t> &shape);

} // namespace llamart
