//===- Pipelines.cpp - pass pipelines of llama-mlir ----------------------===//
#include "compiler/Pipelines.h"

#include "passes/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"
#include "mlir/Pass/PassRegistry.h"

void llama::buildTrainingPipeline(mlir::OpPassManager &pm,
                                  const TrainingPipelineOptions &options) {
  pm.addPass(mlir::llama::createLlamaRemat({options.remat}));
  pm.addPass(mlir::llama::createLlamaAutodiff());
  pm.addPass(mlir::llama::createLlamaDeriveLogits({options.generateBatch}));
  pm.addPass(mlir::llama::createLlamaPlanMemory());
}

namespace {
struct PipelineCliOptions
    : public mlir::PassPipelineOptions<PipelineCliOptions> {
  Option<std::string> remat{*this, "remat",
                            llvm::cl::desc("none | selective | full"),
                            llvm::cl::init("selective")};
  Option<int64_t> generateBatch{*this, "generate-batch",
                                llvm::cl::desc("batch of @logits"),
                                llvm::cl::init(1)};
};
} // namespace

void llama::registerPipelines() {
  mlir::PassPipelineRegistration<PipelineCliOptions>(
      "llama-training-pipeline",
      "remat, autodiff, derive @logits, plan memory",
      [](mlir::OpPassManager &pm, const PipelineCliOptions &cli) {
        buildTrainingPipeline(pm, {cli.remat, cli.generateBatch});
      });
}
