// Every verifier message of the llama dialect.
// RUN: llama-opt %s -split-input-file -verify-diagnostics

func.func @embedding_table_rank(%t: tensor<64xf32>, %ids: tensor<2x8xi32>) {
  // expected-error @+1 {{table must be [vocab, dim], got rank 1}}
  %0 = llama.embedding %t, %ids : (tensor<64xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @embedding_result_shape(%t: tensor<64x16xf32>, %ids: tensor<2x8xi32>) {
  // expected-error @+1 {{result must have shape [2x8x16], got [2x8x8]}}
  %0 = llama.embedding %t, %ids : (tensor<64x16xf32>, tensor<2x8xi32>) -> tensor<2x8x8xf32>
  return
}

// -----

func.func @embedding_grad_rank(%g: tensor<2x8x16xf32>, %ids: tensor<2x8xi32>) {
  // expected-error @+1 {{result must be [vocab, dim], got rank 3}}
  %0 = llama.embedding_grad %g, %ids : (tensor<2x8x16xf32>, tensor<2x8xi32>) -> tensor<1x64x16xf32>
  return
}

// -----

func.func @embedding_grad_shape(%g: tensor<2x8x16xf32>, %ids: tensor<2x4xi32>) {
  // expected-error @+1 {{grad must have shape [2x4x16], got [2x8x16]}}
  %0 = llama.embedding_grad %g, %ids : (tensor<2x8x16xf32>, tensor<2x4xi32>) -> tensor<64x16xf32>
  return
}

// -----

func.func @mixed_element_types(%t: tensor<64x16xf64>, %ids: tensor<2x8xi32>) {
  // expected-error @+1 {{mixes element types 'f64' and 'f32'}}
  %0 = llama.embedding %t, %ids : (tensor<64x16xf64>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @dynamic_shape(%x: tensor<?x16xf32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{needs static shapes, got 'tensor<?x16xf32>'}}
  %0 = llama.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<?x16xf32>, tensor<16xf32>) -> tensor<?x16xf32>
  return
}

// -----

func.func @rms_norm_scalar(%x: tensor<f32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{x must have rank >= 1}}
  %0 = llama.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<f32>, tensor<16xf32>) -> tensor<f32>
  return
}

// -----

func.func @rms_norm_eps(%x: tensor<4x16xf32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{eps must be positive, got 0}}
  %0 = llama.rms_norm %x, %w {eps = 0.0 : f64} : (tensor<4x16xf32>, tensor<16xf32>) -> tensor<4x16xf32>
  return
}

// -----

func.func @rms_norm_weight(%x: tensor<4x16xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{weight must have shape [16], got [8]}}
  %0 = llama.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<4x16xf32>, tensor<8xf32>) -> tensor<4x16xf32>
  return
}

// -----

func.func @rms_norm_result(%x: tensor<4x16xf32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{result must have shape [4x16], got [16x4]}}
  %0 = llama.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<4x16xf32>, tensor<16xf32>) -> tensor<16x4xf32>
  return
}

// -----

func.func @rms_norm_grad_shapes(%g: tensor<4x8xf32>, %x: tensor<4x16xf32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{grad must have shape [4x16], got [4x8]}}
  %0:2 = llama.rms_norm_grad %g, %x, %w {eps = 1.0e-05 : f64} : (tensor<4x8xf32>, tensor<4x16xf32>, tensor<16xf32>) -> (tensor<4x16xf32>, tensor<16xf32>)
  return
}

// -----

func.func @rms_norm_grad_x_grad(%x: tensor<4x16xf32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{x_grad must have shape [4x16], got [16]}}
  %0:2 = llama.rms_norm_grad %x, %x, %w {eps = 1.0e-05 : f64} : (tensor<4x16xf32>, tensor<4x16xf32>, tensor<16xf32>) -> (tensor<16xf32>, tensor<16xf32>)
  return
}

// -----

func.func @rms_norm_grad_weight_grad(%x: tensor<4x16xf32>, %w: tensor<16xf32>) {
  // expected-error @+1 {{weight_grad must have shape [16], got [4x16]}}
  %0:2 = llama.rms_norm_grad %x, %x, %w {eps = 1.0e-05 : f64} : (tensor<4x16xf32>, tensor<4x16xf32>, tensor<16xf32>) -> (tensor<4x16xf32>, tensor<4x16xf32>)
  return
}

// -----

func.func @matmul_rank(%a: tensor<16xf32>, %b: tensor<16x4xf32>) {
  // expected-error @+1 {{operands must have rank >= 2, got ranks 1 and 2}}
  %0 = llama.matmul %a, %b : (tensor<16xf32>, tensor<16x4xf32>) -> tensor<4xf32>
  return
}

// -----

func.func @matmul_rhs_rank(%a: tensor<2x3x8x16xf32>, %b: tensor<3x16x4xf32>) {
  // expected-error @+1 {{rhs must be a matrix or have the rank of lhs (4), got rank 3}}
  %0 = llama.matmul %a, %b : (tensor<2x3x8x16xf32>, tensor<3x16x4xf32>) -> tensor<2x3x8x4xf32>
  return
}

// -----

func.func @matmul_batch(%a: tensor<2x8x16xf32>, %b: tensor<3x16x4xf32>) {
  // expected-error @+1 {{batch dimensions differ: lhs [2x8x16], rhs [3x16x4]}}
  %0 = llama.matmul %a, %b : (tensor<2x8x16xf32>, tensor<3x16x4xf32>) -> tensor<2x8x4xf32>
  return
}

// -----

func.func @matmul_shared_transpose_lhs(%a: tensor<2x16x8xf32>, %b: tensor<16x4xf32>) {
  // expected-error @+1 {{transpose_lhs is not allowed with a shared (rank-2) rhs}}
  %0 = llama.matmul %a, %b {transpose_lhs = true} : (tensor<2x16x8xf32>, tensor<16x4xf32>) -> tensor<2x8x4xf32>
  return
}

// -----

func.func @matmul_contraction(%a: tensor<8x16xf32>, %b: tensor<12x4xf32>) {
  // expected-error @+1 {{contraction sizes differ: lhs gives K = 16, rhs gives K = 12}}
  %0 = llama.matmul %a, %b : (tensor<8x16xf32>, tensor<12x4xf32>) -> tensor<8x4xf32>
  return
}

// -----

func.func @matmul_result(%a: tensor<8x16xf32>, %b: tensor<4x16xf32>) {
  // expected-error @+1 {{result must have shape [8x4], got [8x16]}}
  %0 = llama.matmul %a, %b {transpose_rhs = true} : (tensor<8x16xf32>, tensor<4x16xf32>) -> tensor<8x16xf32>
  return
}

// -----

func.func @reshape_count(%a: tensor<8x16xf32>) {
  // expected-error @+1 {{element counts differ: [8x16] has 128, [8x8] has 64}}
  %0 = llama.reshape %a : (tensor<8x16xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @rope_rank(%a: tensor<8x16xf32>) {
  // expected-error @+1 {{input must be [batch, seq, heads, head_dim], got rank 2}}
  %0 = llama.rope %a {theta = 1.0e+04 : f64} : (tensor<8x16xf32>) -> tensor<8x16xf32>
  return
}

// -----

func.func @rope_odd_head_dim(%a: tensor<1x8x2x5xf32>) {
  // expected-error @+1 {{head_dim must be even, got 5}}
  %0 = llama.rope %a {theta = 1.0e+04 : f64} : (tensor<1x8x2x5xf32>) -> tensor<1x8x2x5xf32>
  return
}

// -----

func.func @rope_theta(%a: tensor<1x8x2x4xf32>) {
  // expected-error @+1 {{theta must be positive, got -1}}
  %0 = llama.rope %a {theta = -1.0 : f64} : (tensor<1x8x2x4xf32>) -> tensor<1x8x2x4xf32>
  return
}

// -----

func.func @rope_grad_result(%a: tensor<1x8x2x4xf32>) {
  // expected-error @+1 {{result must have shape [1x8x2x4], got [1x8x4x2]}}
  %0 = llama.rope_grad %a {theta = 1.0e+04 : f64} : (tensor<1x8x2x4xf32>) -> tensor<1x8x4x2xf32>
  return
}

// -----

func.func @attention_query_rank(%q: tensor<8x16xf32>, %k: tensor<1x8x2x4xf32>) {
  // expected-error @+1 {{query must be [batch, seq, n_heads, head_dim], got rank 2}}
  %0:2 = llama.attention %q, %k, %k {scale = 0.5 : f64} : (tensor<8x16xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>) -> (tensor<8x16xf32>, tensor<1x4x8xf32>)
  return
}

// -----

func.func @attention_key_rank(%q: tensor<1x8x4x4xf32>, %k: tensor<8x8xf32>) {
  // expected-error @+1 {{key must be [batch, seq, n_kv_heads, head_dim], got rank 2}}
  %0:2 = llama.attention %q, %k, %k {scale = 0.5 : f64} : (tensor<1x8x4x4xf32>, tensor<8x8xf32>, tensor<8x8xf32>) -> (tensor<1x8x4x4xf32>, tensor<1x4x8xf32>)
  return
}

// -----

func.func @attention_key_seq(%q: tensor<1x8x4x4xf32>, %k: tensor<1x6x2x4xf32>) {
  // expected-error @+1 {{key must have shape [1x8x2x4], got [1x6x2x4]}}
  %0:2 = llama.attention %q, %k, %k {scale = 0.5 : f64} : (tensor<1x8x4x4xf32>, tensor<1x6x2x4xf32>, tensor<1x6x2x4xf32>) -> (tensor<1x8x4x4xf32>, tensor<1x4x8xf32>)
  return
}

// -----

func.func @attention_value(%q: tensor<1x8x4x4xf32>, %k: tensor<1x8x2x4xf32>, %v: tensor<1x8x1x4xf32>) {
  // expected-error @+1 {{value must have shape [1x8x2x4], got [1x8x1x4]}}
  %0:2 = llama.attention %q, %k, %v {scale = 0.5 : f64} : (tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x1x4xf32>) -> (tensor<1x8x4x4xf32>, tensor<1x4x8xf32>)
  return
}

// -----

func.func @attention_groups(%q: tensor<1x8x4x4xf32>, %k: tensor<1x8x3x4xf32>) {
  // expected-error @+1 {{n_heads (4) must be a multiple of n_kv_heads (3)}}
  %0:2 = llama.attention %q, %k, %k {scale = 0.5 : f64} : (tensor<1x8x4x4xf32>, tensor<1x8x3x4xf32>, tensor<1x8x3x4xf32>) -> (tensor<1x8x4x4xf32>, tensor<1x4x8xf32>)
  return
}

// -----

func.func @attention_scale(%q: tensor<1x8x4x4xf32>, %k: tensor<1x8x2x4xf32>) {
  // expected-error @+1 {{scale must be positive, got 0}}
  %0:2 = llama.attention %q, %k, %k {scale = 0.0 : f64} : (tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>) -> (tensor<1x8x4x4xf32>, tensor<1x4x8xf32>)
  return
}

// -----

func.func @attention_result(%q: tensor<1x8x4x4xf32>, %k: tensor<1x8x2x4xf32>) {
  // expected-error @+1 {{result must have shape [1x8x4x4], got [1x8x2x4]}}
  %0:2 = llama.attention %q, %k, %k {scale = 0.5 : f64} : (tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>) -> (tensor<1x8x2x4xf32>, tensor<1x4x8xf32>)
  return
}

// -----

func.func @attention_lse(%q: tensor<1x8x4x4xf32>, %k: tensor<1x8x2x4xf32>) {
  // expected-error @+1 {{logsumexp must have shape [1x4x8], got [1x8x4]}}
  %0:2 = llama.attention %q, %k, %k {scale = 0.5 : f64} : (tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>) -> (tensor<1x8x4x4xf32>, tensor<1x8x4xf32>)
  return
}

// -----

func.func @attention_grad_key_grad(%q: tensor<1x8x4x4xf32>, %k: tensor<1x8x2x4xf32>, %l: tensor<1x4x8xf32>) {
  // expected-error @+1 {{key_grad must have shape [1x8x2x4], got [1x8x4x4]}}
  %0:3 = llama.attention_grad %q, %q, %k, %k, %q, %l {scale = 0.5 : f64} : (tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x4x4xf32>, tensor<1x4x8xf32>) -> (tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>)
  return
}

// -----

func.func @swiglu_types(%g: tensor<4x8xf32>, %u: tensor<4x4xf32>) {
  // expected-error @+1 {{requires the same type for all operands and results}}
  %0 = llama.swiglu %g, %u : (tensor<4x8xf32>, tensor<4x4xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @cross_entropy_targets(%l: tensor<2x8x64xf32>, %t: tensor<2x4xi32>) {
  // expected-error @+1 {{targets must have shape [2x8], got [2x4]}}
  %0 = llama.cross_entropy %l, %t : (tensor<2x8x64xf32>, tensor<2x4xi32>) -> tensor<f32>
  return
}

// -----

func.func @cross_entropy_rank(%l: tensor<f32>, %t: tensor<i32>) {
  // expected-error @+1 {{logits must have rank >= 1}}
  %0 = llama.cross_entropy %l, %t : (tensor<f32>, tensor<i32>) -> tensor<f32>
  return
}

// -----

func.func @cross_entropy_grad_result(%d: tensor<f32>, %l: tensor<2x8x64xf32>, %t: tensor<2x8xi32>) {
  // expected-error @+1 {{result must have shape [2x8x64], got [2x8x32]}}
  %0 = llama.cross_entropy_grad %d, %l, %t : (tensor<f32>, tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<2x8x32xf32>
  return
}

// -----

func.func @token_type(%t: tensor<64x16xf32>, %ids: tensor<2x8xi64>) {
  // expected-error @+1 {{operand #1 must be ranked tensor of 32-bit signless integer values}}
  %0 = llama.embedding %t, %ids : (tensor<64x16xf32>, tensor<2x8xi64>) -> tensor<2x8x16xf32>
  return
}

// -----

func.func @attention_grad_grad(%q: tensor<1x8x4x4xf32>, %k: tensor<1x8x2x4xf32>, %l: tensor<1x4x8xf32>) {
  // expected-error @+1 {{grad must have shape [1x8x4x4], got [1x8x2x4]}}
  %0:3 = llama.attention_grad %k, %q, %k, %k, %q, %l {scale = 0.5 : f64} : (tensor<1x8x2x4xf32>, tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x4x4xf32>, tensor<1x4x8xf32>) -> (tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>)
  return
}

// -----

func.func @attention_grad_result(%q: tensor<1x8x4x4xf32>, %k: tensor<1x8x2x4xf32>, %l: tensor<1x4x8xf32>) {
  // expected-error @+1 {{result must have shape [1x8x4x4], got [1x8x2x4]}}
  %0:3 = llama.attention_grad %q, %q, %k, %k, %k, %l {scale = 0.5 : f64} : (tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>, tensor<1x4x8xf32>) -> (tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>)
  return
}

// -----

func.func @attention_grad_lse(%q: tensor<1x8x4x4xf32>, %k: tensor<1x8x2x4xf32>, %l: tensor<1x8x4xf32>) {
  // expected-error @+1 {{logsumexp must have shape [1x4x8], got [1x8x4]}}
  %0:3 = llama.attention_grad %q, %q, %k, %k, %q, %l {scale = 0.5 : f64} : (tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x4x4xf32>, tensor<1x8x4xf32>) -> (tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>)
  return
}

// -----

func.func @attention_grad_query_grad(%q: tensor<1x8x4x4xf32>, %k: tensor<1x8x2x4xf32>, %l: tensor<1x4x8xf32>) {
  // expected-error @+1 {{query_grad must have shape [1x8x4x4], got [1x8x2x4]}}
  %0:3 = llama.attention_grad %q, %q, %k, %k, %q, %l {scale = 0.5 : f64} : (tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x4x4xf32>, tensor<1x4x8xf32>) -> (tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>)
  return
}

// -----

func.func @attention_grad_value_grad(%q: tensor<1x8x4x4xf32>, %k: tensor<1x8x2x4xf32>, %l: tensor<1x4x8xf32>) {
  // expected-error @+1 {{value_grad must have shape [1x8x2x4], got [1x8x4x4]}}
  %0:3 = llama.attention_grad %q, %q, %k, %k, %q, %l {scale = 0.5 : f64} : (tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x4x4xf32>, tensor<1x4x8xf32>) -> (tensor<1x8x4x4xf32>, tensor<1x8x2x4xf32>, tensor<1x8x4x4xf32>)
  return
}

// -----

func.func @rope_inv_freq_count(%x: tensor<2x8x4x4xf32>) {
  // expected-error @+1 {{inv_freq has 3 frequencies, expected head_dim / 2 = 2}}
  %0 = llama.rope %x {theta = 1.0e+04 : f64, inv_freq = array<f64: 1.0, 0.1, 0.01>} : (tensor<2x8x4x4xf32>) -> tensor<2x8x4x4xf32>
  return
}

// -----

func.func @rope_inv_freq_positive(%x: tensor<2x8x4x4xf32>) {
  // expected-error @+1 {{inv_freq must be finite and positive, got 0}}
  %0 = llama.rope_grad %x {theta = 1.0e+04 : f64, inv_freq = array<f64: 1.0, 0.0>} : (tensor<2x8x4x4xf32>) -> tensor<2x8x4x4xf32>
  return
}

// -----

func.func @rope_attention_factor(%x: tensor<1x1x4x4xf32>, %pos: tensor<i32>) {
  // expected-error @+1 {{attention_factor must be finite and positive, got -1}}
  %0 = llama.rope_at %x, %pos {theta = 1.0e+04 : f64, max_positions = 8 : i64, attention_factor = -1.0 : f64} : (tensor<1x1x4x4xf32>, tensor<i32>) -> tensor<1x1x4x4xf32>
  return
}
