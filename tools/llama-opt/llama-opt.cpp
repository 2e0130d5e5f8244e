//===- llama-opt.cpp - MLIR's -opt driver for the llama dialect ----------===//
#include "compiler/Registration.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  llama::registerCompilerDialects(registry);
  llama::registerCompilerPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "llama-opt: the llama dialect and passes\n",
                        registry));
}
