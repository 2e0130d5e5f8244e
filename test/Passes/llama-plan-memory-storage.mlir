// RUN: llama-opt %s -llama-plan-memory="storage-bytes=2" | FileCheck %s
// RUN: llama-opt %s -llama-plan-memory | FileCheck %s --check-prefix=F32
// RUN: not llama-opt %s -llama-plan-memory="storage-bytes=-1" 2>&1 | FileCheck %s --check-prefix=BAD

// bf16 storage (the CUDA target): float buffers at 2 bytes an element,
// except values llama-assign-precision recorded as fp32 (the rstd, the
// GEMM output %g), which take 4. [2x8x16] = 256 elements: 512 bytes in
// bf16, 1024 in fp32. The peak is %y, %g and %z live together: 512 + 1024
// + 512 = 2048 bytes (1536 if %g were bf16; 3072 planned at the tensor
// types' fp32 size).
// CHECK-LABEL: func.func @step
// CHECK-SAME: llama.arena_bytes = 2048 : i64
// F32-LABEL: func.func @step
// F32-SAME: llama.arena_bytes = 3072 : i64
func.func @step(%x: tensor<2x8x16xf32>, %w: tensor<16xf32>, %m: tensor<16x16xf32>) -> tensor<f32> {
  %y, %r = llama.rms_norm_rstd %x, %w {eps = 1.0e-05 : f64, llama.fp32 = array<i64: 1>} : (tensor<2x8x16xf32>, tensor<16xf32>) -> (tensor<2x8x16xf32>, tensor<2x8xf32>)
  %y2 = llama.reshape %y : (tensor<2x8x16xf32>) -> tensor<16x16xf32>
  %g = llama.matmul %y2, %m {llama.fp32 = array<i64: 0>} : (tensor<16x16xf32>, tensor<16x16xf32>) -> tensor<16x16xf32>
  %g3 = llama.reshape %g : (tensor<16x16xf32>) -> tensor<2x8x16xf32>
  %z = llama.rms_norm %g3, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  %s = llama.add %z, %g3 : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %t = llama.add %s, %y : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %u = llama.rms_norm %t, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  %l = llama.fill {value = 0.0 : f64} : tensor<f32>
  return %l : tensor<f32>
}

// BAD: llama-plan-memory: storage-bytes must be >= 0
