//===- LlamaInterfaces.td - op interfaces of the llama dialect -*- tablegen -*-===//
#ifndef LLAMA_INTERFACES_TD
#define LLAMA_INTERFACES_TD

include "mlir/IR/OpBase.td"

def Llama_VJPOpInterface : OpInterface<"VJPOpInterface"> {
  let cppNamespace = "::mlir::llama";
  let description = [{
    The vector-Jacobian product of an op: given the cotangents of its
    results, build the ops that compute the cotangents of its operands.

    `forwardValue` maps a value of the forward program to the value the
    backward program must use for it: the value itself when it is saved, or
    a recomputed copy when the remat policy asked for recomputation. VJPs
    must fetch every forward operand or result through it, and only the ones
    they need, so that nothing is recomputed in vain.

    `resultGrads[i]` is null when result i has no cotangent. On success
    `operandGrads` has one entry per operand, null for operands that are not
    differentiable (token ids, targets).
  }];
  let methods = [
    InterfaceMethod<
      "Builds the cotangents of the operands at the builder's insertion point.",
      "::llvm::LogicalResult", "buildVJP",
      (ins "::mlir::OpBuilder &":$builder,
           "::llvm::function_ref<::mlir::Value(::mlir::Value)>":$forwardValue,
           "::llvm::ArrayRef<::mlir::Value>":$resultGrads,
           "::llvm::SmallVectorImpl<::mlir::Value> &":$operandGrads)>
  ];
}

#endif // LLAMA_INTERFACES_TD
