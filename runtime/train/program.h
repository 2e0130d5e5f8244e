// The contract between a generated step program (emitted by llama-compile)
// and the runtime's training driver (runtime/train). The generated source
// defines `llamart_program()`; libllamart's main() implements the
// subcommands (train, verify, generate) on top of it. Plain C types only, so
// the ABI is stable and the runtime never sees MLIR.
#pragma once
#include <cstdint>

namespace llamart {

enum class DType : int32_t { F32 = 0, F64 = 1 };

enum class ParamInit : int32_t {
  Normal = 0, // N(0, init_std)
  Ones = 1,   // norm weights
};

struct ParamInfo {
  const char *name;   // Hugging Face name, e.g. "model.layers.0.mlp.up_proj.weight"
  int32_t rank;       // 1 or 2
  int64_t shape[4];   // [out, in] for 2-D weights
  int64_t numel;
  int64_t offset;     // element offset into the flat parameter (and gradient) buffer
  ParamInit init;
};

// One compiled function: a train step or a logits function.
// All pointers are to buffers the runtime owns; `arena` has `arena_bytes`
// bytes, 64-byte aligned, contents undefined on entry.
struct ProgramInfo {
  int32_t abi_version;        // = kProgramAbiVersion
  const char *model_name;     // e.g. "tiny"
  const char *config_json;    // HF-style config.json text of the model
  DType dtype;
  int64_t batch;              // sequences per train step
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
};

constexpr int32_t kProgramAbiVersion = 2;

} // namespace llamart

// Defined by the generated source.
extern "C" const llamart::ProgramInfo *llamart_program();
