#include "runtime/train/verify.h"

#include "runtime/checkpoint/safetensors.h"
#include "runtime/comm/comm.h"
#include "runtime/train/aligned_buffer.h"
#include "runtime/train/param_store.h"
#include "runtime/train/program_check.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>

namespace llamart::train {

namespace {

// input_ids [batch, seq_len + 1] -> tokens = [:, :-1], targets = [:, 1:].
void split_batch(const ProgramInfo &program, const ckpt::File &file,
                 const std::string &path, int32_t *tokens, int32_t *targets) {
  auto it = file.tensors.find("input_ids");
  if (it == file.tensors.end())
    throw std::runtime_error(path + ": no tensor \"input_ids\"");
  const ckpt::Tensor &ids = it->second;
  const std::vector<int64_t> want = {program.batch, program.seq_len + 1};
  if (ids.shape != want)
    throw std::runtime_error(path + ": input_ids has shape " +
                             shape_string(ids.shape) + ", model " +
                             program.model_name + " needs " + shape_string(want) +
                             " (batch, seq_len + 1)");
  if (ids.dtype != ckpt::StDType::I32 && ids.dtype != ckpt::StDType::I64)
    throw std::runtime_error(path + ": input_ids must be int32 or int64");

  const int64_t row = program.seq_len + 1;
  for (int64_t b = 0; b < program.batch; ++b)
    for (int64_t t = 0; t < row; ++t) {
      const int64_t i = b * row + t;
      int64_t v;
      if (ids.dtype == ckpt::StDType::I32) {
        int32_t x;
        std::memcpy(&x, ids.data.data() + i * 4, 4);
        v = x;
      } else {
        std::memcpy(&v, ids.data.data() + i * 8, 8);
      }
      // Inputs must be real tokens; a target may also be ignore_index
      // (padding that is not scored).
      const bool is_target = t > 0, is_input = t < row - 1;
      const bool in_vocab = v >= 0 && v < program.vocab_size;
      if ((is_input && !in_vocab) ||
          (is_target && !in_vocab && v != program.ignore_index))
        throw std::runtime_error(path + ": input_ids[" + std::to_string(b) +
                                 ", " + std::to_string(t) + "] = " +
                                 std::to_string(v) + " is outside the vocabulary [0, " +
                                 std::to_string(program.vocab_size) + ")");
      if (is_input)
        tokens[b * program.seq_len + t] = static_cast<int32_t>(v);
      if (is_target)
        targets[b * program.seq_len + t - 1] = static_cast<int32_t>(v);
    }
}

int64_t product(const int64_t *dims, int32_t n) {
  int64_t p = 1;
  for (int32_t d = 0; d < n; ++d)
    p *= dims[d];
  return p;
}

// This rank's slice of a full parameter: tensor-parallel rank r takes the
// r-th of grid_tp blocks along shard_dim (row-major: `outer` runs of
// `chunk` contiguous elements out of runs of grid_tp * chunk).
template <typename T>
void take_slice(const ParamInfo &info, const T *full, T *local) {
  if (info.shard_dim < 0) {
    std::copy_n(full, info.numel, local);
    return;
  }
  const int64_t outer = product(info.shape, info.shard_dim);
  const int64_t chunk = info.numel / outer;
  const int64_t r = comm::rank(comm::Axis::TP);
  const int64_t parts = comm::size(comm::Axis::TP);
  for (int64_t o = 0; o < outer; ++o)
    std::copy_n(full + (o * parts + r) * chunk, chunk, local + o * chunk);
}

// A partitioned program's step on one rank of its grid: every rank reads the
// full weights and the global batch and keeps its share; the per-rank
// gradients are summed over the data-parallel ranks and gathered over the
// tensor-parallel ones, so rank 0 writes exactly what the single-process
// program's verify writes (same names, full shapes).
template <typename T>
double verify_partitioned(const ProgramInfo &program, const VerifyOptions &options) {
  const ckpt::File weights = ckpt::read_safetensors(options.weights);
  AlignedBuffer<T> params(static_cast<size_t>(program.param_numel));
  AlignedBuffer<T> grads(static_cast<size_t>(program.param_numel));
  for (int32_t p = 0; p < program.num_params; ++p) {
    const ParamInfo &info = program.params[p];
    auto it = weights.tensors.find(info.name);
    if (it == weights.tensors.end())
      throw std::runtime_error(options.weights + ": missing tensor " + info.name);
    const std::vector<int64_t> full(info.full_shape, info.full_shape + info.rank);
    if (it->second.shape != full)
      throw std::runtime_error(options.weights + ": tensor " + info.name +
                               " has shape " + shape_string(it->second.shape) +
                               ", model " + program.model_name + " expects " +
                               shape_string(full));
    const std::vector<double> values = it->second.to_f64();
    std::vector<T> typed(values.begin(), values.end());
    take_slice(info, typed.data(), params.data() + info.offset);
  }

  // The global batch, of which data-parallel rank d trains on rows
  // [d * batch, (d + 1) * batch).
  ProgramInfo global = program;
  global.batch = program.global_batch;
  const size_t n_global = static_cast<size_t>(global.batch * program.seq_len);
  AlignedBuffer<int32_t> all_tokens(n_global), all_targets(n_global);
  split_batch(global, ckpt::read_safetensors(options.batch_file), options.batch_file,
              all_tokens.data(), all_targets.data());
  const size_t n = static_cast<size_t>(program.batch * program.seq_len);
  const size_t first = static_cast<size_t>(comm::rank(comm::Axis::DP)) * n;

  AlignedBuffer<uint8_t> arena(static_cast<size_t>(program.train_arena_bytes));
  double loss = 0.0;
  program.train_step(params.data(), grads.data(), all_tokens.data() + first,
                     all_targets.data() + first, arena.data(), &loss);

  comm::all_reduce(grads.data(), program.param_numel, comm::ReduceOp::Sum,
                   comm::Axis::DP, "verify: gradients over data-parallel ranks");
  ckpt::File out;
  const T loss_t = static_cast<T>(loss);
  if constexpr (std::is_same_v<T, float>)
    out.tensors["loss"] = ckpt::Tensor::from_f32({}, &loss_t);
  else
    out.tensors["loss"] = ckpt::Tensor::from_f64({}, &loss_t);
  for (int32_t p = 0; p < program.num_params; ++p) {
    const ParamInfo &info = program.params[p];
    std::vector<int64_t> full(info.full_shape, info.full_shape + info.rank);
    std::vector<T> gathered(static_cast<size_t>(product(info.full_shape, info.rank)));
    const T *local = grads.data() + info.offset;
    if (info.shard_dim < 0) {
      std::copy_n(local, info.numel, gathered.data());
    } else {
      const int64_t outer = product(info.shape, info.shard_dim);
      comm::all_gather(local, gathered.data(), outer, info.numel / outer,
                       comm::Axis::TP, "verify: gradient gather");
    }
    if constexpr (std::is_same_v<T, float>)
      out.tensors[info.name] = ckpt::Tensor::from_f32(std::move(full), gathered.data());
    else
      out.tensors[info.name] = ckpt::Tensor::from_f64(std::move(full), gathered.data());
  }
  if (comm::rank(comm::Axis::World) == 0)
    ckpt::write_safetensors(options.out, out);
  comm::barrier(comm::Axis::World, "verify: written");
  return loss;
}

template <typename T>
double verify_impl(const ProgramInfo &program, const VerifyOptions &options) {
  if (program.grid_dp * program.grid_tp > 1)
    return verify_partitioned<T>(program, options);
  AlignedBuffer<T> params(static_cast<size_t>(program.param_numel));
  AlignedBuffer<T> grads(static_cast<size_t>(program.param_numel));
  load_param_tensors<T>(program, ckpt::read_safetensors(options.weights),
                        options.weights, {{"", params.data()}});

  const size_t n = static_cast<size_t>(program.batch * program.seq_len);
  AlignedBuffer<int32_t> tokens(n), targets(n);
  split_batch(program, ckpt::read_safetensors(options.batch_file),
              options.batch_file, tokens.data(), targets.data());

  AlignedBuffer<uint8_t> arena(static_cast<size_t>(program.train_arena_bytes));
  double loss = 0.0;
  program.train_step(params.data(), grads.data(), tokens.data(), targets.data(),
                     arena.data(), &loss);

  ckpt::File out;
  const T loss_t = static_cast<T>(loss);
  if constexpr (std::is_same_v<T, float>)
    out.tensors["loss"] = ckpt::Tensor::from_f32({}, &loss_t);
  else
    out.tensors["loss"] = ckpt::Tensor::from_f64({}, &loss_t);
  add_param_tensors<T>(program, grads.data(), "", out);
  ckpt::write_safetensors(options.out, out);
  return loss;
}

} // namespace

double run_verify(const ProgramInfo &program, const VerifyOptions &options) {
  validate_program(program);
  if (program.dtype == DType::F64)
    return verify_impl<double>(program, options);
  return verify_impl<float>(program, options);
}

} // namespace llamart::train
