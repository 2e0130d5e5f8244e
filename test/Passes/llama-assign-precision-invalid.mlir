// RUN: llama-opt %s -split-input-file -llama-assign-precision -verify-diagnostics

// A parameter gradient that no fp32-capable op produces: an error at that
// op, not a silent rounding to bf16.
func.func @train_step(%w: tensor<4x4xf32>, %x: tensor<4x4xf32>) -> (tensor<f32>, tensor<4x4xf32>) {
  // expected-error @below {{'llama.swiglu' op produces a parameter gradient, which bf16 programs keep in fp32, and has no fp32 output yet}}
  %g = llama.swiglu %x, %x : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  %l = llama.fill {value = 0.0 : f64} : tensor<f32>
  return %l, %g : tensor<f32>, tensor<4x4xf32>
}

// -----

// The norm's input gradient is an activation gradient.
func.func @train_step(%x: tensor<2x4xf32>, %w: tensor<4xf32>, %dy: tensor<2x4xf32>) -> (tensor<f32>, tensor<2x4xf32>) {
  // expected-error @below {{'llama.rms_norm_grad' op its input gradient cannot be a parameter gradient}}
  %dx, %dw = llama.rms_norm_grad %dy, %x, %w {eps = 1.0e-05 : f64} : (tensor<2x4xf32>, tensor<2x4xf32>, tensor<4xf32>) -> (tensor<2x4xf32>, tensor<4xf32>)
  %l = llama.fill {value = 0.0 : f64} : tensor<f32>
  return %l, %dx : tensor<f32>, tensor<2x4xf32>
}

// -----

// Generation's logits come from the lm_head GEMM, which writes them in fp32;
// anything else is an error, not a bf16 buffer read back as fp32.
func.func @prefill(%x: tensor<1x2x4xf32>, %w: tensor<4xf32>) -> tensor<1x2x4xf32> {
  %n = llama.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<1x2x4xf32>, tensor<4xf32>) -> tensor<1x2x4xf32>
  // expected-error @below {{'func.return' op returns logits that no GEMM produces: the CUDA target reads generation's logits back in fp32 from the lm_head GEMM}}
  return %n : tensor<1x2x4xf32>
}
