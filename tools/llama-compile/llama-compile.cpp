//===- llama-compile.cpp - config or MLIR in, training binary out --------===//
//
//   llama-compile (--preset NAME | --config FILE | MODEL.mlir) [--target cpu]
//     [--batch B] [--seq-len T] [--remat none|selective|full] [--dtype f32|f64]
//     [--emit mlir|train-mlir|source] [--report] [--print-params] [-o OUT]
//
//===----------------------------------------------------------------------===//
#include "compiler/Driver.h"

int main(int argc, char **argv) { return llama::compileMain(argc, argv); }
