#include "runtime/program/program_check.h"
#include "runtime/program/partition.h"

#include <algorithm>
#include <set>
#include <stdexcept>

namespace llamart {

namespace {
[[noreturn]] void fail(const ProgramInfo &program, const std::string &what) {
  const char *name = program.model_name ? program.model_name : "?";
  throw std::runtime_error(std::string("program ") + name + ": " + what);
}

// The ABI v3 grid fields. All-zero fields (a table written before v3 existed,
// or a generator that forgot them) fail here rather than being read as some
// grid.
void validate_grid(const ProgramInfo &program) {
  if (program.grid_dp < 1 || program.grid_tp < 1)
    fail(program, "grid dp=" + std::to_string(program.grid_dp) + " x tp=" +
                      std::to_string(program.grid_tp) +
                      ": both must be >= 1 (1 x 1 for a single-rank program)");
  if (program.sequence_parallel != 0 && program.sequence_parallel != 1)
    fail(program, "sequence_parallel must be 0 or 1, got " +
                      std::to_string(program.sequence_parallel));
  if (program.global_batch != program.batch * program.grid_dp)
    fail(program, "global_batch " + std::to_string(program.global_batch) +
                      " is not batch " + std::to_string(program.batch) +
                      " x grid_dp " + std::to_string(program.grid_dp));
}

// A param's tp fields against its local shape; returns its full numel. On a
// grid with tp = 1 a param is whole whatever its shard_dim says, so its full
// shape must be its shape.
int64_t validate_partition(const ProgramInfo &program, const ParamInfo &p,
                           const std::string &name) {
  if (p.shard_dim < -1 || p.shard_dim >= p.rank)
    fail(program, "param " + name + " has shard_dim " + std::to_string(p.shard_dim) +
                      " (must be -1 or a dimension of its rank-" +
                      std::to_string(p.rank) + " shape)");
  const std::vector<int64_t> full(p.full_shape, p.full_shape + p.rank);
  const int32_t split = program.grid_tp > 1 ? p.shard_dim : -1;
  int64_t numel = 1;
  for (int32_t d = 0; d < p.rank; ++d) {
    const int64_t expected = d == split ? p.shape[d] * program.grid_tp : p.shape[d];
    if (full[static_cast<size_t>(d)] != expected)
      fail(program, "param " + name + " has full_shape " + shape_string(full) +
                        ", which does not match its shape " +
                        shape_string(param_shape(p)) +
                        (split < 0 ? " (a whole tensor: they must be equal)"
                                   : " split " + std::to_string(program.grid_tp) +
                                         " ways along dimension " +
                                         std::to_string(split)));
    numel *= full[static_cast<size_t>(d)];
  }
  return numel;
}
} // namespace

const char *dtype_name(DType dtype) {
  switch (dtype) {
  case DType::F32:
    return "f32";
  case DType::F64:
    return "f64";
  }
  return "unknown";
}

std::vector<int64_t> param_shape(const ParamInfo &param) {
  return std::vector<int64_t>(param.shape, param.shape + param.rank);
}

std::string shape_string(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void validate_program(const ProgramInfo &program) {
  if (program.abi_version != kProgramAbiVersion)
    fail(program, "ABI version " + std::to_string(program.abi_version) +
                      ", this runtime implements " +
                      std::to_string(kProgramAbiVersion) +
                      " (recompile the model with the matching llama-compile)");
  if (program.dtype != DType::F32 && program.dtype != DType::F64)
    fail(program, "unsupported dtype " +
                      std::to_string(static_cast<int>(program.dtype)));
  if (program.batch < 1 || program.seq_len < 1 || program.vocab_size < 1)
    fail(program, "batch, seq_len and vocab_size must be >= 1");
  validate_grid(program);
  const bool partitioned =
      static_cast<int64_t>(program.grid_dp) * program.grid_tp > 1;
  // Partitioned programs have no logits function (generation runs the
  // single-rank binary); generation-only programs (llama-compile --mode
  // generate) have no train step and generate with prefill/decode.
  if (static_cast<bool>(program.prefill) != static_cast<bool>(program.decode))
    fail(program, "prefill and decode come together");
  const bool generate_only = !program.train_step && program.prefill;
  if (program.prefill && (program.kv_capacity < 1 || program.kv_cache_bytes < 1 ||
                          program.prefill_chunk < 1 ||
                          program.prefill_chunk > program.kv_capacity ||
                          program.gen_batch < 1 || program.prefill_arena_bytes < 0 ||
                          program.decode_arena_bytes < 0))
    fail(program, "inconsistent KV-cache fields (capacity " +
                      std::to_string(program.kv_capacity) + ", prefill chunk " +
                      std::to_string(program.prefill_chunk) + ")");
  if ((!program.train_step && !generate_only) || !program.eval_loss ||
      (!partitioned && !generate_only && !program.logits))
    fail(program, "a function pointer (train_step, logits or eval_loss) is null");
  if (program.num_params < 1 || !program.params)
    fail(program, "no parameters");
  if (program.train_arena_bytes < 0 || program.logits_arena_bytes < 0 ||
      program.eval_arena_bytes < 0)
    fail(program, "negative arena size");

  std::set<std::string> names;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  int64_t full_numel = 0;
  for (int32_t i = 0; i < program.num_params; ++i) {
    const ParamInfo &p = program.params[i];
    const std::string name = p.name ? p.name : "";
    if (name.empty())
      fail(program, "param #" + std::to_string(i) + " has no name");
    if (!names.insert(name).second)
      fail(program, "param " + name + " is listed twice");
    if (p.rank < 1 || p.rank > 4)
      fail(program, "param " + name + " has rank " + std::to_string(p.rank));
    int64_t numel = 1;
    for (int32_t d = 0; d < p.rank; ++d) {
      if (p.shape[d] < 1)
        fail(program, "param " + name + " has a non-positive dimension");
      numel *= p.shape[d];
    }
    if (numel != p.numel)
      fail(program, "param " + name + " has shape " +
                        shape_string(param_shape(p)) + " but numel " +
                        std::to_string(p.numel));
    if (p.offset < 0 || p.offset + p.numel > program.param_numel)
      fail(program, "param " + name + " lies outside the parameter buffer");
    if (p.init != ParamInit::Normal && p.init != ParamInit::Ones)
      fail(program, "param " + name + " has an unknown init kind");
    full_numel += validate_partition(program, p, name);
    ranges.emplace_back(p.offset, p.offset + p.numel);
  }
  if (full_numel != program.full_param_numel)
    fail(program, "full_param_numel is " + std::to_string(program.full_param_numel) +
                      " but the params' full shapes hold " +
                      std::to_string(full_numel) + " elements");
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second)
      fail(program, "parameters overlap in the parameter buffer");
  if (program.num_grad_buckets < 0 ||
      (program.num_grad_buckets > 0) != (program.grad_bucket_bounds != nullptr))
    fail(program, "num_grad_buckets " + std::to_string(program.num_grad_buckets) +
                      " does not match its bounds table");
  try {
    (void)dp_shard(program.param_numel, std::max(1, program.grid_dp), 0,
                   grad_bucket_bounds(program));
  } catch (const std::runtime_error &e) {
    fail(program, e.what());
  }
}

} // namespace llamart
