// RUN: llama-opt %s -llama-fuse -split-input-file | FileCheck %s

// Residual add + RMSNorm: one op giving the sum, the norm and the row rstd;
// the norm's backward reads that rstd and absorbs the add that accumulates
// the residual stream's gradient.
// CHECK-LABEL: func.func @add_norm
// CHECK: %[[SUM:.*]], %[[N:.*]], %[[R:.*]] = llama.add_rms_norm %arg0, %arg1, %arg2 {eps = 1.000000e-05 : f64}
// CHECK-SAME: -> (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8xf32>)
// CHECK-NOT: llama.add
// CHECK: %[[DX:.*]], %[[DW:.*]] = llama.rms_norm_grad_rstd %arg3, %[[SUM]], %arg2, %[[R]] accumulate %arg4
// CHECK-NOT: llama.add
// CHECK: return %[[N]], %[[DX]], %[[DW]]
func.func @add_norm(%x: tensor<2x8x16xf32>, %a: tensor<2x8x16xf32>, %w: tensor<16xf32>,
                    %dy: tensor<2x8x16xf32>, %dh: tensor<2x8x16xf32>)
    -> (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>) {
  %s = llama.add %x, %a : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %n = llama.rms_norm %s, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  %dx, %dw = llama.rms_norm_grad %dy, %s, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>) -> (tensor<2x8x16xf32>, tensor<16xf32>)
  %t = llama.add %dh, %dx : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  return %n, %t, %dw : tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>
}

// -----

// A norm without a preceding add keeps its rstd only when its backward is
// in the function; the gradient's own add is not absorbed when dx has a
// second use.
// CHECK-LABEL: func.func @norm_rstd
// CHECK: %[[N:.*]], %[[R:.*]] = llama.rms_norm_rstd %arg0, %arg1
// CHECK: %[[DX:.*]], %[[DW:.*]] = llama.rms_norm_grad_rstd %arg2, %arg0, %arg1, %[[R]] {
// CHECK: llama.add %arg3, %[[DX]]
// CHECK: llama.add %[[DX]], %[[DX]]
func.func @norm_rstd(%x: tensor<4x16xf32>, %w: tensor<16xf32>, %dy: tensor<4x16xf32>, %dh: tensor<4x16xf32>)
    -> (tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>, tensor<16xf32>) {
  %n = llama.rms_norm %x, %w {eps = 1.0e-06 : f64} : (tensor<4x16xf32>, tensor<16xf32>) -> tensor<4x16xf32>
  %dx, %dw = llama.rms_norm_grad %dy, %x, %w {eps = 1.0e-06 : f64} : (tensor<4x16xf32>, tensor<4x16xf32>, tensor<16xf32>) -> (tensor<4x16xf32>, tensor<16xf32>)
  %t = llama.add %dh, %dx : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  %u = llama.add %dx, %dx : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  return %n, %t, %u, %dw : tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>, tensor<16xf32>
}

// -----

// Must not fuse: a norm with no backward stays plain; a backward whose eps
// differs from the forward's finds no rstd and stays unfused.
// CHECK-LABEL: func.func @norm_no_fuse
// CHECK: llama.rms_norm %arg0, %arg1 {eps = 1.000000e-05 : f64}
// CHECK: llama.rms_norm_grad %arg2, %arg0, %arg1 {eps = 9.9999999999999995E-7 : f64}
// CHECK-NOT: rstd
func.func @norm_no_fuse(%x: tensor<4x16xf32>, %w: tensor<16xf32>, %dy: tensor<4x16xf32>)
    -> (tensor<4x16xf32>, tensor<4x16xf32>, tensor<16xf32>) {
  %n = llama.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<4x16xf32>, tensor<16xf32>) -> tensor<4x16xf32>
  %dx, %dw = llama.rms_norm_grad %dy, %x, %w {eps = 1.0e-06 : f64} : (tensor<4x16xf32>, tensor<4x16xf32>, tensor<16xf32>) -> (tensor<4x16xf32>, tensor<16xf32>)
  return %n, %dx, %dw : tensor<4x16xf32>, tensor<4x16xf32>, tensor<16xf32>
}

// -----

// Cross-entropy seeded by a constant: loss and gradient in one op.
// CHECK-LABEL: func.func @cross_entropy
// CHECK-NOT: llama.fill
// CHECK: %[[L:.*]], %[[D:.*]] = llama.cross_entropy_fused %arg0, %arg1 {grad_scale = 1.000000e+00 : f64, ignore_index = -1 : i64}
// CHECK-SAME: -> (tensor<f32>, tensor<2x8x64xf32>)
// CHECK-NOT: llama.cross_entropy_grad
// CHECK: return %[[L]], %[[D]]
func.func @cross_entropy(%logits: tensor<2x8x64xf32>, %t: tensor<2x8xi32>) -> (tensor<f32>, tensor<2x8x64xf32>) {
  %loss = llama.cross_entropy %logits, %t {ignore_index = -1 : i64} : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  %one = llama.fill {value = 1.0 : f64} : tensor<f32>
  %d = llama.cross_entropy_grad %one, %logits, %t {ignore_index = -1 : i64} : (tensor<f32>, tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<2x8x64xf32>
  return %loss, %d : tensor<f32>, tensor<2x8x64xf32>
}

// -----

// Must not fuse: an upstream gradient that is not a constant, and a
// gradient over different targets.
// CHECK-LABEL: func.func @cross_entropy_no_fuse
// CHECK: llama.cross_entropy %arg0, %arg1
// CHECK: llama.cross_entropy_grad %arg3, %arg0, %arg1
// CHECK: llama.cross_entropy_grad {{.*}}, %arg0, %arg2
// CHECK-NOT: cross_entropy_fused
func.func @cross_entropy_no_fuse(%logits: tensor<2x8x64xf32>, %t: tensor<2x8xi32>, %u: tensor<2x8xi32>, %g: tensor<f32>)
    -> (tensor<f32>, tensor<2x8x64xf32>, tensor<2x8x64xf32>) {
  %loss = llama.cross_entropy %logits, %t : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  %d = llama.cross_entropy_grad %g, %logits, %t : (tensor<f32>, tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<2x8x64xf32>
  %one = llama.fill {value = 1.0 : f64} : tensor<f32>
  %e = llama.cross_entropy_grad %one, %logits, %u : (tensor<f32>, tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<2x8x64xf32>
  return %loss, %d, %e : tensor<f32>, tensor<2x8x64xf32>, tensor<2x8x64xf32>
}

// -----

// RoPE of one attention's query and key (GQA: the key has fewer heads) in
// one op, forward and inverse; the query is the operand with more heads
// whatever the order.
// CHECK-LABEL: func.func @rope
// CHECK: %[[Q:.*]], %[[K:.*]] = llama.rope_qk %arg0, %arg1 {theta = 1.000000e+04 : f64} : (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>)
// CHECK: %[[DQ:.*]], %[[DK:.*]] = llama.rope_qk %arg2, %arg3 {inverse, theta = 1.000000e+04 : f64}
// CHECK-NOT: llama.rope
func.func @rope(%q: tensor<2x8x4x4xf32>, %k: tensor<2x8x2x4xf32>, %dq: tensor<2x8x4x4xf32>, %dk: tensor<2x8x2x4xf32>)
    -> (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>, tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>) {
  %kr = llama.rope %k {theta = 1.0e+04 : f64} : (tensor<2x8x2x4xf32>) -> tensor<2x8x2x4xf32>
  %qr = llama.rope %q {theta = 1.0e+04 : f64} : (tensor<2x8x4x4xf32>) -> tensor<2x8x4x4xf32>
  %a = llama.rope_grad %dq {theta = 1.0e+04 : f64} : (tensor<2x8x4x4xf32>) -> tensor<2x8x4x4xf32>
  %b = llama.rope_grad %dk {theta = 1.0e+04 : f64} : (tensor<2x8x2x4xf32>) -> tensor<2x8x2x4xf32>
  return %qr, %kr, %a, %b : tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>, tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>
}

// -----

// Must not fuse: different theta; a different sequence length.
// CHECK-LABEL: func.func @rope_no_fuse
// CHECK-COUNT-3: llama.rope %
// CHECK-NOT: rope_qk
func.func @rope_no_fuse(%q: tensor<2x8x4x4xf32>, %k: tensor<2x8x2x4xf32>, %r: tensor<2x4x2x4xf32>)
    -> (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>, tensor<2x4x2x4xf32>) {
  %qr = llama.rope %q {theta = 1.0e+04 : f64} : (tensor<2x8x4x4xf32>) -> tensor<2x8x4x4xf32>
  %kr = llama.rope %k {theta = 5.0e+05 : f64} : (tensor<2x8x2x4xf32>) -> tensor<2x8x2x4xf32>
  %rr = llama.rope %r {theta = 1.0e+04 : f64} : (tensor<2x4x2x4xf32>) -> tensor<2x4x2x4xf32>
  return %qr, %kr, %rr : tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>, tensor<2x4x2x4xf32>
}

// -----

// Chains of adds whose inner results have no other use become one sum, in
// the chain's order; an inner add that is also returned stays.
// CHECK-LABEL: func.func @sums
// CHECK: %[[S:.*]] = llama.sum %arg0, %arg1, %arg2, %arg3 :
// CHECK: %[[KEEP:.*]] = llama.add %arg0, %arg1
// CHECK: llama.add %[[KEEP]], %arg2
func.func @sums(%a: tensor<8xf32>, %b: tensor<8xf32>, %c: tensor<8xf32>, %d: tensor<8xf32>)
    -> (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) {
  %ab = llama.add %a, %b : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  %abc = llama.add %ab, %c : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  %abcd = llama.add %abc, %d : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  %keep = llama.add %a, %b : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  %more = llama.add %keep, %c : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  return %abcd, %keep, %more : tensor<8xf32>, tensor<8xf32>, tensor<8xf32>
}

// -----

// GEMMs, attention and SwiGLU are left as they are.
// CHECK-LABEL: func.func @untouched
// CHECK: llama.matmul
// CHECK: llama.swiglu
// CHECK: llama.attention
func.func @untouched(%x: tensor<2x8x16xf32>, %w: tensor<48x16xf32>, %q: tensor<2x8x4x4xf32>, %k: tensor<2x8x2x4xf32>)
    -> (tensor<2x8x48xf32>, tensor<2x8x4x4xf32>) {
  %g = llama.matmul %x, %w {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<48x16xf32>) -> tensor<2x8x48xf32>
  %s = llama.swiglu %g, %g : (tensor<2x8x48xf32>, tensor<2x8x48xf32>) -> tensor<2x8x48xf32>
  %o, %lse = llama.attention %q, %k, %k {scale = 5.000000e-01 : f64} : (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>, tensor<2x8x2x4xf32>) -> (tensor<2x8x4x4xf32>, tensor<2x4x8xf32>)
  return %s, %o : tensor<2x8x48xf32>, tensor<2x8x4x4xf32>
}

// -----

// Must not fuse across phases: the recomputation of a norm in the backward
// (remat) stays there instead of joining the forward's add, and a backward
// add does not join a forward one.
// CHECK-LABEL: func.func @phases
// CHECK: %[[S:.*]] = llama.add %arg0, %arg1 :
// CHECK: llama.rms_norm %[[S]], %arg2 {eps = 1.000000e-05 : f64, llama.backward, llama.recomputed}
// CHECK: llama.add %[[S]], %arg0 {llama.backward}
func.func @phases(%x: tensor<4x16xf32>, %a: tensor<4x16xf32>, %w: tensor<16xf32>)
    -> (tensor<4x16xf32>, tensor<4x16xf32>) {
  %s = llama.add %x, %a : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  %n = llama.rms_norm %s, %w {eps = 1.0e-05 : f64, llama.backward, llama.recomputed} : (tensor<4x16xf32>, tensor<16xf32>) -> tensor<4x16xf32>
  %t = llama.add %s, %x {llama.backward} : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  return %n, %t : tensor<4x16xf32>, tensor<4x16xf32>
}
