// Measured memory of a compiled program (see memory_probe.h).
#include "runtime/cli/memory_probe.h"

#include "runtime/program/aligned_buffer.h"
#include "runtime/program/param_store.h"
#include "runtime/program/rng.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace llamart::cli {
namespace {

constexpr int64_t kGuardBytes = 4096;

// /proc/self/status field in bytes (VmRSS, VmHWM).
int64_t proc_status_bytes(const char *field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(field);
  while (std::getline(in, line))
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':')
      return std::stoll(line.substr(n + 1)) * 1024; // reported in kB
  return -1;
}

// Highest byte index (exclusive) of [0, size) that differs from `pattern`.
int64_t high_water(const unsigned char *p, int64_t size, unsigned char pattern) {
  for (int64_t i = size; i > 0; --i)
    if (p[i - 1] != pattern)
      return i;
  return 0;
}

void check_guard(const unsigned char *p, int64_t size, unsigned char pattern,
                 const char *what) {
  for (int64_t i = size; i < size + kGuardBytes; ++i)
    if (p[i] != pattern)
      throw std::runtime_error(std::string("memcheck: a kernel wrote past the end of the ") +
                               what + " (byte " + std::to_string(i - size) +
                               " beyond its " + std::to_string(size) + " planned bytes)");
}

// The batch memcheck runs on: uniform token ids from `seed`.
void random_batch(const ProgramInfo &program, uint64_t seed, std::vector<int32_t> &tokens,
                  std::vector<int32_t> &targets) {
  const int64_t n = program.batch * program.seq_len;
  tokens.resize(static_cast<size_t>(n));
  targets.resize(static_cast<size_t>(n));
  Rng rng(derive_seed(seed, "memcheck"));
  for (int64_t i = 0; i < n; ++i) {
    tokens[i] = static_cast<int32_t>(rng.below(program.vocab_size));
    targets[i] = static_cast<int32_t>(rng.below(program.vocab_size));
  }
}

template <typename T> MemoryProbe probe(const ProgramInfo &program, uint64_t seed) {
  MemoryProbe m;
  const int64_t rss_before = proc_status_bytes("VmRSS");
  const int64_t n = program.param_numel;
  // The trainer's buffers: parameters, gradients, two AdamW moments.
  AlignedBuffer<T> params(n), grads(n), exp_avg(n), exp_avg_sq(n);
  m.state_bytes = 4 * n * static_cast<int64_t>(sizeof(T));
  init_params<T>(program, seed, params.data());
  std::vector<int32_t> tokens, targets;
  random_batch(program, seed, tokens, targets);
  const int64_t tokens_n = program.batch * program.seq_len;
  m.train_arena_bytes = program.train_arena_bytes;
  m.eval_arena_bytes = program.eval_arena_bytes;
  AlignedBuffer<unsigned char> arena(program.train_arena_bytes + kGuardBytes);
  AlignedBuffer<unsigned char> eval_arena(program.eval_arena_bytes + kGuardBytes);
  m.allocated_bytes = m.state_bytes + program.train_arena_bytes +
                      program.eval_arena_bytes +
                      2 * tokens_n * static_cast<int64_t>(sizeof(int32_t));

  for (unsigned char pattern : {0xA5, 0x5A}) {
    std::memset(arena.data(), pattern, arena.size());
    std::memset(eval_arena.data(), pattern, eval_arena.size());
    double loss = 0;
    program.train_step(params.data(), grads.data(), tokens.data(), targets.data(),
                       arena.data(), &loss);
    program.eval_loss(params.data(), tokens.data(), targets.data(),
                      eval_arena.data(), &loss);
    check_guard(arena.data(), program.train_arena_bytes, pattern, "train arena");
    check_guard(eval_arena.data(), program.eval_arena_bytes, pattern, "eval arena");
    m.train_arena_used_bytes = std::max(
        m.train_arena_used_bytes, high_water(arena.data(), program.train_arena_bytes, pattern));
    m.eval_arena_used_bytes = std::max(
        m.eval_arena_used_bytes,
        high_water(eval_arena.data(), program.eval_arena_bytes, pattern));
  }
  (void)exp_avg;
  (void)exp_avg_sq;
  m.rss_growth_bytes = proc_status_bytes("VmHWM") - rss_before;
  return m;
}

} // namespace

DeviceMemoryProbe probe_device_memory(const ProgramInfo &program, uint64_t seed) {
  if (!program.open_device || program.dtype != DType::F32)
    throw std::runtime_error("memcheck: not a device program");
  std::unique_ptr<DeviceSession> device(program.open_device(program));
  const int64_t n = program.param_numel;
  AlignedBuffer<float> params(n), zeros(n);
  init_params<float>(program, seed, params.data());
  device->upload(params.data(), zeros.data(), zeros.data());
  std::vector<int32_t> tokens, targets;
  random_batch(program, seed, tokens, targets);
  return device->probe_memory(tokens.data(), targets.data());
}

MemoryProbe probe_memory(const ProgramInfo &program, uint64_t seed) {
  return program.dtype == DType::F64 ? probe<double>(program, seed)
                                     : probe<float>(program, seed);
}

} // namespace llamart::cli
