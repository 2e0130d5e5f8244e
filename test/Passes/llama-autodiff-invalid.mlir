// Errors of llama-autodiff.
// RUN: llama-opt %s -split-input-file -llama-autodiff -verify-diagnostics

// expected-error @+1 {{@forward must return exactly one scalar float tensor (the loss)}}
func.func @forward(%x: tensor<4x16xf32>) -> tensor<4x16xf32> {
  return %x : tensor<4x16xf32>
}

// -----

// A differentiated value produced by an op without a VJP.
func.func @forward(%e: tensor<64x16xf32>, %tgt: tensor<2x8xi32>) -> tensor<f32> {
// expected-error @+1 {{'llama.fill' op is on the path from the parameters to the loss but does not implement VJPOpInterface}}
  %c = llama.fill {value = 1.0 : f64} : tensor<2x8x64xf32>
  %loss = llama.cross_entropy %c, %tgt : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// A module-level error: its location is the start of this split (the
// separator line above).
// expected-error @-4 {{llama-autodiff: the module has no func.func @forward}}
func.func @other() {
  return
}

// -----

// The logsumexp output exists for the backward; a loss built from it has no
// gradient rule.
func.func @forward(%q: tensor<1x4x2x4xf32> {llama.param_name = "q"}, %tgt: tensor<1x2xi32>) -> tensor<f32> {
// expected-error @+1 {{'llama.attention' op the logsumexp result is not differentiable; it may only feed the backward}}
  %o, %lse = llama.attention %q, %q, %q {scale = 0.5 : f64} : (tensor<1x4x2x4xf32>, tensor<1x4x2x4xf32>, tensor<1x4x2x4xf32>) -> (tensor<1x4x2x4xf32>, tensor<1x2x4xf32>)
  %loss = llama.cross_entropy %lse, %tgt : (tensor<1x2x4xf32>, tensor<1x2xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
