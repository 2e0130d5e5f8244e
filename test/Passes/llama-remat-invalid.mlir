// Errors of llama-remat. The option errors have no location in the input
// (FileCheck); the module's, -verify-diagnostics with their locations.
// RUN: llama-opt %s -split-input-file -llama-remat=policy=full -verify-diagnostics
// RUN: not llama-opt %s -split-input-file -llama-remat=policy=budget=12parsecs 2>&1 | FileCheck %s --check-prefix=UNIT
// RUN: not llama-opt %s -split-input-file -llama-remat=policy=budget=100 2>&1 | FileCheck %s --check-prefix=SMALL
// UNIT: error: llama-remat: cannot read the budget '12parsecs' (bytes, e.g. 12GiB or 500MB)
// SMALL: error: llama-remat: no plan fits an activation budget of 100 bytes; the smallest arena reached is {{[0-9]+}} bytes

// `full` needs to know where the layers are.
// expected-error @+1 {{llama-remat: policy 'full' needs the transformer layers marked with 'llama.layer' attributes on their ops (the model builder adds them)}}
func.func @forward(%emb: tensor<64x16xf32>, %tok: tensor<2x8xi32>, %tgt: tensor<2x8xi32>) -> tensor<f32> {
  %h = llama.embedding %emb, %tok : (tensor<64x16xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  %logits = llama.matmul %h, %emb {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<64x16xf32>) -> tensor<2x8x64xf32>
  %loss = llama.cross_entropy %logits, %tgt : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// A module-level error: its location is the start of this split (the
// separator line above).
// expected-error @-4 {{llama-remat: the module has no func.func @forward}}
func.func @not_forward() {
  return
}
