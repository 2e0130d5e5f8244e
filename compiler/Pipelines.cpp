//===- Pipelines.cpp - pass pipelines of llama-mlir ----------------------===//
#include "compiler/Pipelines.h"

#include "passes/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"
#include "mlir/Pass/PassRegistry.h"

void llama::buildTrainingPipeline(mlir::OpPassManager &pm,
                                  const TrainingPipelineOptions &options) {
  if (options.dp * options.tp > 1)
    pm.addPass(mlir::llama::createLlamaShard(
        {options.dp, options.tp, options.sequenceParallel}));
  mlir::llama::LlamaRematOptions remat;
  remat.policy = options.remat;
  remat.fuse = options.fuse;
  pm.addPass(mlir::llama::createLlamaRemat(remat));
  pm.addPass(mlir::llama::createLlamaAutodiff());
  pm.addPass(mlir::llama::createLlamaDeriveLogits({options.generateBatch}));
  if (options.fuse)
    pm.addPass(mlir::llama::createLlamaFuse());
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
  Option<int64_t> dp{*this, "dp", llvm::cl::desc("data-parallel ranks"),
                     llvm::cl::init(1)};
  Option<int64_t> tp{*this, "tp", llvm::cl::desc("tensor-parallel ranks"),
                     llvm::cl::init(1)};
  Option<bool> sp{*this, "sp", llvm::cl::desc("sequence parallelism"),
                  llvm::cl::init(false)};
  Option<bool> fuse{*this, "fuse", llvm::cl::desc("run llama-fuse"),
                    llvm::cl::init(true)};
};
} // namespace

void llama::registerPipelines() {
  mlir::PassPipelineRegistration<PipelineCliOptions>(
      "llama-training-pipeline",
      "shard (dp x tp), remat, autodiff, derive @logits, fuse, plan memory",
      [](mlir::OpPassManager &pm, const PipelineCliOptions &cli) {
        buildTrainingPipeline(pm, {cli.remat, cli.generateBatch, cli.dp,
                                   cli.tp, cli.sp, cli.fuse});
      });
}
