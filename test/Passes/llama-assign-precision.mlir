// RUN: llama-opt %s -split-input-file -llama-assign-precision | FileCheck %s

// A weight gradient summed from two GEMM terms (a tied table, or a parameter
// read twice): the sum and both terms stay fp32 (bf16 storage keeps
// parameter gradients in fp32); the loss (a scalar fill here) is fp32 by
// kind and the activation gradient %dx, not returned, stays in the storage
// type.
// CHECK-LABEL: func.func @train_step
func.func @train_step(%w: tensor<4x4xf32>, %x: tensor<2x4xf32>) -> (tensor<f32>, tensor<4x4xf32>) {
  // CHECK: llama.matmul {{.*}}llama.fp32 = array<i64: 0>
  %g1 = llama.matmul %x, %x {transpose_lhs = true} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<4x4xf32>
  // CHECK: llama.matmul {{.*}}llama.fp32 = array<i64: 0>
  %g2 = llama.matmul %x, %x {transpose_lhs = true} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<4x4xf32>
  // CHECK: llama.add {{.*}}llama.fp32 = array<i64: 0>
  %g = llama.add %g1, %g2 : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  // CHECK: llama.matmul
  // CHECK-NOT: llama.fp32
  // CHECK-SAME: -> tensor<2x4xf32>
  %dx = llama.matmul %x, %w : (tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32>
  // CHECK: llama.fill {llama.fp32 = array<i64: 0>{{.*}}} : tensor<f32>
  %l = llama.fill {value = 0.0 : f64} : tensor<f32>
  return %l, %g : tensor<f32>, tensor<4x4xf32>
}

// -----

// Statistics are fp32 by their op's kind, in every function: the norm's
// rstd (not its output), attention's logsumexp (not its output), the
// loss; a fill of a whole tensor is not a statistic.
// CHECK-LABEL: func.func @forward
func.func @forward(%x: tensor<1x4x2x4xf32>, %w: tensor<4xf32>, %t: tensor<1x4xi32>) -> tensor<f32> {
  // CHECK: llama.rms_norm_rstd {{.*}}llama.fp32 = array<i64: 1>
  %y, %r = llama.rms_norm_rstd %x, %w {eps = 1.0e-05 : f64} : (tensor<1x4x2x4xf32>, tensor<4xf32>) -> (tensor<1x4x2x4xf32>, tensor<1x4x2xf32>)
  // CHECK: llama.attention {{.*}}llama.fp32 = array<i64: 1>
  %o, %lse = llama.attention %y, %y, %y {scale = 0.5 : f64} : (tensor<1x4x2x4xf32>, tensor<1x4x2x4xf32>, tensor<1x4x2x4xf32>) -> (tensor<1x4x2x4xf32>, tensor<1x2x4xf32>)
  %o2 = llama.reshape %o : (tensor<1x4x2x4xf32>) -> tensor<1x4x8xf32>
  // CHECK: llama.cross_entropy {{.*}}llama.fp32 = array<i64: 0>
  %l = llama.cross_entropy %o2, %t {ignore_index = -100 : i64} : (tensor<1x4x8xf32>, tensor<1x4xi32>) -> tensor<f32>
  // CHECK: llama.fill
  // CHECK-NOT: llama.fp32
  // CHECK-SAME: tensor<2x2xf32>
  %z = llama.fill {value = 0.0 : f64} : tensor<2x2xf32>
  return %l : tensor<f32>
}

// -----

// Beyond statistics, functions other than @train_step, @prefill and
// @decode are left alone: no GEMM output here is a gradient or logits.
// CHECK-LABEL: func.func @forward
// CHECK-NOT: llama.fp32
func.func @forward(%x: tensor<2x4xf32>) -> tensor<4x4xf32> {
  %g = llama.matmul %x, %x {transpose_lhs = true} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<4x4xf32>
  return %g : tensor<4x4xf32>
}

// -----

// Generation's logits are sampled in fp32: the lm_head GEMM of @decode (and
// @prefill) writes them in fp32, the view of it keeps that buffer; the
// norm before it stays in the storage type.
// CHECK-LABEL: func.func @decode
func.func @decode(%x: tensor<1x1x4xf32>, %w: tensor<4xf32>, %head: tensor<8x4xf32>) -> tensor<1x8xf32> {
  // CHECK: llama.rms_norm
  // CHECK-NOT: llama.fp32
  // CHECK-SAME: -> tensor<1x1x4xf32>
  %n = llama.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<1x1x4xf32>, tensor<4xf32>) -> tensor<1x1x4xf32>
  // CHECK: llama.matmul {{.*}}llama.fp32 = array<i64: 0>
  %l = llama.matmul %n, %head {transpose_rhs = true} : (tensor<1x1x4xf32>, tensor<8x4xf32>) -> tensor<1x1x8xf32>
  // CHECK: llama.reshape {{.*}}llama.fp32 = array<i64: 0>
  %r = llama.reshape %l : (tensor<1x1x8xf32>) -> tensor<1x8xf32>
  return %r : tensor<1x8xf32>
}
