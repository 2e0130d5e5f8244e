//===- Toolchain.h - building a training binary from emitted source -*- C++ -*-===//
#pragma once

#include "llvm/ADT/StringRef.h"

#include <string>

namespace llama {

struct ToolchainOptions {
  /// llama-compile's own path: the runtime is found relative to it
  /// (PREFIX/bin/llama-compile -> PREFIX/include/llama-mlir,
  /// PREFIX/lib/llama-mlir; the build tree has the same layout of links).
  std::string mainExecutable;
  std::string cxx;  // C++ compiler; empty: $CXX, else c++
  std::string nvcc; // empty: the one found when llama-compile was built
  std::string cudaArch = "sm_90a";
  bool keepSource = false;  // write OUT.cpp (OUT.cu) instead of temporaries
  bool cudaEmulate = false; // compile the CUDA source as C++ (emulate.h)
  bool partitioned = false; // dp x tp > 1: link the NCCL collectives
};

/// Compiles `source` (the emitted C++) and links libllamart into the
/// executable `out`. With `cudaSource`, a --target cuda binary: the CUDA
/// source is compiled by nvcc for `cudaArch` (or as C++ with cudaEmulate)
/// and linked with the runtime's CUDA library, cuBLASLt and the CUDA
/// runtime. Errors are printed as one "llama-compile: ..." line naming the
/// tool or the missing file; returns the exit status (0: built).
int buildExecutable(llvm::StringRef source, llvm::StringRef out, llvm::StringRef cudaSource,
                    const ToolchainOptions &options);

} // namespace llama
