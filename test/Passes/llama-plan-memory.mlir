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

// Fused ops whose kernels allow it write a result over an operand that dies
// there: the logits gradient over the logits, the residual sum over its
// input, the accumulated gradient over the accumulator.
// CHECK-LABEL: func.func @fused_in_place
func.func @fused_in_place(%x: tensor<2x8x16xf32>, %w: tensor<16xf32>, %e: tensor<64x16xf32>,
                          %t: tensor<2x8xi32>) -> (tensor<f32>, tensor<2x8x16xf32>, tensor<16xf32>) {
  // CHECK: %[[A:.*]] = llama.rms_norm {{.*}}llama.offset = array<i64: [[OA:[0-9]+]]>
  %a = llama.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  // CHECK: llama.add_rms_norm %[[A]], %arg0, %arg1 {{.*}}llama.offset = array<i64: [[OA]], [[ON:[0-9]+]], [[OR:[0-9]+]]>
  %s, %n, %r = llama.add_rms_norm %a, %x, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>) -> (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8xf32>)
  // CHECK: %[[L:.*]] = llama.matmul {{.*}}llama.offset = array<i64: [[OL:[0-9]+]]>
  %logits = llama.matmul %n, %e {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<64x16xf32>) -> tensor<2x8x64xf32>
  // CHECK: llama.cross_entropy_fused %[[L]], %arg3 {{.*}}llama.offset = array<i64: [[OLOSS:[0-9]+]], [[OL]]>
  %loss, %dl = llama.cross_entropy_fused %logits, %t {grad_scale = 1.0 : f64} : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> (tensor<f32>, tensor<2x8x64xf32>)
  // CHECK: %[[DN:.*]] = llama.matmul {{.*}}llama.offset = array<i64: [[ODN:[0-9]+]]>
  %dn = llama.matmul %dl, %e : (tensor<2x8x64xf32>, tensor<64x16xf32>) -> tensor<2x8x16xf32>
  // CHECK: %[[ACC:.*]] = llama.rms_norm {{.*}}llama.offset = array<i64: [[OACC:[0-9]+]]>
  %acc = llama.rms_norm %dn, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  // CHECK: llama.rms_norm_grad_rstd %[[DN]], {{.*}} accumulate %[[ACC]] {{.*}}llama.offset = array<i64: [[OACC]], {{-?[0-9]+}}>
  %dx, %dw = llama.rms_norm_grad_rstd %dn, %s, %w, %r accumulate %acc {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>, tensor<2x8xf32>, tensor<2x8x16xf32>) -> (tensor<2x8x16xf32>, tensor<16xf32>)
  %z = llama.add %dx, %dx : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  return %loss, %z, %dw : tensor<f32>, tensor<2x8x16xf32>, tensor<16xf32>
}
