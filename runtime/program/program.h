// The contract between a generated step program (emitted by llama-compile)
// and the runtime's training driver (runtime/train). The generated source
// defines `llamart_program()`; libllamart's main() implements the
// subcommands (train, verify, generate) on top of it. Plain C types only, so
// the ABI is stable and the runtime never sees MLIR.
#pragma once
#include <cstdint>

#include "runtime/program/device_session.h"

namespace llamart {

enum class DType : int32_t { F32 = 0, F64 = 1 };

enum class ParamInit : int32_t {
  Normal = 0, // N(0, init_std)
  Ones = 1,   // norm weights
};

struct ParamInfo {
  const char *name;   // Hugging Face name, e.g. "model.layers.0.mlp.up_proj.weight"
  int32_t rank;       // 1 or 2
  int64_t shape[4];   // [out, in] for 2-D weights: THIS RANK's shard of it
  int64_t numel;      // elements of this rank's shard
  int64_t offset;     // element offset into the flat parameter (and gradient) buffer
  ParamInit init;
  // Tensor parallelism (ABI v3). The parameter as checkpoints and the
  // single-rank program know it is `full_shape`; tensor-parallel rank r of
  // grid_tp holds the r-th of grid_tp equal slices along `shard_dim`, or the
  // whole tensor when shard_dim is -1 (then every tp rank holds the same
  // values and computes the same gradient, e.g. RMSNorm gains).
  int32_t shard_dim;
  int64_t full_shape[4];
};

// One compiled function: a train step or a logits function.
// All pointers are to buffers the runtime owns; `arena` has `arena_bytes`
// bytes, 64-byte aligned, contents undefined on entry.
struct ProgramInfo {
  int32_t abi_version;        // = kProgramAbiVersion
  const char *model_name;     // e.g. "tiny"
  const char *config_json;    // HF-style config.json text of the model
  DType dtype;
  int64_t batch;              // sequences per train step ON THIS RANK
                              // (global_batch / grid_dp)
  int64_t seq_len;            // tokens per sequence
  int64_t vocab_size;
  int64_t ignore_index;       // targets equal to this are not scored
  int32_t num_params;
  const ParamInfo *params;
  int64_t param_numel;        // total elements of all params (= grad buffer size)
  double init_std;            // std of ParamInit::Normal

  // Train step: loss (scalar, written to *loss) and the gradient of every
  // parameter written (overwritten) to grads at the param's offset.
  // tokens and targets: int32 [batch, seq_len].
  int64_t train_arena_bytes;
  void (*train_step)(const void *params, void *grads, const int32_t *tokens,
                     const int32_t *targets, void *arena, double *loss);

  // Forward only: logits [gen_batch, seq_len, vocab] for tokens
  // [gen_batch, seq_len] (causal, so positions past the prompt do not change
  // earlier logits).
  int64_t gen_batch;
  int64_t logits_arena_bytes;
  void (*logits)(const void *params, const int32_t *tokens, void *arena,
                 void *logits_out);

  // Forward only: the loss of tokens/targets [batch, seq_len] (evaluation
  // without the cost or the memory of the backward).
  int64_t eval_arena_bytes;
  void (*eval_loss)(const void *params, const int32_t *tokens,
                    const int32_t *targets, void *arena, double *loss);

  // Partitioning (ABI v3): the program is one rank of a grid_dp x grid_tp
  // grid (world rank = dp_index * grid_tp + tp_index, runtime/comm/comm.h).
  // 1 x 1 is the ordinary single-process program. A partitioned program's
  // train_step / eval_loss call the collectives of runtime/comm themselves
  // and return the GLOBAL loss (the same on every rank); the gradients they
  // write are this rank's local ones, summed over its dp group by the
  // optimizer (ZeRO-1). `logits` is null and gen_batch 0 for partitioned
  // programs: generation runs the single-rank binary on the same checkpoint
  // (checkpoints are grid-independent).
  int32_t grid_dp;
  int32_t grid_tp;
  int32_t sequence_parallel;  // 0/1: norms and residuals sharded on the sequence
  int64_t global_batch;       // sequences per train step over the whole grid
  int64_t full_param_numel;   // sum of the full (unpartitioned) param sizes

  // Generation with a KV cache (ABI v3; null / 0 when not compiled, e.g.
  // for partitioned programs). One cache buffer of kv_cache_bytes holds the
  // keys and values of every layer for gen_batch sequences of up to
  // kv_capacity positions. prefill takes tokens [gen_batch, prefill_chunk],
  // decode tokens [gen_batch, 1]; both start at position `pos` (the number
  // of tokens already in the cache), append their keys and values, and write
  // logits [gen_batch, chunk, vocab] for their tokens. Positions past the
  // real tokens of a padded prefill chunk are written to the cache too and
  // are overwritten by the decode steps that reach them; causality keeps
  // them out of every real token's logits.
  int64_t kv_capacity;
  int64_t kv_cache_bytes;
  int64_t prefill_chunk;
  int64_t prefill_arena_bytes;
  void (*prefill)(const void *params, const int32_t *tokens, int64_t pos,
                  void *kv_cache, void *arena, void *logits_out);
  int64_t decode_arena_bytes;
  void (*decode)(const void *params, const int32_t *tokens, int64_t pos,
                 void *kv_cache, void *arena, void *logits_out);

  // Accelerator (ABI v4): "cpu", or "cuda" for a program compiled with
  // --target cuda, whose open_device opens the GPU and allocates the whole
  // training state there (device_session.h; throws std::runtime_error naming
  // the reason when there is no usable device). train_step, logits,
  // eval_loss and the KV-cache functions above stay the CPU ones: the same
  // program on the host (generate, gradcheck, and verify --cpu).
  const char *target = "cpu";
  DeviceSession *(*open_device)(const ProgramInfo &program) = nullptr;

  // ZeRO-1 gradient buckets (ABI v5; 0 / null: one bucket, the whole flat
  // buffer): num_grad_buckets + 1 ascending element offsets from 0 to
  // param_numel rounded up to a multiple of grid_dp, each a multiple of
  // grid_dp. Every dp rank owns 1/grid_dp of every bucket (partition.h:
  // DpShard). A CUDA program on a dp grid names them: its train step starts
  // the reduce-scatter of each bucket as soon as the backward has written
  // the bucket's gradients, under the rest of the backward.
  int32_t num_grad_buckets = 0;
  const int64_t *grad_bucket_bounds = nullptr;

  // Generation on the device (ABI v6; null: on the host). A --target cuda
  // program with @prefill / @decode opens its GPU generator here
  // (device_session.h: DeviceGenerator; throws std::runtime_error naming the
  // reason when there is no usable device). `generate --cpu` runs the host
  // functions above instead.
  DeviceGenerator *(*open_generator)(const ProgramInfo &program) = nullptr;
};

constexpr int32_t kProgramAbiVersion = 6;

} // namespace llamart

// Defined by the generated source.
extern "C" const llamart::ProgramInfo *llamart_program();
