// RUN: llama-opt %s -split-input-file -llama-plan-grad-buckets=bucket-elements=100 | FileCheck %s

// Two parameters of 128 elements on dp 2, buckets of at least 100 elements:
// the bounds are cut at parameter starts that are multiples of dp x 64 =
// 128, from the buffer's end (0, 128, 256). The backward writes b's gradient
// first (in place, llama.output 2): bucket 1 is ready after that op, bucket
// 0 after the op writing a's.
module attributes {llama.grid = array<i64: 2, 1>} {
  // CHECK-LABEL: func.func @train_step
  // CHECK-SAME: llama.grad_buckets = array<i64: 0, 128, 256>
  func.func @train_step(%a: tensor<8x16xf32> {llama.param_name = "a"}, %b: tensor<8x16xf32> {llama.param_name = "b"},
                        %x: tensor<4x8xf32>, %y: tensor<4x16xf32>) -> (tensor<f32>, tensor<8x16xf32>, tensor<8x16xf32>) {
    // CHECK: llama.matmul {{.*}}llama.grads_ready = array<i64: 1>, llama.output = array<i64: 2>
    %gb = llama.matmul %x, %y {llama.output = array<i64: 2>, transpose_lhs = true} : (tensor<4x8xf32>, tensor<4x16xf32>) -> tensor<8x16xf32>
    // CHECK: llama.matmul {{.*}}llama.grads_ready = array<i64: 0>, llama.output = array<i64: 1>
    %ga = llama.matmul %x, %y {llama.output = array<i64: 1>, transpose_lhs = true} : (tensor<4x8xf32>, tensor<4x16xf32>) -> tensor<8x16xf32>
    // CHECK: llama.fill
    // CHECK-NOT: grads_ready
    %l = llama.fill {value = 0.0 : f64} : tensor<f32>
    return %l, %ga, %gb : tensor<f32>, tensor<8x16xf32>, tensor<8x16xf32>
  }
}

// -----

// A gradient the memory plan does not write in place is copied into the
// gradient buffer at the return: its bucket is ready there. Buckets ready
// at the same op are listed together. 200 elements in one bucket:
// everything is bucket 0, padded to a multiple of dp (3: 201).
module attributes {llama.grid = array<i64: 3, 1>} {
  // CHECK-LABEL: func.func @train_step
  // CHECK-SAME: llama.grad_buckets = array<i64: 0, 201>
  func.func @train_step(%a: tensor<10x10xf32> {llama.param_name = "a"}, %b: tensor<10x10xf32> {llama.param_name = "b"},
                        %x: tensor<2x10xf32>) -> (tensor<f32>, tensor<10x10xf32>, tensor<10x10xf32>) {
    // CHECK: llama.matmul
    // CHECK-NOT: grads_ready
    %ga = llama.matmul %x, %x {transpose_lhs = true} : (tensor<2x10xf32>, tensor<2x10xf32>) -> tensor<10x10xf32>
    %l = llama.fill {value = 0.0 : f64} : tensor<f32>
    // CHECK: return {llama.grads_ready = array<i64: 0>}
    return %l, %ga, %ga : tensor<f32>, tensor<10x10xf32>, tensor<10x10xf32>
  }
}

// -----

// Without data parallelism there are no buckets.
module attributes {llama.grid = array<i64: 1, 2>} {
  // CHECK-LABEL: func.func @train_step
  // CHECK-NOT: llama.grad_buckets
  // CHECK-NOT: grads_ready
  func.func @train_step(%a: tensor<4x4xf32> {llama.param_name = "a"}, %x: tensor<4x4xf32>) -> (tensor<f32>, tensor<4x4xf32>) {
    %ga = llama.matmul %x, %x {llama.output = array<i64: 1>} : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    %l = llama.fill {value = 0.0 : f64} : tensor<f32>
    return %l, %ga : tensor<f32>, tensor<4x4xf32>
  }
}
