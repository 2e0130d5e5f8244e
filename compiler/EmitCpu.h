//===- EmitCpu.h - C++ source for the CPU runtime ---------------*- C++ -*-===//
#pragma once

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

namespace llama {

/// Emits the C++ translation unit of a training program from a module that
/// went through buildTrainingPipeline (planned @train_step and @logits).
/// The source defines `llamart_program()` (runtime/program/program.h) and
/// calls runtime/cpu/kernels.h with constant shapes and arena offsets.
/// Deterministic: the same module gives the same bytes. With `cudaDevice`
/// the program trains on a GPU: its ProgramInfo names target "cuda" and
/// `llama_cuda_open_device`, defined by the CUDA source that EmitCuda
/// writes for the same module with `session` set, and `gradBucketBounds`
/// (CudaPlanFigures, dp grids) its ZeRO-1 gradient buckets.
mlir::LogicalResult emitCpuSource(mlir::ModuleOp module, llvm::raw_ostream &os,
                                  bool cudaDevice = false,
                                  llvm::ArrayRef<int64_t> gradBucketBounds = {});

} // namespace llama
