//===- LlamaBuilder.h - LlamaConfig -> llama dialect module -----*- C++ -*-===//
#pragma once

#include "models/LlamaConfig.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace llama {

struct BuildOptions {
  int64_t batch = 4;
  int64_t seqLen = 256;
  bool float64 = false; // fp64 programs exist for gradient checks
};

/// Builds `func.func @forward(params..., tokens, targets) -> loss` for the
/// config: every parameter argument carries its Hugging Face name
/// (`llama.param_name`), token arguments `llama.input`, and every op of
/// transformer layer i carries `llama.layer = i`. The module carries
/// `llama.model_name` and `llama.config` (HF config.json text).
/// Throws std::runtime_error on invalid configs or options.
mlir::OwningOpRef<mlir::ModuleOp> buildForward(mlir::MLIRContext &ctx,
                                               const LlamaConfig &config,
                                               const BuildOptions &options);

/// Generation with a KV cache: two forward-only functions added to a module
/// built by buildForward (same config, same parameter order and names):
///   @prefill(params..., tokens [batch, chunk], position) -> logits [batch, chunk, vocab]
///   @decode (params..., tokens [batch, 1],     position) -> logits [batch, 1, vocab]
/// Both also take, after `position` (a 0-d i32 tensor, llama.input =
/// "position": the position of the first token), one key and one value
/// cache per layer, [batch, capacity, kv_heads, head_dim], marked
/// `llama.kv_cache` = "key" / "value" and `llama.layer`. They append the
/// tokens' keys and values at their positions and attend over the cache.
struct GenerateOptions {
  int64_t batch = 1;
  int64_t chunk = 32;    // tokens per prefill call
  int64_t capacity = 0;  // cache rows (positions); 0 = max_position_embeddings
  bool float64 = false;
};
void addGenerateFunctions(mlir::ModuleOp module, const LlamaConfig &config,
                          const GenerateOptions &options);

} // namespace llama
