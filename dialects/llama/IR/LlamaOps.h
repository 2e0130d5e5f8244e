//===- LlamaOps.h - ops of the llama dialect --------------------*- C++ -*-===//
#pragma once

#include "dialects/llama/IR/LlamaDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "dialects/llama/IR/LlamaInterfaces.h.inc"

#define GET_OP_CLASSES
#include "dialects/llama/IR/LlamaOps.h.inc"

namespace mlir::llama {
/// Discardable attribute names shared by the builder and the passes.
/// `llama.param_name` (function argument): the Hugging Face name of a parameter.
inline constexpr llvm::StringLiteral kParamNameAttr = "llama.param_name";
/// `llama.input` (function argument): "tokens" or "targets".
inline constexpr llvm::StringLiteral kInputAttr = "llama.input";
/// `llama.layer` (op): index of the transformer layer the op belongs to.
inline constexpr llvm::StringLiteral kLayerAttr = "llama.layer";
/// `llama.remat` (op): "save" or "recompute", set by llama-remat.
inline constexpr llvm::StringLiteral kRematAttr = "llama.remat";
/// `llama.backward` (op): built by llama-autodiff (unit attribute).
inline constexpr llvm::StringLiteral kBackwardAttr = "llama.backward";
/// `llama.recomputed` (op): a forward op cloned into the backward by remat.
inline constexpr llvm::StringLiteral kRecomputedAttr = "llama.recomputed";
/// `llama.grad_of` (function result): the parameter this result is the gradient of.
inline constexpr llvm::StringLiteral kGradOfAttr = "llama.grad_of";
} // namespace mlir::llama
