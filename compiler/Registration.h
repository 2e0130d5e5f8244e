//===- Registration.h - what llama-opt and llama-compile register -*- C++ -*-===//
#pragma once

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace llama {
/// The dialects our programs use: llama, func, shard (collectives). Nothing else is registered,
/// so a module using another dialect is rejected at parse time.
void registerCompilerDialects(mlir::DialectRegistry &registry);
/// Our passes and pipelines (command-line names start with `llama-`).
void registerCompilerPasses();
} // namespace llama
