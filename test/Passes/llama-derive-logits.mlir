// RUN: llama-opt %s -llama-derive-logits=batch=1 | FileCheck %s

// The logits function drops the targets and the loss, and re-derives every
// type for a batch of 1; reshapes keep their non-batch dimensions.
// CHECK-LABEL: func.func @logits
// CHECK-SAME: (%[[E:[^:]*]]: tensor<64x16xf32> {llama.param_name = "e"}, %[[TOK:[^:]*]]: tensor<1x8xi32> {llama.input = "tokens"}) -> tensor<1x8x64xf32>
// CHECK: %[[H:.*]] = llama.embedding %[[E]], %[[TOK]] : (tensor<64x16xf32>, tensor<1x8xi32>) -> tensor<1x8x16xf32>
// CHECK: %[[H4:.*]] = llama.reshape %[[H]] : (tensor<1x8x16xf32>) -> tensor<1x8x4x4xf32>
// CHECK: %[[R:.*]] = llama.rope %[[H4]] {theta = 1.000000e+04 : f64} : (tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32>
// CHECK: %[[O:.*]], %{{.*}} = llama.attention %[[R]], %[[R]], %[[R]] {scale = 5.000000e-01 : f64} : (tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>) -> (tensor<1x8x4x4xf32>, tensor<1x4x8xf32>)
// CHECK: %[[O3:.*]] = llama.reshape %[[O]] : (tensor<1x8x4x4xf32>) -> tensor<1x8x16xf32>
// CHECK: %[[L:.*]] = llama.matmul %[[O3]], %[[E]] {transpose_rhs = true} : (tensor<1x8x16xf32>, tensor<64x16xf32>) -> tensor<1x8x64xf32>
// CHECK-NOT: llama.cross_entropy
// CHECK: return %[[L]] : tensor<1x8x64xf32>
func.func @forward(%e: tensor<64x16xf32> {llama.param_name = "e"}, %tok: tensor<4x8xi32> {llama.input = "tokens"},
                   %tgt: tensor<4x8xi32> {llama.input = "targets"}) -> tensor<f32> {
  %h = llama.embedding %e, %tok : (tensor<64x16xf32>, tensor<4x8xi32>) -> tensor<4x8x16xf32>
  %h4 = llama.reshape %h : (tensor<4x8x16xf32>) -> tensor<4x8x4x4xf32>
  %r = llama.rope %h4 {theta = 1.0e+04 : f64} : (tensor<4x8x4x4xf32>) -> tensor<4x8x4x4xf32>
  %o, %lse = llama.attention %r, %r, %r {scale = 0.5 : f64} : (tensor<4x8x4x4xf32>, tensor<4x8x4x4xf32>, tensor<4x8x4x4xf32>) -> (tensor<4x8x4x4xf32>, tensor<4x4x8xf32>)
  %o3 = llama.reshape %o : (tensor<4x8x4x4xf32>) -> tensor<4x8x16xf32>
  %logits = llama.matmul %o3, %e {transpose_rhs = true} : (tensor<4x8x16xf32>, tensor<64x16xf32>) -> tensor<4x8x64xf32>
  %loss = llama.cross_entropy %logits, %tgt : (tensor<4x8x64xf32>, tensor<4x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
