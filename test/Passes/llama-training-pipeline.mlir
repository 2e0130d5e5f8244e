// llama-training-pipeline, the pass pipeline llama-compile runs, on micro
// from llama-opt: the same module as llama-compile's --emit train-mlir (one
// process, and tp = 2 from micro's module without generation), with every
// stage visible: @train_step derived (gradients named by llama.grad_of),
// remat marks, the fused ops, @logits, the memory plan (llama.arena_bytes
// and llama.offset), and for tp = 2 the grid and its collectives.
// RUN: llama-compile --preset micro --batch 2 --seq-len 8 --emit mlir -o %t.mlir
// RUN: llama-opt %t.mlir -llama-training-pipeline="remat=selective fuse=true" -o %t.opt.mlir
// RUN: llama-compile --preset micro --batch 2 --seq-len 8 --emit train-mlir -o %t.compile.mlir
// RUN: diff %t.opt.mlir %t.compile.mlir
// RUN: FileCheck %s --input-file %t.opt.mlir
// RUN: sed '/func.func @prefill/,/^}$/{/^}$/!d}' %t.mlir > %t.fwd.mlir
// RUN: llama-opt %t.fwd.mlir -llama-training-pipeline="tp=2 remat=selective fuse=true" -o %t.tp2.mlir
// RUN: llama-compile --preset micro --batch 2 --seq-len 8 --tp 2 --emit train-mlir -o %t.tp2.compile.mlir
// RUN: diff %t.tp2.mlir %t.tp2.compile.mlir
// RUN: FileCheck %s --check-prefix=TP2 --input-file %t.tp2.mlir

// CHECK-LABEL: func.func @forward(
// CHECK: llama.add_rms_norm
// CHECK: llama.rope_qk
// CHECK-LABEL: func.func @prefill(
// CHECK: llama.rope_at
// CHECK: llama.attention_cached
// CHECK-LABEL: func.func @decode(
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME: {llama.grad_of = "model.embed_tokens.weight"}
// CHECK-SAME: {llama.grad_of = "lm_head.weight"})
// CHECK-SAME: llama.arena_bytes =
// CHECK: llama.remat
// CHECK: llama.cross_entropy_fused
// CHECK: llama.attention_grad
// CHECK: llama.rms_norm_grad_rstd
// CHECK: llama.embedding_grad
// CHECK-LABEL: func.func @logits(
// CHECK-SAME: llama.arena_bytes =

// TP2: shard.grid @grid(shape = 1x2)
// TP2-LABEL: func.func @forward(
// TP2-NOT: func.func @prefill
// TP2-LABEL: func.func @train_step(
// TP2: shard.all_reduce
// TP2: llama.ce_partial_sums_grad
// TP2-NOT: func.func @logits
