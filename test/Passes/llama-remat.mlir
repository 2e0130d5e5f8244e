// RUN: llama-opt %s -llama-remat=policy=selective | FileCheck %s --check-prefix=SEL
// RUN: llama-opt %s -llama-remat=policy=none | FileCheck %s --check-prefix=NONE
// RUN: llama-opt %s -llama-remat=policy=full | FileCheck %s --check-prefix=FULL
// RUN: not llama-opt %s -llama-remat=policy=bogus 2>&1 | FileCheck %s --check-prefix=BOGUS
// RUN: llama-opt %s -llama-remat=policy=budget=1GiB | FileCheck %s --check-prefix=ROOMY
// RUN: llama-opt %s -llama-remat=policy=budget=12000 | FileCheck %s --check-prefix=TIGHT

// One layer (ops tagged llama.layer = 0) between an embedding and the loss.
// A budget with room for everything recomputes nothing.
// ROOMY-LABEL: func.func @forward
// ROOMY-SAME: llama.remat_plan = "{{.*}}"
// ROOMY-NOT: "recompute"
// A budget under what saving everything needs (12,416 bytes of arena here)
// but over the smallest arena reachable (11,328: the norm recomputed) forces
// recomputation: the cheapest value to recompute, the norm, goes; the GEMM
// output stays.
// TIGHT-LABEL: func.func @forward
// TIGHT-SAME: llama.remat_plan = "selective"
// TIGHT: llama.embedding {{.*}}llama.remat = "save"
// TIGHT: llama.rms_norm {{.*}}llama.remat = "recompute"
// TIGHT: llama.matmul {{.*}}llama.remat = "save"
// SEL-LABEL: func.func @forward
// NONE-LABEL: func.func @forward
// FULL-LABEL: func.func @forward
func.func @forward(%emb: tensor<64x16xf32>, %n: tensor<16xf32>, %w: tensor<16x16xf32>,
                   %tok: tensor<2x8xi32>, %tgt: tensor<2x8xi32>) -> tensor<f32> {
  // SEL: llama.embedding {{.*}}llama.remat = "save"
  // FULL: llama.embedding {{.*}}llama.remat = "save"
  %h = llama.embedding %emb, %tok : (tensor<64x16xf32>, tensor<2x8xi32>) -> tensor<2x8x16xf32>
  // Norms are cheap: recomputed by selective; inside a layer, full recomputes too.
  // SEL: llama.rms_norm {{.*}}llama.remat = "recompute"
  // NONE: llama.rms_norm {{.*}}llama.remat = "save"
  // FULL: llama.rms_norm {{.*}}llama.remat = "recompute"
  %x = llama.rms_norm %h, %n {eps = 1.0e-05 : f64, llama.layer = 0 : i64} : (tensor<2x8x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  // GEMM outputs are saved by selective; full saves nothing that stays in the layer.
  // SEL: llama.matmul {{.*}}llama.remat = "save"
  // FULL: llama.matmul {{.*}}llama.remat = "recompute"
  %y = llama.matmul %x, %w {transpose_rhs = true, llama.layer = 0 : i64} : (tensor<2x8x16xf32>, tensor<16x16xf32>) -> tensor<2x8x16xf32>
  // The layer's output leaves the layer: saved by every policy.
  // SEL: llama.add {{.*}}llama.remat = "save"
  // FULL: llama.add {{.*}}llama.remat = "save"
  %r = llama.add %h, %y {llama.layer = 0 : i64} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %logits = llama.matmul %r, %emb {transpose_rhs = true} : (tensor<2x8x16xf32>, tensor<64x16xf32>) -> tensor<2x8x64xf32>
  %loss = llama.cross_entropy %logits, %tgt : (tensor<2x8x64xf32>, tensor<2x8xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
// BOGUS: unknown policy 'bogus' (expected none, selective, full or budget=BYTES)
