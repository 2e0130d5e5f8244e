// RUN: llama-opt %s -llama-plan-memory | FileCheck %s

// Buffers whose lifetimes do not overlap share offsets; views (reshape) get
// none; a returned, freshly computed tensor goes straight to the output.
// Sizes: [2x8x16]xf32 = 1024 bytes, [16x16]xf32 = 1024 bytes.
// CHECK-LABEL: func.func @step
// CHECK-SAME: attributes {llama.arena_bytes = 2048 : i64, llama.live_lower_bound_bytes = 2048 : i64}
func.func @step(%x: tensor<2x8x16xf32>, %w: tensor<16xf32>) -> (tensor<16x16xf32>, tensor<2x8x16xf32>) {
  // CHECK: %[[A:.*]] = llama.rms_norm {{.*}}llama.offset = array<i64: [[OA:[0-9]+]]>
  %a = llama.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  // %b is live together with %a.
  // CHECK: %[[B:.*]] = llama.rms_norm %[[A]], {{.*}}llama.offset = array<i64: [[OB:[0-9]+]]>
  %b = llama.rms_norm %a, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  // %a's last use is %b, so %c reuses its offset.
  // CHECK: llama.rms_norm %[[B]], {{.*}}llama.offset = array<i64: [[OA]]>
  %c = llama.rms_norm %b, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  // CHECK: llama.reshape {{.*}}llama.offset = array<i64: -1>
  %v = llama.reshape %c : (tensor<2x8x16xf32>) -> tensor<16x16xf32>
  // Returned as computed: written to output #1, not the arena.
  // CHECK: llama.add {{.*}}llama.offset = array<i64: -1>, llama.output = array<i64: 1>
  %d = llama.add %b, %c : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  // The view %v is returned: it keeps %c's buffer alive to the end and is copied out.
  return %v, %d : tensor<16x16xf32>, tensor<2x8x16xf32>
}

// An add whose operand dies there is computed in place over that operand;
// an add whose operands both live on needs a buffer of its own.
// CHECK-LABEL: func.func @in_place
// CHECK-SAME: llama.arena_bytes = 3072 : i64
func.func @in_place(%x: tensor<2x8x16xf32>, %w: tensor<16xf32>) -> tensor<f32> {
  // CHECK: %[[A:.*]] = llama.rms_norm {{.*}}llama.offset = array<i64: [[OA:[0-9]+]]>
  %a = llama.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  // CHECK: %[[B:.*]] = llama.rms_norm {{.*}}llama.offset = array<i64: [[OB:[0-9]+]]>
  %b = llama.rms_norm %a, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  // %a dies here: the sum overwrites it.
  // CHECK: %[[S:.*]] = llama.add %[[A]], %[[B]] {llama.offset = array<i64: [[OA]]>}
  %s = llama.add %a, %b : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  // Both %s and %b are read again below: a fresh buffer.
  // CHECK: llama.add %[[S]], %[[B]] {llama.offset = array<i64: [[OC:[0-9]+]]>}
  %t = llama.add %s, %b : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %u = llama.add %t, %s : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %v = llama.add %u, %b : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %l = llama.fill {value = 0.0 : f64} : tensor<f32>
  return %l : tensor<f32>
}
