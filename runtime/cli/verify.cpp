#include "runtime/cli/verify.h"

#include "runtime/checkpoint/safetensors.h"
#include "runtime/comm/comm.h"
#include "runtime/train/distributed.h"
#include "runtime/program/partition.h"
#include "runtime/program/aligned_buffer.h"
#include "runtime/program/param_store.h"
#include "runtime/program/program_check.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <type_traits>

namespace llamart::cli {

using train::gather_full_params;
using train::grid_place;
using train::GridPlace;

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

// "loss" + every gradient by HF name, as `program` lays them out.
template <typename T>
ckpt::File gradients_file(const ProgramInfo &program, double loss, const T *grads) {
  ckpt::File out;
  const T loss_t = static_cast<T>(loss);
  if constexpr (std::is_same_v<T, float>)
    out.tensors["loss"] = ckpt::Tensor::from_f32({}, &loss_t);
  else
    out.tensors["loss"] = ckpt::Tensor::from_f64({}, &loss_t);
  add_param_tensors<T>(program, grads, "", out);
  return out;
}

// A partitioned program's step on one rank of its grid: every rank reads the
// full weights (as the single-process program lays them out, FullProgramView)
// and the global batch, and keeps its tp slice and its dp share of the
// batch; the gradients are summed over the data-parallel ranks and gathered
// over the tensor-parallel ones, so that rank 0 writes exactly what the
// single-process program's verify writes.
template <typename T>
double verify_partitioned(const ProgramInfo &program, const VerifyOptions &options) {
  const GridPlace grid = grid_place(program);
  const FullProgramView view(program);
  const ProgramInfo &full = view.program();
  AlignedBuffer<T> full_buf(static_cast<size_t>(full.param_numel));
  load_param_tensors<T>(full, ckpt::read_safetensors(options.weights), options.weights,
                        {{"", full_buf.data()}});
  AlignedBuffer<T> params(static_cast<size_t>(program.param_numel));
  AlignedBuffer<T> grads(static_cast<size_t>(program.param_numel));
  slice_params(program, view, grid.tp_rank, full_buf.data(), params.data());

  // The global batch (full.batch), of which dp rank d trains on rows
  // [d * batch, (d + 1) * batch).
  const size_t n_global = static_cast<size_t>(full.batch * program.seq_len);
  AlignedBuffer<int32_t> tokens(n_global), targets(n_global);
  split_batch(full, ckpt::read_safetensors(options.batch_file), options.batch_file,
              tokens.data(), targets.data());
  const size_t first = static_cast<size_t>(grid.dp_rank * program.batch * program.seq_len);

  double loss = 0.0;
  bool on_device = false;
  if constexpr (std::is_same_v<T, float>) {
    if (program.open_device && !options.cpu) {
      // The device step of this rank, its collectives included.
      std::unique_ptr<DeviceSession> device(program.open_device(program));
      AlignedBuffer<T> zeros(static_cast<size_t>(program.param_numel));
      device->upload(params.data(), zeros.data(), zeros.data());
      loss = device->train_step(tokens.data() + first, targets.data() + first, false,
                                  /*last=*/true);
      device->read_grads(grads.data());
      on_device = true;
    }
  }
  if (!on_device) {
    AlignedBuffer<uint8_t> arena(static_cast<size_t>(program.train_arena_bytes));
    program.train_step(params.data(), grads.data(), tokens.data() + first,
                       targets.data() + first, arena.data(), &loss);
  }

  comm::all_reduce(grads.data(), program.param_numel, comm::ReduceOp::Sum,
                   comm::Axis::DP, "verify: gradients over data-parallel ranks");
  gather_full_params(program, view, grads.data(), full_buf.data());
  if (grid.root())
    ckpt::write_safetensors(options.out, gradients_file(full, loss, full_buf.data()));
  comm::barrier(comm::Axis::World, "verify: written");
  return loss;
}

template <typename T>
double verify_impl(const ProgramInfo &program, const VerifyOptions &options) {
  if (is_partitioned(program))
    return verify_partitioned<T>(program, options);
  AlignedBuffer<T> params(static_cast<size_t>(program.param_numel));
  AlignedBuffer<T> grads(static_cast<size_t>(program.param_numel));
  load_param_tensors<T>(program, ckpt::read_safetensors(options.weights),
                        options.weights, {{"", params.data()}});

  const size_t n = static_cast<size_t>(program.batch * program.seq_len);
  AlignedBuffer<int32_t> tokens(n), targets(n);
  split_batch(program, ckpt::read_safetensors(options.batch_file),
              options.batch_file, tokens.data(), targets.data());

  double loss = 0.0;
  if constexpr (std::is_same_v<T, float>) {
    if (program.open_device && !options.cpu) {
      // The device step, on the device (the moments are not used).
      std::unique_ptr<DeviceSession> device(program.open_device(program));
      AlignedBuffer<T> zeros(static_cast<size_t>(program.param_numel));
      device->upload(params.data(), zeros.data(), zeros.data());
      loss = device->train_step(tokens.data(), targets.data(), false, /*last=*/true);
      device->read_grads(grads.data());
      ckpt::write_safetensors(options.out, gradients_file(program, loss, grads.data()));
      return loss;
    }
  }
  AlignedBuffer<uint8_t> arena(static_cast<size_t>(program.train_arena_bytes));
  program.train_step(params.data(), grads.data(), tokens.data(), targets.data(),
                     arena.data(), &loss);

  ckpt::write_safetensors(options.out, gradients_file(program, loss, grads.data()));
  return loss;
}

} // namespace

double run_verify(const ProgramInfo &program, const VerifyOptions &options) {
  validate_program(program);
  if (program.dtype == DType::F64)
    return verify_impl<double>(program, options);
  return verify_impl<float>(program, options);
}

} // namespace llamart::cli
