// Round trip of every llama op: print, parse again, print the same.
// RUN: llama-opt %s | llama-opt | FileCheck %s

// CHECK-LABEL: func.func @forward_ops
func.func @forward_ops(%table: tensor<64x16xf32>, %ids: tensor<2x8xi32>, %w: tensor<16xf32>,
                       %wq: tensor<16x16xf32>, %wkv: tensor<8x16xf32>) -> tensor<f32> {
  // CHECK: %[[H:.*]] = llama.embedding %{{.*}}, %{{.*}} : (tensor<64x16xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  %h = llama.embedding %table, %ids : (tensor<64x16xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  // CHECK: llama.rms_norm %[[H]], %{{.*}} {eps = 1.000000e-05 : f64}
  %n = llama.rms_norm %h, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  // CHECK: llama.matmul %{{.*}}, %{{.*}} {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<16x16xf32>) -> tensor<2x8x16xf32>
  %q = llama.matmul %n, %wq {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<16x16xf32>) -> tensor<2x8x16xf32>
  %k = llama.matmul %n, %wkv {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<8x16xf32>) -> tensor<2x8x8xf32>
  // CHECK: llama.reshape %{{.*}} : (tensor<2x8x16xf32>) -> tensor<2x8x4x4xf32>
  %q4 = llama.reshape %q : (tensor<2x8x16xf32>) -> tensor<2x8x4x4xf32>
  %k4 = llama.reshape %k : (tensor<2x8x8xf32>) -> tensor<2x8x2x4xf32>
  // CHECK: llama.rope %{{.*}} {theta = 1.000000e+04 : f64} : (tensor<2x8x4x4xf32>) -> tensor<2x8x4x4xf32>
  %qr = llama.rope %q4 {theta = 1.0e+04 : f64} : (tensor<2x8x4x4xf32>) -> tensor<2x8x4x4xf32>
  // CHECK: llama.rope %{{.*}} {inv_freq = array<f64: 5.000000e-01, 2.500000e-03>, theta = 1.000000e+04 : f64}
  %qs = llama.rope %q4 {theta = 1.0e+04 : f64, inv_freq = array<f64: 0.5, 2.5e-3>} : (tensor<2x8x4x4xf32>) -> tensor<2x8x4x4xf32>
  // CHECK: %{{.*}}, %{{.*}} = llama.attention %{{.*}}, %{{.*}}, %{{.*}} {scale = 5.000000e-01 : f64} : (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>, tensor<2x8x2x4xf32>) -> (tensor<2x8x4x4xf32>, tensor<2x4x8xf32>)
  %o, %lse = llama.attention %qr, %k4, %k4 {scale = 0.5 : f64} : (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>, tensor<2x8x2x4xf32>) -> (tensor<2x8x4x4xf32>, tensor<2x4x8xf32>)
  %o3 = llama.reshape %o : (tensor<2x8x4x4xf32>) -> tensor<2x8x16xf32>
  // CHECK: llama.swiglu %{{.*}}, %{{.*}} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %s = llama.swiglu %o3, %n : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  // CHECK: llama.add %{{.*}}, %{{.*}} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %r = llama.add %h, %s : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %logits = llama.matmul %r, %table {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<64x16xf32>) -> tensor<2x8x64xf32>
  // CHECK: llama.cross_entropy %{{.*}}, %{{.*}} {ignore_index = -1 : i64} : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  %loss = llama.cross_entropy %logits, %ids {ignore_index = -1 : i64} : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// CHECK-LABEL: func.func @backward_ops
func.func @backward_ops(%dh: tensor<2x8x16xf64>, %ids: tensor<2x8xi32>, %w: tensor<16xf64>,
                        %q: tensor<2x8x4x4xf64>, %kv: tensor<2x8x2x4xf64>, %lse: tensor<2x4x8xf64>,
                        %logits: tensor<2x8x64xf64>) {
  // CHECK: llama.embedding_grad %{{.*}}, %{{.*}} : (tensor<2x8x16xf64>, tensor<2x8xi32>) -> tensor<64x16xf64>
  %dt = llama.embedding_grad %dh, %ids : (tensor<2x8x16xf64>, tensor<2x8xi32>) -> tensor<64x16xf64>
  // CHECK: llama.rms_norm_grad %{{.*}}, %{{.*}}, %{{.*}} {eps = 1.000000e-05 : f64}
  %dx, %dw = llama.rms_norm_grad %dh, %dh, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf64>, tensor<2x8x16xf64>, tensor<16xf64>) -> (tensor<2x8x16xf64>, tensor<16xf64>)
  // CHECK: llama.matmul %{{.*}}, %{{.*}} {transpose_lhs = true} : (tensor<2x8x16xf64>, tensor<2x8x16xf64>) -> tensor<2x16x16xf64>
  %mm = llama.matmul %dh, %dh {transpose_lhs = true} : (tensor<2x8x16xf64>, tensor<2x8x16xf64>) -> tensor<2x16x16xf64>
  // CHECK: llama.rope_grad %{{.*}} {theta = 5.000000e+05 : f64}
  %dq = llama.rope_grad %q {theta = 5.0e+05 : f64} : (tensor<2x8x4x4xf64>) -> tensor<2x8x4x4xf64>
  // RoPE scaling: the frequencies and the cos/sin factor as attributes.
  // CHECK: llama.rope_grad %{{.*}} {attention_factor = 1.250000e+00 : f64, inv_freq = array<f64: 1.000000e+00, 1.250000e-04>, theta = 5.000000e+05 : f64}
  %dqs = llama.rope_grad %q {theta = 5.0e+05 : f64, inv_freq = array<f64: 1.0, 1.25e-4>, attention_factor = 1.25 : f64} : (tensor<2x8x4x4xf64>) -> tensor<2x8x4x4xf64>
  // CHECK: llama.attention_grad
  %gq, %gk, %gv = llama.attention_grad %q, %q, %kv, %kv, %q, %lse {scale = 0.5 : f64} : (tensor<2x8x4x4xf64>, tensor<2x8x4x4xf64>, tensor<2x8x2x4xf64>, tensor<2x8x2x4xf64>, tensor<2x8x4x4xf64>, tensor<2x4x8xf64>) -> (tensor<2x8x4x4xf64>, tensor<2x8x2x4xf64>, tensor<2x8x2x4xf64>)
  // CHECK: llama.swiglu_grad
  %gg, %gu = llama.swiglu_grad %dh, %dh, %dh : (tensor<2x8x16xf64>, tensor<2x8x16xf64>, tensor<2x8x16xf64>) -> (tensor<2x8x16xf64>, tensor<2x8x16xf64>)
  // CHECK: %[[ONE:.*]] = llama.fill {value = 1.000000e+00 : f64} : tensor<f64>
  %one = llama.fill {value = 1.0 : f64} : tensor<f64>
  // default ignore_index (-100) is elided when printed
  // CHECK: llama.cross_entropy_grad %[[ONE]], %{{.*}}, %{{.*}} : (tensor<f64>
  %dl = llama.cross_entropy_grad %one, %logits, %ids : (tensor<f64>, tensor<2x8x64xf64>, tensor<2x8xi32>) -> tensor<2x8x64xf64>
  return
}

// The ops the fusion pass (llama-fuse) creates.
// CHECK-LABEL: func.func @fused_ops
func.func @fused_ops(%x: tensor<2x8x16xf32>, %w: tensor<16xf32>, %r: tensor<2x8xf32>,
                     %q: tensor<2x8x4x4xf32>, %k: tensor<2x8x2x4xf32>,
                     %logits: tensor<2x8x64xf32>, %targets: tensor<2x8xi32>) {
  // CHECK: llama.add_rms_norm %{{.*}}, %{{.*}}, %{{.*}} {eps = 1.000000e-05 : f64} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>) -> (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8xf32>)
  %s, %n, %rs = llama.add_rms_norm %x, %x, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>) -> (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8xf32>)
  // CHECK: llama.rms_norm_rstd %{{.*}}, %{{.*}} {eps = 1.000000e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> (tensor<2x8x16xf32>, tensor<2x8xf32>)
  %n2, %r2 = llama.rms_norm_rstd %x, %w {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> (tensor<2x8x16xf32>, tensor<2x8xf32>)
  // CHECK: llama.rms_norm_grad_rstd %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} accumulate %{{.*}} {eps = 1.000000e-05 : f64}
  %dx, %dw = llama.rms_norm_grad_rstd %x, %x, %w, %r accumulate %x {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>, tensor<2x8xf32>, tensor<2x8x16xf32>) -> (tensor<2x8x16xf32>, tensor<16xf32>)
  // CHECK: llama.rms_norm_grad_rstd %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {eps = 1.000000e-05 : f64} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>, tensor<2x8xf32>)
  %dx2, %dw2 = llama.rms_norm_grad_rstd %x, %x, %w, %r {eps = 1.0e-05 : f64} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<16xf32>, tensor<2x8xf32>) -> (tensor<2x8x16xf32>, tensor<16xf32>)
  // CHECK: llama.rope_qk %{{.*}}, %{{.*}} {theta = 1.000000e+04 : f64} : (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>)
  %qr, %kr = llama.rope_qk %q, %k {theta = 1.0e+04 : f64} : (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>) -> (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>)
  // CHECK: llama.rope_qk %{{.*}}, %{{.*}} {inverse, theta = 1.000000e+04 : f64}
  %qi, %ki = llama.rope_qk %q, %k {theta = 1.0e+04 : f64, inverse} : (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>) -> (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>)
  // CHECK: llama.rope_qk %{{.*}}, %{{.*}} {attention_factor = 2.000000e+00 : f64, inv_freq = array<f64: 1.000000e+00, 3.000000e-01>, theta = 1.000000e+04 : f64}
  %qq, %kk = llama.rope_qk %q, %k {theta = 1.0e+04 : f64, inv_freq = array<f64: 1.0, 0.3>, attention_factor = 2.0 : f64} : (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>) -> (tensor<2x8x4x4xf32>, tensor<2x8x2x4xf32>)
  // CHECK: llama.cross_entropy_fused %{{.*}}, %{{.*}} {grad_scale = 1.000000e+00 : f64} : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> (tensor<f32>, tensor<2x8x64xf32>)
  %loss, %dl = llama.cross_entropy_fused %logits, %targets {grad_scale = 1.0 : f64, ignore_index = -100 : i64} : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> (tensor<f32>, tensor<2x8x64xf32>)
  // CHECK: llama.sum %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %sum = llama.sum %x, %n, %s : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  return
}

// Generation (@prefill / @decode): RoPE at a position read from memory and
// the attention over the KV cache it appends to.
// CHECK-LABEL: func.func @generation_ops
func.func @generation_ops(%q: tensor<1x1x4x4xf32>, %k: tensor<1x1x2x4xf32>,
                          %kc: tensor<1x64x2x4xf32> {llama.kv_cache},
                          %vc: tensor<1x64x2x4xf32> {llama.kv_cache},
                          %pos: tensor<i32>) -> tensor<1x1x4x4xf32> {
  // CHECK: llama.rope_at %{{.*}}, %{{.*}} {max_positions = 64 : i64, theta = 1.000000e+04 : f64} : (tensor<1x1x4x4xf32>, tensor<i32>) -> tensor<1x1x4x4xf32>
  %qr = llama.rope_at %q, %pos {theta = 1.0e+04 : f64, max_positions = 64 : i64} : (tensor<1x1x4x4xf32>, tensor<i32>) -> tensor<1x1x4x4xf32>
  // CHECK: llama.rope_at %{{.*}}, %{{.*}} {attention_factor = 1.100000e+00 : f64, inv_freq = array<f64: 1.000000e+00, 1.000000e-02>, max_positions = 64 : i64, theta = 1.000000e+04 : f64}
  %qs = llama.rope_at %q, %pos {theta = 1.0e+04 : f64, max_positions = 64 : i64, inv_freq = array<f64: 1.0, 1.0e-2>, attention_factor = 1.1 : f64} : (tensor<1x1x4x4xf32>, tensor<i32>) -> tensor<1x1x4x4xf32>
  %kr = llama.rope_at %k, %pos {theta = 1.0e+04 : f64, max_positions = 64 : i64} : (tensor<1x1x2x4xf32>, tensor<i32>) -> tensor<1x1x2x4xf32>
  // CHECK: llama.attention_cached %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {scale = 5.000000e-01 : f64} : (tensor<1x1x4x4xf32>, tensor<1x1x2x4xf32>, tensor<1x1x2x4xf32>, tensor<1x64x2x4xf32>, tensor<1x64x2x4xf32>, tensor<i32>) -> tensor<1x1x4x4xf32>
  %o = llama.attention_cached %qr, %kr, %k, %kc, %vc, %pos {scale = 0.5 : f64} : (tensor<1x1x4x4xf32>, tensor<1x1x2x4xf32>, tensor<1x1x2x4xf32>, tensor<1x64x2x4xf32>, tensor<1x64x2x4xf32>, tensor<i32>) -> tensor<1x1x4x4xf32>
  return %o : tensor<1x1x4x4xf32>
}

// The ops of partitioned programs (llama-shard): the vocabulary-parallel
// cross-entropy's pieces and the gradient all-reduce of a replicated input.
shard.grid @grid(shape = 2x2)
// CHECK-LABEL: func.func @partitioned_ops
func.func @partitioned_ops(%x: tensor<2x8x16xf32>, %logits: tensor<2x8x32xf32>,
                           %targets: tensor<2x8xi32>) -> tensor<f32> {
  // CHECK: llama.grad_all_reduce %{{.*}} on @grid grid_axes = [1] : tensor<2x8x16xf32>
  %x1 = llama.grad_all_reduce %x on @grid grid_axes = [1] : tensor<2x8x16xf32>
  // CHECK: llama.logits_max %{{.*}} : (tensor<2x8x32xf32>) -> tensor<2x8xf32>
  %m = llama.logits_max %logits : (tensor<2x8x32xf32>) -> tensor<2x8xf32>
  // CHECK: llama.ce_partial_sums %{{.*}}, %{{.*}}, %{{.*}} {vocab_shard = array<i64: 1, 64>}
  %ps = llama.ce_partial_sums %logits, %m, %targets {vocab_shard = array<i64: 1, 64>} : (tensor<2x8x32xf32>, tensor<2x8xf32>, tensor<2x8xi32>) -> tensor<2x8x2xf32>
  // CHECK: llama.count_valid %{{.*}} : (tensor<2x8xi32>) -> tensor<f32>
  %n = llama.count_valid %targets {ignore_index = -100 : i64} : (tensor<2x8xi32>) -> tensor<f32>
  // CHECK: llama.ce_combine %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x8xf32>, tensor<2x8x2xf32>, tensor<2x8xi32>, tensor<f32>) -> tensor<f32>
  %l = llama.ce_combine %m, %ps, %targets, %n : (tensor<2x8xf32>, tensor<2x8x2xf32>, tensor<2x8xi32>, tensor<f32>) -> tensor<f32>
  // CHECK: llama.ce_combine_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : (tensor<f32>, tensor<2x8x2xf32>, tensor<2x8xi32>, tensor<f32>) -> tensor<2x8x2xf32>
  %ds = llama.ce_combine_grad %l, %ps, %targets, %n : (tensor<f32>, tensor<2x8x2xf32>, tensor<2x8xi32>, tensor<f32>) -> tensor<2x8x2xf32>
  // CHECK: llama.ce_partial_sums_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x8x2xf32>, tensor<2x8x32xf32>, tensor<2x8xf32>, tensor<2x8xi32>) -> tensor<2x8x32xf32>
  %dl = llama.ce_partial_sums_grad %ds, %logits, %m, %targets : (tensor<2x8x2xf32>, tensor<2x8x32xf32>, tensor<2x8xf32>, tensor<2x8xi32>) -> tensor<2x8x32xf32>
  return %l : tensor<f32>
}
