// Errors of llama-derive-logits.
// RUN: not llama-opt %s -split-input-file -llama-derive-logits 2>&1 | FileCheck %s


// A reshape that folds the batch into rows cannot be re-batched.
// CHECK: error: 'llama.reshape' op changes the leading (batch) dimension, so the forward cannot be re-batched for generation
func.func @forward(%e: tensor<64x16xf32> {llama.param_name = "e"}, %tok: tensor<4x8xi32> {llama.input = "tokens"},
                   %tgt: tensor<4x8xi32> {llama.input = "targets"}) -> tensor<f32> {
  %h = llama.embedding %e, %tok : (tensor<64x16xf32>, tensor<4x8xi32>) -> tensor<4x8x16xf32>
  %h2 = llama.reshape %h : (tensor<4x8x16xf32>) -> tensor<32x16xf32>
  %logits = llama.matmul %h2, %e {transpose_rhs = true} : (tensor<32x16xf32>, tensor<64x16xf32>) -> tensor<32x64xf32>
  %l3 = llama.reshape %logits : (tensor<32x64xf32>) -> tensor<4x8x64xf32>
  %loss = llama.cross_entropy %l3, %tgt : (tensor<4x8x64xf32>, tensor<4x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// CHECK: error: @forward has no llama.cross_entropy, so the logits to generate from are unknown
func.func @forward(%x: tensor<f32>) -> tensor<f32> {
  return %x : tensor<f32>
}
