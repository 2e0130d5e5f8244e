//===- LlamaOps.td - ops of the llama dialect --------------*- tablegen -*-===//
//
// Forward ops implement VJPOpInterface; their `*_grad` partners are built by
// those VJPs. Shapes are static: the compiler specializes every kernel to
// them. Verifiers check what ODS traits cannot.
//
//===----------------------------------------------------------------------===//
#ifndef LLAMA_OPS_TD
#define LLAMA_OPS_TD

include "dialects/llama/IR/LlamaDialect.td"
include "dialects/llama/IR/LlamaInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

class Llama_DiffOp<string mnemonic, list<Trait> traits = []>
    : Llama_Op<mnemonic, !listconcat(traits,
        [Pure, DeclareOpInterfaceMethods<Llama_VJPOpInterface>])>;

//===----------------------------------------------------------------------===//
// Embedding
//===----------------------------------------------------------------------===//

def Llama_EmbeddingOp : Llama_DiffOp<"embedding"> {
  let summary = "Token embedding lookup";
  let description = [{
    `result[..., :] = table[ids[...], :]`. The table is `[vocab, dim]`; the
    result has the shape of `ids` with `dim` appended.

    With `vocab_shard = [axis, vocab]` (vocab-parallel embedding, set by
    llama-shard) the table holds rows `[r * rows, (r + 1) * rows)` of a
    `vocab`-row table, r being this process's index on grid axis `axis`;
    ids outside that range give zero rows (the partial sums are all-reduced
    or reduce-scattered over the axis afterwards).

    ```mlir
    %h = llama.embedding %table, %ids : (tensor<64x16xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$table, Llama_IndexTensor:$ids,
                       OptionalAttr<Llama_VocabShardAttr>:$vocab_shard);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$table `,` $ids attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llama_EmbeddingGradOp : Llama_Op<"embedding_grad", [Pure]> {
  let summary = "Gradient of the embedding table (scatter-add of rows)";
  let description = [{
    `result[v, :] = sum over positions p with ids[p] == v of grad[p, :]`.

    ```mlir
    %dt = llama.embedding_grad %dh, %ids : (tensor<2x8x16xf32>, tensor<2x8xi32>) -> tensor<64x16xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$grad, Llama_IndexTensor:$ids,
                       OptionalAttr<Llama_VocabShardAttr>:$vocab_shard);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$grad `,` $ids attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// RMSNorm
//===----------------------------------------------------------------------===//

def Llama_RMSNormOp : Llama_DiffOp<"rms_norm"> {
  let summary = "Root-mean-square normalization over the last dimension";
  let description = [{
    `result = x * rsqrt(mean(x^2, -1) + eps) * weight`, `weight` of shape
    `[dim]` where `dim` is the last dimension of `x`.

    ```mlir
    %n = llama.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$x, Llama_FloatTensor:$weight, F64Attr:$eps);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$x `,` $weight attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llama_RMSNormGradOp : Llama_Op<"rms_norm_grad", [Pure]> {
  let summary = "Gradients of RMSNorm with respect to its input and weight";
  let description = [{
    ```mlir
    %dx, %dw = llama.rms_norm_grad %dy, %x, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>) -> (tensor<2x8x16xf32>, tensor<16xf32>)
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$grad, Llama_FloatTensor:$x,
                       Llama_FloatTensor:$weight, F64Attr:$eps);
  let results = (outs Llama_FloatTensor:$x_grad, Llama_FloatTensor:$weight_grad);
  let assemblyFormat = "$grad `,` $x `,` $weight attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Matmul
//===----------------------------------------------------------------------===//

def Llama_MatmulOp : Llama_DiffOp<"matmul"> {
  let summary = "Batched matrix product with transpose flags";
  let description = [{
    `result[b] = op(lhs[b]) @ op(rhs[b])` where `op` transposes the last two
    dimensions when the matching flag is set. `lhs` is `[..., M, K]`
    (`[..., K, M]` if `transpose_lhs`); `rhs` either has the same leading
    (batch) dimensions as `lhs` or is a plain matrix shared by every batch
    (a linear layer: `rhs` is the `[out, in]` weight with
    `transpose_rhs`). A shared `rhs` requires `transpose_lhs = false`.

    ```mlir
    %q = llama.matmul %x, %wq {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<16x16xf32>) -> tensor<2x8x16xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$lhs, Llama_FloatTensor:$rhs,
                       DefaultValuedAttr<BoolAttr, "false">:$transpose_lhs,
                       DefaultValuedAttr<BoolAttr, "false">:$transpose_rhs);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Product of the leading (batch) dimensions of lhs.
    int64_t getBatchSize();
    int64_t getM();
    int64_t getN();
    int64_t getK();
    /// True when rhs is one matrix shared by every batch of lhs.
    bool isRhsShared();
  }];
}

//===----------------------------------------------------------------------===//
// Reshape
//===----------------------------------------------------------------------===//

def Llama_ReshapeOp : Llama_DiffOp<"reshape"> {
  let summary = "Reinterpretation of a row-major tensor under another shape";
  let description = [{
    Same elements in the same row-major order; lowering makes it a view.

    ```mlir
    %q4 = llama.reshape %q : (tensor<2x8x16xf32>) -> tensor<2x8x4x4xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$input);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Rotary embedding
//===----------------------------------------------------------------------===//

// RoPE scaling on every rope op: the inverse frequency of each rotated pair
// (head_dim / 2 of them) replacing theta^(-2i/d).
def Llama_RopeScalingAttrs : OptionalAttr<DenseF64ArrayAttr>;

def Llama_RopeOp : Llama_DiffOp<"rope"> {
  let summary = "Rotary position embedding, Hugging Face (rotate-half) pairing";
  let description = [{
    `x` is `[batch, seq, heads, head_dim]`; element `i < head_dim/2` is
    rotated with element `i + head_dim/2` by the angle `t * f_i` for the
    token at position `t`, where `f_i = theta^(-2i/head_dim)`, or
    `inv_freq[i]` when the op carries `inv_freq` (RoPE scaling: linear,
    dynamic NTK, YaRN, Llama 3; the model builder computes the frequencies,
    so every kernel and pass sees only these numbers). With
    `attention_factor` (YaRN), cos and sin are scaled by it.

    ```mlir
    %qr = llama.rope %q4 {theta = 1.0e+04 : f64} : (tensor<2x8x4x4xf32>) -> tensor<2x8x4x4xf32>
    %qs = llama.rope %q4 {theta = 1.0e+04 : f64, inv_freq = array<f64: 1.25e-01, 1.25e-03>, attention_factor = 1.2 : f64} : (tensor<2x8x4x4xf32>) -> tensor<2x8x4x4xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$input, F64Attr:$theta, Llama_RopeScalingAttrs:$inv_freq,
                       OptionalAttr<F64Attr>:$attention_factor);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llama_RopeGradOp : Llama_Op<"rope_grad", [Pure]> {
  let summary = "Gradient of the rotary embedding (the inverse rotation)";
  let description = [{
    ```mlir
    %dq = llama.rope_grad %dqr {theta = 1.0e+04 : f64} : (tensor<2x8x4x4xf32>) -> tensor<2x8x4x4xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$grad, F64Attr:$theta, Llama_RopeScalingAttrs:$inv_freq,
                       OptionalAttr<F64Attr>:$attention_factor);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$grad attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

def Llama_AttentionOp : Llama_DiffOp<"attention"> {
  let summary = "Causal scaled dot-product attention with grouped KV heads";
  let description = [{
    `query` is `[batch, seq, n_heads, head_dim]`, `key` and `value` are
    `[batch, seq, n_kv_heads, head_dim]` with `n_heads % n_kv_heads == 0`
    (query head `h` reads KV head `h / (n_heads / n_kv_heads)`). Position `i`
    attends to positions `j <= i` with scores `scale * q_i . k_j`. Besides
    the output it returns the softmax logsumexp `[batch, n_heads, seq]` that
    the backward needs, so no `seq x seq` matrix is ever kept.

    ```mlir
    %o, %lse = llama.attention %q, %k, %v {scale = 5.000000e-01 : f64} : (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>, tensor<2x8x2x4xf32>) -> (tensor<2x8x4x4xf32>, tensor<2x4x8xf32>)
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$query, Llama_FloatTensor:$key,
                       Llama_FloatTensor:$value, F64Attr:$scale);
  let results = (outs Llama_FloatTensor:$result, Llama_FloatTensor:$logsumexp);
  let assemblyFormat = "$query `,` $key `,` $value attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumHeads();
    int64_t getNumKvHeads();
    int64_t getHeadDim();
  }];
}

def Llama_AttentionGradOp : Llama_Op<"attention_grad", [Pure]> {
  let summary = "Gradients of causal attention with respect to q, k and v";
  let description = [{
    Recomputes the probabilities from the saved logsumexp.

    ```mlir
    %dq, %dk, %dv = llama.attention_grad %do, %q, %k, %v, %o, %lse {scale = 5.000000e-01 : f64} : (tensor<2x8x4x4xf32>, tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>, tensor<2x8x2x4xf32>, tensor<2x8x4x4xf32>, tensor<2x4x8xf32>) -> (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>, tensor<2x8x2x4xf32>)
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$grad, Llama_FloatTensor:$query,
                       Llama_FloatTensor:$key, Llama_FloatTensor:$value,
                       Llama_FloatTensor:$result, Llama_FloatTensor:$logsumexp,
                       F64Attr:$scale);
  let results = (outs Llama_FloatTensor:$query_grad, Llama_FloatTensor:$key_grad,
                      Llama_FloatTensor:$value_grad);
  let assemblyFormat = "$grad `,` $query `,` $key `,` $value `,` $result `,` $logsumexp attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// SwiGLU and add
//===----------------------------------------------------------------------===//

def Llama_SwigluOp : Llama_DiffOp<"swiglu", [SameOperandsAndResultType]> {
  let summary = "silu(gate) * up";
  let description = [{
    ```mlir
    %s = llama.swiglu %g, %u : (tensor<2x8x48xf32>, tensor<2x8x48xf32>) -> tensor<2x8x48xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$gate, Llama_FloatTensor:$up);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$gate `,` $up attr-dict `:` functional-type(operands, results)";
}

def Llama_SwigluGradOp : Llama_Op<"swiglu_grad", [Pure, SameOperandsAndResultType]> {
  let summary = "Gradients of silu(gate) * up";
  let description = [{
    ```mlir
    %dg, %du = llama.swiglu_grad %ds, %g, %u : (tensor<2x8x48xf32>, tensor<2x8x48xf32>, tensor<2x8x48xf32>) -> (tensor<2x8x48xf32>, tensor<2x8x48xf32>)
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$grad, Llama_FloatTensor:$gate, Llama_FloatTensor:$up);
  let results = (outs Llama_FloatTensor:$gate_grad, Llama_FloatTensor:$up_grad);
  let assemblyFormat = "$grad `,` $gate `,` $up attr-dict `:` functional-type(operands, results)";
}

def Llama_AddOp : Llama_DiffOp<"add", [SameOperandsAndResultType]> {
  let summary = "Elementwise sum (residual connections, gradient accumulation)";
  let description = [{
    ```mlir
    %h = llama.add %x, %a : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$lhs, Llama_FloatTensor:$rhs);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` functional-type(operands, results)";
}

//===----------------------------------------------------------------------===//
// Cross-entropy
//===----------------------------------------------------------------------===//

def Llama_CrossEntropyOp : Llama_DiffOp<"cross_entropy"> {
  let summary = "Mean softmax cross-entropy over the tokens whose target is scored";
  let description = [{
    `logits` is `[..., vocab]`, `targets` has the leading shape of `logits`.
    The result is the mean of `logsumexp(logits) - logits[target]` over the
    positions whose target differs from `ignore_index`.

    ```mlir
    %loss = llama.cross_entropy %logits, %targets {ignore_index = -100 : i64} : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$logits, Llama_IndexTensor:$targets,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs Llama_ScalarTensor:$result);
  let assemblyFormat = "$logits `,` $targets attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llama_CrossEntropyGradOp : Llama_Op<"cross_entropy_grad", [Pure]> {
  let summary = "Gradient of the mean cross-entropy with respect to the logits";
  let description = [{
    ```mlir
    %dl = llama.cross_entropy_grad %dloss, %logits, %targets {ignore_index = -100 : i64} : (tensor<f32>, tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<2x8x64xf32>
    ```
  }];
  let arguments = (ins Llama_ScalarTensor:$grad, Llama_FloatTensor:$logits,
                       Llama_IndexTensor:$targets,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$grad `,` $logits `,` $targets attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Constants
//===----------------------------------------------------------------------===//

def Llama_FillOp : Llama_Op<"fill", [Pure]> {
  let summary = "A tensor with every element equal to `value`";
  let description = [{
    Seeds the backward pass (d loss / d loss = 1) and gives zero gradients
    to parameters the loss does not depend on.

    ```mlir
    %one = llama.fill {value = 1.0 : f64} : tensor<f32>
    ```
  }];
  let arguments = (ins F64Attr:$value);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

//===----------------------------------------------------------------------===//
// Generation with a KV cache (forward only)
//===----------------------------------------------------------------------===//

def Llama_PositionTensor : 0DTensorOf<[I32]>;

def Llama_RopeAtOp : Llama_Op<"rope_at", [Pure]> {
  let summary = "Rotary embedding of a chunk of tokens that starts at a run-time position";
  let description = [{
    `rope` for the tokens at positions `position .. position + chunk - 1`
    (`x` is `[batch, chunk, heads, head_dim]`), with the same angles
    (`theta`, `inv_freq` and `attention_factor` as on `rope`), so a
    cached generation rotates exactly as training did. `max_positions`
    bounds `position + chunk` (the KV cache's capacity).

    ```mlir
    %qr = llama.rope_at %q, %pos {theta = 1.0e+04 : f64, max_positions = 64 : i64} : (tensor<1x1x4x4xf32>, tensor<i32>) -> tensor<1x1x4x4xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$input, Llama_PositionTensor:$position,
                       F64Attr:$theta, I64Attr:$max_positions, Llama_RopeScalingAttrs:$inv_freq,
                       OptionalAttr<F64Attr>:$attention_factor);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$input `,` $position attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llama_AttentionCachedOp : Llama_Op<"attention_cached", [
    MemoryEffects<[MemRead, MemWrite]>]> {
  let summary = "Causal attention of a chunk of queries over a KV cache it appends to";
  let description = [{
    Writes `key` and `value` (`[batch, chunk, kv_heads, head_dim]`, already
    rotated) into the caches (`[batch, capacity, kv_heads, head_dim]`, the
    runtime's buffers, function arguments marked `llama.kv_cache`) at rows
    `position .. position + chunk - 1`, then computes causal attention of
    each query (absolute position `position + i`) over cache rows
    `0 .. position + i`. The caches are updated in place (destination
    passing), hence the write effect: the op is never reordered or removed.

    ```mlir
    %o = llama.attention_cached %q, %k, %v, %kc, %vc, %pos {scale = 0.5 : f64} : (tensor<1x1x4x4xf32>, tensor<1x1x2x4xf32>, tensor<1x1x2x4xf32>, tensor<1x64x2x4xf32>, tensor<1x64x2x4xf32>, tensor<i32>) -> tensor<1x1x4x4xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$query, Llama_FloatTensor:$key,
                       Llama_FloatTensor:$value, Llama_FloatTensor:$key_cache,
                       Llama_FloatTensor:$value_cache,
                       Llama_PositionTensor:$position, F64Attr:$scale);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$query `,` $key `,` $value `,` $key_cache `,` $value_cache `,` $position attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Partitioning (llama-shard): the pieces that tensor and data parallelism
// add to a program. Collectives themselves are upstream shard dialect ops
// (shard.all_reduce, shard.all_gather, shard.reduce_scatter); these are the
// local computations around them that have no upstream equivalent.
//===----------------------------------------------------------------------===//

def Llama_GradAllReduceOp : Llama_DiffOp<"grad_all_reduce",
                                         [SameOperandsAndResultType]> {
  let summary = "Identity forward; all-reduces the gradient over grid axes";
  let description = [{
    Megatron's `f` operator. A replicated value consumed by tensor-parallel
    ops (the input of column-parallel GEMMs) receives a partial cotangent on
    each rank; its VJP sums them with `shard.all_reduce`. Forward it is a
    view: no copy, no communication.

    ```mlir
    %x1 = llama.grad_all_reduce %x on @grid grid_axes = [1] : tensor<2x8x16xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$input, FlatSymbolRefAttr:$grid,
                       DenseI16ArrayAttr:$grid_axes);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$input `on` $grid `grid_axes` `=` $grid_axes attr-dict `:` type($result)";
}

def Llama_LogitsMaxOp : Llama_Op<"logits_max", [Pure]> {
  let summary = "Row maximum of logits over the (local) vocabulary";
  let description = [{
    `result[...] = max over v of logits[..., v]`; with the vocabulary
    sharded, a `shard.all_reduce` with `max` makes it the global maximum.
    Not differentiable: the loss does not depend on the shift it provides.

    ```mlir
    %m = llama.logits_max %logits : (tensor<2x8x32xf32>) -> tensor<2x8xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$logits);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$logits attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llama_CEPartialSumsOp : Llama_DiffOp<"ce_partial_sums"> {
  let summary = "Per-row sum of exp(logit - max) and the target's logit, over the local vocabulary";
  let description = [{
    `result[..., 0] = sum over local v of exp(logits[..., v] - max[...])`,
    `result[..., 1] = logits[..., target - r * vocab_local]` when the target
    falls into this rank's vocabulary slice (and is not `ignore_index`),
    else 0. Summed over the vocabulary-parallel ranks these are the
    softmax denominator and the target logit of the whole vocabulary
    (Megatron's vocab-parallel cross-entropy) without gathering logits.
    `max` is a constant shift here (no cotangent flows to it).

    ```mlir
    %s = llama.ce_partial_sums %logits, %max, %targets {vocab_shard = array<i64: 1, 64>} : (tensor<2x8x32xf32>, tensor<2x8xf32>, tensor<2x8xi32>) -> tensor<2x8x2xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$logits, Llama_FloatTensor:$max,
                       Llama_IndexTensor:$targets,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index,
                       OptionalAttr<Llama_VocabShardAttr>:$vocab_shard);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$logits `,` $max `,` $targets attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llama_CEPartialSumsGradOp : Llama_Op<"ce_partial_sums_grad", [Pure]> {
  let summary = "Gradient of ce_partial_sums with respect to the logits";
  let description = [{
    `dlogits[..., v] = grad[..., 0] * exp(logits[..., v] - max[...]) +
    grad[..., 1] * (v is the target's local column)`.

    ```mlir
    %dl = llama.ce_partial_sums_grad %ds, %logits, %max, %targets : (tensor<2x8x2xf32>, tensor<2x8x32xf32>, tensor<2x8xf32>, tensor<2x8xi32>) -> tensor<2x8x32xf32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$grad, Llama_FloatTensor:$logits,
                       Llama_FloatTensor:$max, Llama_IndexTensor:$targets,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index,
                       OptionalAttr<Llama_VocabShardAttr>:$vocab_shard);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$grad `,` $logits `,` $max `,` $targets attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llama_CountValidOp : Llama_Op<"count_valid", [Pure]> {
  let summary = "Number of targets that are scored (differ from ignore_index)";
  let description = [{
    A float scalar, so that `shard.all_reduce` over the data-parallel axis
    gives the global count the mean cross-entropy divides by: every rank's
    loss is then its share of the single-process loss, and gradients sum.

    ```mlir
    %n = llama.count_valid %targets {ignore_index = -100 : i64} : (tensor<2x8xi32>) -> tensor<f32>
    ```
  }];
  let arguments = (ins Llama_IndexTensor:$targets,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs Llama_ScalarTensor:$result);
  let assemblyFormat = "$targets attr-dict `:` functional-type(operands, results)";
}

def Llama_CECombineOp : Llama_DiffOp<"ce_combine"> {
  let summary = "Cross-entropy from the global softmax statistics";
  let description = [{
    `result = sum over scored rows of (log sums[..., 0] + max - sums[..., 1])
    / count`. With `max`, `sums` all-reduced over the vocabulary axis and
    `count` over the data axis, this rank's share of the global mean loss.

    ```mlir
    %l = llama.ce_combine %max, %sums, %targets, %count : (tensor<2x8xf32>, tensor<2x8x2xf32>, tensor<2x8xi32>, tensor<f32>) -> tensor<f32>
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$max, Llama_FloatTensor:$sums,
                       Llama_IndexTensor:$targets, Llama_ScalarTensor:$count,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs Llama_ScalarTensor:$result);
  let assemblyFormat = "$max `,` $sums `,` $targets `,` $count attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llama_CECombineGradOp : Llama_Op<"ce_combine_grad", [Pure]> {
  let summary = "Gradient of ce_combine with respect to the sums";
  let description = [{
    `dsums[..., 0] = grad / (count * sums[..., 0])`, `dsums[..., 1] =
    -grad / count` on scored rows, 0 elsewhere.

    ```mlir
    %ds = llama.ce_combine_grad %dl, %sums, %targets, %count : (tensor<f32>, tensor<2x8x2xf32>, tensor<2x8xi32>, tensor<f32>) -> tensor<2x8x2xf32>
    ```
  }];
  let arguments = (ins Llama_ScalarTensor:$grad, Llama_FloatTensor:$sums,
                       Llama_IndexTensor:$targets, Llama_ScalarTensor:$count,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$grad `,` $sums `,` $targets `,` $count attr-dict `:` functional-type(operands, results)";
}

//===----------------------------------------------------------------------===//
// Fused kernels (llama-fuse). Built after autodiff from the ops above; not
// differentiable. Each one is a single pass over memory in the CPU runtime
// and a single generated kernel on the GPU.
//===----------------------------------------------------------------------===//

def Llama_AddRMSNormOp : Llama_Op<"add_rms_norm", [Pure]> {
  let summary = "Residual add followed by RMSNorm, keeping the row rstd";
  let description = [{
    `sum = lhs + rhs`, `result = rms_norm(sum, weight)`, and
    `rstd[...] = 1 / sqrt(mean(sum^2, -1) + eps)` for the backward. `rstd`
    has the shape of `sum` without its last dimension.

    ```mlir
    %s, %n, %r = llama.add_rms_norm %x, %a, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>) -> (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8xf32>)
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$lhs, Llama_FloatTensor:$rhs,
                       Llama_FloatTensor:$weight, F64Attr:$eps);
  let results = (outs Llama_FloatTensor:$sum, Llama_FloatTensor:$result,
                      Llama_FloatTensor:$rstd);
  let assemblyFormat = "$lhs `,` $rhs `,` $weight attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llama_RMSNormRstdOp : Llama_Op<"rms_norm_rstd", [Pure]> {
  let summary = "RMSNorm that also returns the row rstd for its backward";
  let description = [{
    ```mlir
    %n, %r = llama.rms_norm_rstd %x, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> (tensor<2x8x16xf32>, tensor<2x8xf32>)
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$x, Llama_FloatTensor:$weight, F64Attr:$eps);
  let results = (outs Llama_FloatTensor:$result, Llama_FloatTensor:$rstd);
  let assemblyFormat = "$x `,` $weight attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llama_RMSNormGradRstdOp : Llama_Op<"rms_norm_grad_rstd",
                                       [Pure]> {
  let summary = "RMSNorm backward from the saved rstd, optionally accumulating into a gradient";
  let description = [{
    `x_grad = vjp_x + accumulate` (when `accumulate` is given: the residual
    stream's gradient the unfused program added afterwards) and
    `weight_grad = vjp_weight`, with `rstd` from the forward instead of a
    second reduction over `x`.

    ```mlir
    %dx, %dw = llama.rms_norm_grad_rstd %dy, %x, %w, %r accumulate %dh {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>, tensor<2x8xf32>, tensor<2x8x16xf32>) -> (tensor<2x8x16xf32>, tensor<16xf32>)
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$grad, Llama_FloatTensor:$x,
                       Llama_FloatTensor:$weight, Llama_FloatTensor:$rstd,
                       Optional<Llama_FloatTensor>:$accumulate, F64Attr:$eps);
  let results = (outs Llama_FloatTensor:$x_grad, Llama_FloatTensor:$weight_grad);
  let assemblyFormat = "$grad `,` $x `,` $weight `,` $rstd (`accumulate` $accumulate^)? attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llama_CrossEntropyFusedOp : Llama_Op<"cross_entropy_fused", [Pure]> {
  let summary = "Mean cross-entropy and its gradient in one pass over the logits";
  let description = [{
    `loss` as `llama.cross_entropy`; `logits_grad` as
    `llama.cross_entropy_grad` with a constant upstream gradient
    `grad_scale` (the seed of a train step). Each logit is read once for
    both: the probabilities are never stored, and the gradient may be
    written over the logits.

    ```mlir
    %loss, %dl = llama.cross_entropy_fused %logits, %targets {grad_scale = 1.0 : f64, ignore_index = -100 : i64} : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> (tensor<f32>, tensor<2x8x64xf32>)
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$logits, Llama_IndexTensor:$targets,
                       F64Attr:$grad_scale,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs Llama_ScalarTensor:$loss, Llama_FloatTensor:$logits_grad);
  let assemblyFormat = "$logits `,` $targets attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llama_RopeQKOp : Llama_Op<"rope_qk", [Pure]> {
  let summary = "Rotary embedding of the query and key of one attention (or its inverse)";
  let description = [{
    `llama.rope` on both operands (heads may differ: GQA), one kernel and
    one set of angles. With `inverse` it is the pair of `llama.rope_grad`.

    ```mlir
    %qr, %kr = llama.rope_qk %q, %k {theta = 1.0e+04 : f64} : (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>) -> (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>)
    ```
  }];
  let arguments = (ins Llama_FloatTensor:$query, Llama_FloatTensor:$key,
                       F64Attr:$theta, UnitAttr:$inverse, Llama_RopeScalingAttrs:$inv_freq,
                       OptionalAttr<F64Attr>:$attention_factor);
  let results = (outs Llama_FloatTensor:$query_result, Llama_FloatTensor:$key_result);
  let assemblyFormat = "$query `,` $key attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llama_SumOp : Llama_Op<"sum", [Pure, SameOperandsAndResultType]> {
  let summary = "Elementwise sum of three or more tensors (a fused chain of adds)";
  let description = [{
    ```mlir
    %s = llama.sum %a, %b, %c : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
    ```
  }];
  let arguments = (ins Variadic<Llama_FloatTensor>:$inputs);
  let results = (outs Llama_FloatTensor:$result);
  let assemblyFormat = "$inputs attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

#endif // LLAMA_OPS_TD
