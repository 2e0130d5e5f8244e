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

} // namespace llama
