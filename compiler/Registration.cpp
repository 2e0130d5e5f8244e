//===- Registration.cpp - dialect, pass and pipeline registration --------===//
#include "compiler/Registration.h"

#include "compiler/Pipelines.h"
#include "dialects/llama/IR/LlamaDialect.h"
#include "dialects/llama/IR/LlamaOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/IR/DialectRegistry.h"

void llama::registerCompilerDialects(mlir::DialectRegistry &registry) {
  registry.insert<mlir::llama::LlamaDialect, mlir::func::FuncDialect,
                  mlir::shard::ShardDialect>();
  mlir::llama::registerShardVJPModels(registry);
}

void llama::registerCompilerPasses() {
  mlir::llama::registerLlamaPasses();
  registerPipelines();
}
