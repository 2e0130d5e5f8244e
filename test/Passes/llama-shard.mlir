// llama-shard on micro (2 layers, 4 query heads over 2 KV heads of 4, hidden
// 16, FFN 48, vocabulary 64) at tp = 2, Megatron-style: q/k/v and gate/up
// column-parallel (each rank holds half the heads and half the FFN rows),
// o/down row-parallel followed by an all-reduce of the partial sums, the
// gradient all-reduce of the replicated norm output before each
// column-parallel GEMM, and the vocabulary-parallel embedding (half the
// table, an all-reduce) and cross-entropy (max, partial sums, combine).
// The same @forward llama-compile --tp 2 builds (shard_step.sh runs it).
// micro's one-process module without @prefill / @decode (which llama-shard
// refuses: llama-shard-invalid.mlir):
// RUN: llama-compile --preset micro --batch 2 --seq-len 8 --emit mlir -o %t.full.mlir
// RUN: sed '/func.func @prefill/,/^}$/{/^}$/!d}' %t.full.mlir > %t.mlir
// RUN: llama-opt %t.mlir -llama-shard="tp=2" | FileCheck %s
// RUN: llama-opt %t.mlir -llama-shard="dp=2 tp=2 sp=true" | FileCheck %s --check-prefix=SP

// CHECK: shard.grid @grid(shape = 1x2)
// CHECK-LABEL: func.func @forward(
// CHECK-SAME: %arg0: tensor<32x16xf32> {llama.full_shape = array<i64: 64, 16>, llama.param_name = "model.embed_tokens.weight", llama.shard_dim = 0 : i64}
// CHECK-SAME: %arg1: tensor<8x16xf32> {llama.full_shape = array<i64: 16, 16>, llama.param_name = "model.layers.0.self_attn.q_proj.weight", llama.shard_dim = 0 : i64}
// CHECK-SAME: tensor<16x8xf32> {llama.full_shape = array<i64: 16, 16>, llama.param_name = "model.layers.0.self_attn.o_proj.weight", llama.shard_dim = 1 : i64}
// CHECK-SAME: tensor<16x24xf32> {llama.full_shape = array<i64: 16, 48>, llama.param_name = "model.layers.0.mlp.down_proj.weight", llama.shard_dim = 1 : i64}
// CHECK: llama.embedding %arg0, %{{.*}} {vocab_shard = array<i64: 1, 64>}
// CHECK-NEXT: shard.all_reduce %{{.*}} on @grid grid_axes = [1]
// CHECK: llama.grad_all_reduce %{{.*}} on @grid grid_axes = [1]
// One query head and one KV head per rank in layer 0:
// CHECK: llama.attention {{.*}} : (tensor<2x8x2x4xf32>, tensor<2x8x1x4xf32>, tensor<2x8x1x4xf32>) -> (tensor<2x8x2x4xf32>, tensor<2x2x8xf32>)
// CHECK: llama.matmul {{.*}} : (tensor<2x8x8xf32>, tensor<16x8xf32>) -> tensor<2x8x16xf32>
// CHECK-NEXT: shard.all_reduce
// CHECK: llama.swiglu {{.*}} : (tensor<2x8x24xf32>, tensor<2x8x24xf32>) -> tensor<2x8x24xf32>
// CHECK: llama.logits_max {{.*}} : (tensor<2x8x32xf32>) -> tensor<2x8xf32>
// CHECK-NEXT: shard.all_reduce %{{.*}} on @grid grid_axes = [1] reduction = max
// CHECK: llama.ce_partial_sums
// CHECK: llama.ce_combine

// Sequence parallelism on a dp 2 x tp 2 grid: each data-parallel rank has
// one of the 2 sequences; the residual stream is split along the sequence
// over the tensor-parallel ranks (4 of 8 positions): the embedding's
// all-reduce becomes a reduce-scatter, each norm runs on its quarter and is
// all-gathered before the column-parallel GEMMs, the row-parallel outputs
// are reduce-scattered; the replicated norm weights get their gradient
// all-reduce.
// SP: shard.grid @grid(shape = 2x2)
// SP-LABEL: func.func @forward(
// SP: llama.embedding %arg0, %{{.*}} {vocab_shard = array<i64: 1, 64>} : (tensor<32x16xf32>, tensor<1x8xi32>) -> tensor<1x8x16xf32>
// SP-NEXT: shard.reduce_scatter %{{.*}} on @grid grid_axes = [1] scatter_axis = 1 : tensor<1x8x16xf32> -> tensor<1x4x16xf32>
// SP-NEXT: llama.grad_all_reduce %{{.*}} on @grid grid_axes = [1] {{.*}} : tensor<16xf32>
// SP-NEXT: llama.rms_norm {{.*}} : (tensor<1x4x16xf32>, tensor<16xf32>) -> tensor<1x4x16xf32>
// SP-NEXT: shard.all_gather %{{.*}} on @grid grid_axes = [1] gather_axis = 1 {{.*}} : tensor<1x4x16xf32> -> tensor<1x8x16xf32>
// SP: llama.matmul {{.*}} : (tensor<1x8x8xf32>, tensor<16x8xf32>) -> tensor<1x8x16xf32>
// SP-NEXT: shard.reduce_scatter %{{.*}} scatter_axis = 1 {{.*}} : tensor<1x8x16xf32> -> tensor<1x4x16xf32>
