#include "runtime/train/program_check.h"

#include <algorithm>
#include <set>
#include <stdexcept>

namespace llamart::train {

namespace {
[[noreturn]] void fail(const ProgramInfo &program, const std::string &what) {
  const char *name = program.model_name ? program.model_name : "?";
  throw std::runtime_error(std::string("program ") + name + ": " + what);
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

size_t dtype_size(DType dtype) { return dtype == DType::F64 ? 8 : 4; }

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
  if (!program.train_step || !program.logits || !program.eval_loss)
    fail(program, "a function pointer (train_step, logits or eval_loss) is null");
  if (program.num_params < 1 || !program.params)
    fail(program, "no parameters");
  if (program.train_arena_bytes < 0 || program.logits_arena_bytes < 0 ||
      program.eval_arena_bytes < 0)
    fail(program, "negative arena size");

  std::set<std::string> names;
  std::vector<std::pair<int64_t, int64_t>> ranges;
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
    ranges.emplace_back(p.offset, p.offset + p.numel);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second)
      fail(program, "parameters overlap in the parameter buffer");
}

} // namespace llamart::train
