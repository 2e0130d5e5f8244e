// The MLIR entry of llama-opt / llama-compile MODEL.mlir: parse arbitrary text
// with the llama dialect registered, verify it, and run the training pipeline
// on whatever verifies. Bad input must end as diagnostics and a failure
// result (which the tools turn into a one-line error), never a crash.
#include "compiler/InputGuard.h"
#include "compiler/Pipelines.h"
#include "compiler/Registration.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"

#include <memory>

namespace {

mlir::MLIRContext &context() {
  // One context for the whole run, as a tool has: building one per input
  // would dominate the time. Types and attributes accumulate in it, which
  // is also what a long llama-opt session sees.
  static std::unique_ptr<mlir::MLIRContext> ctx = [] {
    mlir::DialectRegistry registry;
    llama::registerCompilerDialects(registry);
    auto c = std::make_unique<mlir::MLIRContext>(registry);
    c->loadAllAvailableDialects();
    // Single-threaded: deterministic, and libFuzzer measures one thread.
    c->disableMultithreading();
    // Swallow diagnostics; printing thousands of them only slows fuzzing.
    c->getDiagEngine().registerHandler([](mlir::Diagnostic &) {});
    return c;
  }();
  return *ctx;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mlir::MLIRContext &ctx = context();
  // The tools refuse over-deep nesting before parsing (compiler/InputGuard.h).
  if (llama::checkNesting(llvm::StringRef(reinterpret_cast<const char *>(data), size)))
    return 0;
  // Exactly the tools' path: a null-terminated buffer (the MLIR lexer relies
  // on the terminator, which openInputFile provides) in a SourceMgr.
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(
          llvm::StringRef(reinterpret_cast<const char *>(data), size), "fuzz.mlir"),
      llvm::SMLoc());
  mlir::ParserConfig config(&ctx);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceFile<mlir::ModuleOp>(sourceMgr, config);
  if (!module || mlir::failed(mlir::verify(*module)))
    return 0;
  mlir::PassManager pm(&ctx);
  llama::buildTrainingPipeline(pm, llama::TrainingPipelineOptions{});
  (void)pm.run(*module);
  return 0;
}
