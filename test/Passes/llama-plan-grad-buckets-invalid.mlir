// RUN: llama-opt %s -llama-plan-grad-buckets -verify-diagnostics

// The step must return the loss and one gradient per parameter.
module attributes {llama.grid = array<i64: 2, 1>} {
  // expected-error @below {{llama-plan-grad-buckets: expected the loss and one gradient per parameter (2), the function returns 2}}
  func.func @train_step(%a: tensor<4x4xf32> {llama.param_name = "a"}, %b: tensor<4x4xf32> {llama.param_name = "b"}) -> (tensor<f32>, tensor<4x4xf32>) {
    %l = llama.fill {value = 0.0 : f64} : tensor<f32>
    return %l, %a : tensor<f32>, tensor<4x4xf32>
  }
}
