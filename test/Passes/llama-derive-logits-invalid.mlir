// Errors of llama-derive-logits.
// RUN: llama-opt %s -split-input-file -llama-derive-logits -verify-diagnostics


// A reshape that folds the batch into rows cannot be re-batched.
func.func @forward(%e: tensor<64x16xf32> {llama.param_name = "e"}, %tok: tensor<4x8xi32> {llama.input = "tokens"},
                   %tgt: tensor<4x8xi32> {llama.input = "targets"}) -> tensor<f32> {
  %h = llama.embedding %e, %tok : (tensor<64x16xf32>, tensor<4x8xi32>) -> tensor<4x8x16xf32>
// expected-error @+1 {{'llama.reshape' op changes the leading (batch) dimension, so the forward cannot be re-batched for generation}}
  %h2 = llama.reshape %h : (tensor<4x8x16xf32>) -> tensor<32x16xf32>
  %logits = llama.matmul %h2, %e {transpose_rhs = true} : (tensor<32x16xf32>, tensor<64x16xf32>) -> tensor<32x64xf32>
  %l3 = llama.reshape %logits : (tensor<32x64xf32>) -> tensor<4x8x64xf32>
  %loss = llama.cross_entropy %l3, %tgt : (tensor<4x8x64xf32>, tensor<4x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// expected-error @+1 {{@forward has no llama.cross_entropy, so the logits to generate from are unknown}}
func.func @forward(%x: tensor<f32>) -> tensor<f32> {
  return %x : tensor<f32>
}

// -----

// Found by test/fuzz/mlir_fuzz: the targets also feed the logits (here they
// are the tokens too). @logits has no targets argument; this used to read a
// null Value.
func.func @forward(%e: tensor<64x16xf32> {llama.param_name = "e"},
                   %tgt: tensor<4x8xi32> {llama.input = "targets"}) -> tensor<f32> {
// expected-error @+1 {{'llama.embedding' op uses the targets argument, so the logits depend on the targets and @logits cannot be derived}}
  %h = llama.embedding %e, %tgt : (tensor<64x16xf32>, tensor<4x8xi32>) -> tensor<4x8x16xf32>
  %logits = llama.matmul %h, %e {transpose_rhs = true} : (tensor<4x8x16xf32>, tensor<64x16xf32>) -> tensor<4x8x64xf32>
  %loss = llama.cross_entropy %logits, %tgt : (tensor<4x8x64xf32>, tensor<4x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// An integer argument without a batch dimension cannot be re-batched (this
// used to write past the end of its empty shape).
// expected-error @+1 {{argument 1 of @forward is an integer scalar; token arguments need a leading batch dimension}}
func.func @forward(%e: tensor<64x16xf32> {llama.param_name = "e"}, %n: tensor<i32>,
                   %tok: tensor<4x8xi32> {llama.input = "tokens"},
                   %tgt: tensor<4x8xi32> {llama.input = "targets"}) -> tensor<f32> {
  %h = llama.embedding %e, %tok : (tensor<64x16xf32>, tensor<4x8xi32>) -> tensor<4x8x16xf32>
  %logits = llama.matmul %h, %e {transpose_rhs = true} : (tensor<4x8x16xf32>, tensor<64x16xf32>) -> tensor<4x8x64xf32>
  %loss = llama.cross_entropy %logits, %tgt : (tensor<4x8x64xf32>, tensor<4x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
