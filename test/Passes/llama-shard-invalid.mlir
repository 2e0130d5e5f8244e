// Errors of llama-shard, and the identity at dp = tp = 1.
// RUN: llama-opt %s -split-input-file -llama-shard="tp=2" -verify-diagnostics
// RUN: not llama-opt %s -split-input-file -llama-shard="sp=true" 2>&1 | FileCheck %s --check-prefix=SPTP
// RUN: llama-opt %s -split-input-file -llama-shard="dp=1 tp=1" | FileCheck %s --check-prefix=NOOP

// SPTP: error: llama-shard: sequence parallelism needs tp >= 2
// NOOP-NOT: shard.grid
// NOOP-LABEL: func.func @forward

// A 2-D parameter whose name has no Megatron rule cannot be split.
// expected-error @+1 {{llama-shard: parameter 'my.mixer.weight' has no tensor-parallel rule (known: q/k/v/o_proj, gate/up/down_proj, embed_tokens, lm_head, 1-D gains)}}
func.func @forward(%emb: tensor<64x16xf32> {llama.param_name = "model.embed_tokens.weight"},
                   %w: tensor<16x16xf32> {llama.param_name = "my.mixer.weight"},
                   %tok: tensor<2x8xi32> {llama.input = "tokens"},
                   %tgt: tensor<2x8xi32> {llama.input = "targets"}) -> tensor<f32> {
  %h = llama.embedding %emb, %tok : (tensor<64x16xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  %y = llama.matmul %h, %w {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<16x16xf32>) -> tensor<2x8x16xf32>
  %l = llama.matmul %y, %emb {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<64x16xf32>) -> tensor<2x8x64xf32>
  %loss = llama.cross_entropy %l, %tgt : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// A GEMM of two activations has no tensor-parallel rule.
func.func @forward(%emb: tensor<64x16xf32> {llama.param_name = "model.embed_tokens.weight"},
                   %wq: tensor<16x16xf32> {llama.param_name = "model.layers.0.self_attn.q_proj.weight"},
                   %tok: tensor<2x8xi32> {llama.input = "tokens"},
                   %tgt: tensor<2x8xi32> {llama.input = "targets"}) -> tensor<f32> {
  %h = llama.embedding %emb, %tok : (tensor<64x16xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  %q = llama.matmul %h, %wq {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<16x16xf32>) -> tensor<2x8x16xf32>
  // expected-error @+1 {{'llama.matmul' op llama-shard: no tensor-parallel rule for a GEMM of two partitioned activations}}
  %s = llama.matmul %q, %q {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x8xf32>
  %o = llama.matmul %s, %q : (tensor<2x8x8xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %l = llama.matmul %o, %emb {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<64x16xf32>) -> tensor<2x8x64xf32>
  %loss = llama.cross_entropy %l, %tgt : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// Generation functions stay on one process: a module that has them cannot
// be partitioned.
func.func @forward(%emb: tensor<64x16xf32> {llama.param_name = "model.embed_tokens.weight"},
                   %tok: tensor<2x8xi32> {llama.input = "tokens"},
                   %tgt: tensor<2x8xi32> {llama.input = "targets"}) -> tensor<f32> {
  %h = llama.embedding %emb, %tok : (tensor<64x16xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  %l = llama.matmul %h, %emb {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<64x16xf32>) -> tensor<2x8x64xf32>
  %loss = llama.cross_entropy %l, %tgt : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
// expected-error @+1 {{llama-shard: @prefill cannot be partitioned: generation runs on one process}}
func.func @prefill(%emb: tensor<64x16xf32> {llama.param_name = "model.embed_tokens.weight"},
                   %tok: tensor<1x4xi32>) -> tensor<1x4x16xf32> {
  %h = llama.embedding %emb, %tok : (tensor<64x16xf32>, tensor<1x4xi32>) -> tensor<1x4x16xf32>
  return %h : tensor<1x4x16xf32>
}
