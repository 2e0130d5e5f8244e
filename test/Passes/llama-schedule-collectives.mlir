// RUN: llama-opt %s -split-input-file -llama-schedule-collectives | FileCheck %s

// The all-reduce of the input gradient %a starts as soon as %a exists; the
// weight-gradient GEMM that program order put before it does not depend on
// it and moves under it; the add that reads the all-reduce stays after both.
shard.grid @grid(shape = 1x2)
// CHECK-LABEL: func.func @backward
func.func @backward(%x: tensor<4x4xf32>, %w: tensor<4x4xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>) {
  // CHECK: %[[A:.*]] = llama.matmul %{{.*}}, %{{.*}} :
  // CHECK-NEXT: %[[R:.*]] = shard.all_reduce %[[A]]
  // CHECK-NEXT: %[[G:.*]] = llama.matmul {{.*}}transpose_lhs = true
  // CHECK-NEXT: llama.add %[[R]], %[[G]]
  %a = llama.matmul %x, %w : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  %g = llama.matmul %x, %x {transpose_lhs = true} : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  %r = shard.all_reduce %a on @grid grid_axes = [1] : tensor<4x4xf32> -> tensor<4x4xf32>
  %n = llama.add %r, %g : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  return %n, %g : tensor<4x4xf32>, tensor<4x4xf32>
}

// -----

// A collective of an argument starts first; the ops it does not need run
// under it; ops that its result feeds stay after it.
shard.grid @grid(shape = 2x1)
// CHECK-LABEL: func.func @args
func.func @args(%x: tensor<4x4xf32>, %y: tensor<4x4xf32>) -> tensor<4x4xf32> {
  // CHECK-NEXT: %[[R:.*]] = shard.all_reduce %arg1
  // CHECK-NEXT: %[[B:.*]] = llama.add %arg0, %arg0
  // CHECK-NEXT: llama.add %[[B]], %[[R]]
  %b = llama.add %x, %x : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  %r = shard.all_reduce %y on @grid grid_axes = [0] : tensor<4x4xf32> -> tensor<4x4xf32>
  %c = llama.add %b, %r : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  return %c : tensor<4x4xf32>
}

// -----

// Without collectives nothing moves.
// CHECK-LABEL: func.func @none
func.func @none(%x: tensor<4x4xf32>) -> tensor<4x4xf32> {
  // CHECK-NEXT: %[[A:.*]] = llama.add %arg0, %arg0
  // CHECK-NEXT: llama.add %[[A]], %arg0
  %a = llama.add %x, %x : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  %b = llama.add %a, %x : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  return %b : tensor<4x4xf32>
}
