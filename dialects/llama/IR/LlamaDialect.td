//===- LlamaDialect.td - the llama dialect -----------------*- tablegen -*-===//
#ifndef LLAMA_DIALECT_TD
#define LLAMA_DIALECT_TD

include "mlir/IR/OpBase.td"

def Llama_Dialect : Dialect {
  let name = "llama";
  let summary = "Tensor-level operations of LLaMA-family transformer training";
  let description = [{
    The `llama` dialect describes a LLaMA model as a function of tensors:
    embedding lookup, RMSNorm, matmuls, rotary embeddings, causal attention
    with grouped KV heads, SwiGLU, residual adds and cross-entropy. Every
    differentiable op implements `VJPOpInterface`, from which
    `llama-autodiff` derives the backward graph; the backward ops
    (`*_grad`) are part of the dialect so that later passes (remat, fusion,
    sharding, lowering) see one uniform program.
  }];
  let cppNamespace = "::mlir::llama";
}

class Llama_Op<string mnemonic, list<Trait> traits = []>
    : Op<Llama_Dialect, mnemonic, traits>;

// Float tensors the runtime computes in: fp32 for training on CPU, fp64 for
// gradient checks.
def Llama_FloatTensor : RankedTensorOf<[F32, F64]>;
def Llama_IndexTensor : RankedTensorOf<[I32]>;
def Llama_ScalarTensor : 0DTensorOf<[F32, F64]>;
// [grid axis, full vocabulary]: the vocabulary dimension is split evenly over
// the processes of that grid axis (vocab-parallel embedding / cross-entropy).
def Llama_VocabShardAttr : ConfinedAttr<DenseI64ArrayAttr, [DenseArrayCount<2>]>;

#endif // LLAMA_DIALECT_TD
