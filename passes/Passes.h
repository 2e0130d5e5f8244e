//===- Passes.h - passes of llama-mlir --------------------------*- C++ -*-===//
#pragma once

#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Pass/Pass.h"
#include <memory>

namespace mlir::llama {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

} // namespace mlir::llama
