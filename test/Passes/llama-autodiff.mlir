// RUN: llama-opt %s -split-input-file -llama-autodiff | FileCheck %s

// A tied embedding: the table's gradient is the sum of the embedding's and the
// output projection's. %unused gets an explicit zero gradient.
// CHECK-LABEL: func.func @train_step
// CHECK-SAME: (%[[EMB:[^:]*]]: tensor<64x16xf32> {llama.param_name = "model.embed_tokens.weight"}, %[[UNUSED:[^:]*]]: tensor<16xf32> {llama.param_name = "unused"}, %[[TOK:[^:]*]]: tensor<2x8xi32> {llama.input = "tokens"}, %[[TGT:[^:]*]]: tensor<2x8xi32> {llama.input = "targets"})
// CHECK-SAME: -> (tensor<f32>, tensor<64x16xf32> {llama.grad_of = "model.embed_tokens.weight"}, tensor<16xf32> {llama.grad_of = "unused"})
// Forward copy first:
// CHECK: %[[H:.*]] = llama.embedding %[[EMB]], %[[TOK]]
// CHECK: %[[LOGITS:.*]] = llama.matmul %[[H]], %[[EMB]] {transpose_rhs = true}
// CHECK: %[[LOSS:.*]] = llama.cross_entropy %[[LOGITS]], %[[TGT]]
// Then the reverse sweep, every op tagged llama.backward:
// CHECK: %[[ONE:.*]] = llama.fill {llama.backward, value = 1.000000e+00 : f64} : tensor<f32>
// CHECK: %[[DL:.*]] = llama.cross_entropy_grad %[[ONE]], %[[LOGITS]], %[[TGT]] {llama.backward}
// dH = dLogits @ E; dE (projection) = dLogits2^T @ H2 over all tokens:
// CHECK: %[[DH:.*]] = llama.matmul %[[DL]], %[[EMB]] {llama.backward}
// CHECK-DAG: %[[H2:.*]] = llama.reshape %[[H]] {llama.backward} : (tensor<2x8x16xf32>) -> tensor<16x16xf32>
// CHECK-DAG: %[[DL2:.*]] = llama.reshape %[[DL]] {llama.backward} : (tensor<2x8x64xf32>) -> tensor<16x64xf32>
// CHECK: %[[DEP:.*]] = llama.matmul %[[DL2]], %[[H2]] {llama.backward, transpose_lhs = true} : (tensor<16x64xf32>, tensor<16x16xf32>) -> tensor<64x16xf32>
// CHECK: %[[DEE:.*]] = llama.embedding_grad %[[DH]], %[[TOK]] {llama.backward}
// CHECK: %[[DE:.*]] = llama.add %[[DEP]], %[[DEE]] {llama.backward}
// CHECK: %[[ZERO:.*]] = llama.fill {llama.backward, value = 0.000000e+00 : f64} : tensor<16xf32>
// CHECK: return %[[LOSS]], %[[DE]], %[[ZERO]]
func.func @forward(%emb: tensor<64x16xf32> {llama.param_name = "model.embed_tokens.weight"},
                   %unused: tensor<16xf32> {llama.param_name = "unused"},
                   %tok: tensor<2x8xi32> {llama.input = "tokens"},
                   %tgt: tensor<2x8xi32> {llama.input = "targets"}) -> tensor<f32> {
  %h = llama.embedding %emb, %tok : (tensor<64x16xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  %logits = llama.matmul %h, %emb {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<64x16xf32>) -> tensor<2x8x64xf32>
  %loss = llama.cross_entropy %logits, %tgt : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// A recompute-marked norm is cloned into the backward right before its first
// use there (the gradient of the weight it feeds), not kept from the forward.
// CHECK-LABEL: func.func @train_step
// CHECK: %[[H:.*]] = llama.embedding
// CHECK: %[[X:.*]] = llama.rms_norm %[[H]], %{{.*}} {eps = 1.000000e-05 : f64, llama.remat = "recompute"}
// CHECK: llama.matmul %[[X]], %{{.*}} {llama.remat = "save", transpose_rhs = true}
// CHECK: llama.cross_entropy_grad
// CHECK: %[[X2:.*]] = llama.rms_norm %[[H]], %{{.*}} {eps = 1.000000e-05 : f64, llama.backward, llama.recomputed, llama.remat = "recompute"}
// CHECK: llama.reshape %[[X2]] {llama.backward}
// CHECK: llama.rms_norm_grad %{{.*}}, %[[H]], %{{.*}}
func.func @forward(%emb: tensor<64x16xf32> {llama.param_name = "e"}, %n: tensor<16xf32> {llama.param_name = "n"},
                   %w: tensor<64x16xf32> {llama.param_name = "w"},
                   %tok: tensor<2x8xi32> {llama.input = "tokens"}, %tgt: tensor<2x8xi32> {llama.input = "targets"}) -> tensor<f32> {
  %h = llama.embedding %emb, %tok {llama.remat = "save"} : (tensor<64x16xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  %x = llama.rms_norm %h, %n {eps = 1.0e-05 : f64, llama.remat = "recompute"} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  %logits = llama.matmul %x, %w {transpose_rhs = true, llama.remat = "save"} : (tensor<2x8x16xf32>, tensor<64x16xf32>) -> tensor<2x8x64xf32>
  %loss = llama.cross_entropy %logits, %tgt {llama.remat = "save"} : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
