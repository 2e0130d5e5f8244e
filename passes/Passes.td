//===- Passes.td - passes of llama-mlir --------------------*- tablegen -*-===//
#ifndef LLAMA_PASSES_TD
#define LLAMA_PASSES_TD

include "mlir/Pass/PassBase.td"

def LlamaShard : Pass<"llama-shard", "::mlir::ModuleOp"> {
  let summary = "Partition @forward for a dp x tp grid (Megatron tensor + sequence parallelism, data parallelism)";
  let description = [{
    Rewrites `@forward` into the program one rank of a `dp x tp` grid runs
    (declared as `shard.grid @grid(shape = DPxTP)`: axis 0 data, axis 1
    tensor parallel). Parameters become their local shards (argument
    attributes `llama.shard_dim` and `llama.full_shape`), activations and
    token ids their local slices, and upstream `shard` collectives appear
    where layouts change:
    - column-parallel q/k/v/gate/up projections read their input through
      `llama.grad_all_reduce` (identity forward, all-reduced gradient);
    - row-parallel o/down projections end in `shard.all_reduce`;
    - the embedding and the output projection are split over the
      vocabulary; the cross-entropy all-reduces row statistics
      (`llama.logits_max`, `llama.ce_partial_sums`) and never gathers logits;
    - with `sp`, norms and residuals are split along the sequence:
      `shard.all_gather` before the column-parallel GEMMs and
      `shard.reduce_scatter` after the row-parallel ones;
    - with `dp > 1`, the batch is split and the loss is normalized by the
      global count of scored tokens (`llama.count_valid` all-reduced over
      axis 0), then all-reduced, so per-rank gradients sum to the
      single-process gradients.
    Run before llama-remat and llama-autodiff: the backward's collectives
    come from the VJPs of these. `dp = tp = 1` leaves the module unchanged.
  }];
  let options = [
    Option<"dp", "dp", "int64_t", /*default=*/"1", "data-parallel ranks">,
    Option<"tp", "tp", "int64_t", /*default=*/"1", "tensor-parallel ranks">,
    Option<"sp", "sp", "bool", /*default=*/"false",
           "sequence parallelism over the tensor-parallel ranks">,
  ];
  let dependentDialects = ["::mlir::shard::ShardDialect"];
}

def LlamaRemat : Pass<"llama-remat", "::mlir::ModuleOp"> {
  let summary = "Decide which forward values are saved for the backward and which are recomputed";
  let description = [{
    Marks every op of `@forward` with `llama.remat = "save"` or
    `"recompute"`. It changes nothing else: `llama-autodiff` honours the
    marks by cloning recompute-marked ops into the backward where their
    values are first needed.

    Policies:
    - `none`: save everything the backward reads.
    - `selective` (LLaMA paper, Megatron): save matmul outputs, the attention
      output and logsumexp, embeddings and the residual stream; recompute
      RMSNorm, RoPE, SwiGLU and views.
    - `full`: inside each transformer layer (ops tagged `llama.layer`) save
      only the values that leave the layer; recompute the rest of the layer in
      its backward. Ops outside layers follow `selective`.
    - `budget=BYTES` (e.g. `budget=12GiB`): the plan with the least
      recomputation (GEMMs and attention costed by FLOPs, memory-bound ops by
      bytes times `balance`) whose @train_step arena fits in BYTES, among
      min-cut plans over a sweep of memory/compute trade-offs and the three
      fixed policies; each candidate is compiled and its arena measured. The
      choice is recorded as `llama.remat_plan` on @forward.

    Before:
    ```mlir
    %n = llama.rms_norm %x, %w {eps = 1.0e-05 : f64, llama.layer = 0 : i64} : ...
    ```
    After (`policy=selective`):
    ```mlir
    %n = llama.rms_norm %x, %w {eps = 1.0e-05 : f64, llama.layer = 0 : i64, llama.remat = "recompute"} : ...
    ```
  }];
  let options = [
    Option<"policy", "policy", "std::string", /*default=*/"\"selective\"",
           "none | selective | full | budget=BYTES">,
    Option<"balance", "balance", "double", /*default=*/"100.0",
           "FLOP per byte used to cost memory-bound recomputation (budget policy)">,
    Option<"fuse", "fuse", "bool", /*default=*/"true",
           "measure budget candidates as llama-fuse will build them">,
  ];
  let statistics = [
    Statistic<"numSaved", "saved-ops", "Ops whose results are saved">,
    Statistic<"numRecomputed", "recomputed-ops", "Ops marked for recomputation">,
  ];
}

def LlamaAutodiff : Pass<"llama-autodiff", "::mlir::ModuleOp"> {
  let summary = "Derive @train_step (loss and every parameter gradient) from @forward";
  let description = [{
    Builds `func.func @train_step` with the arguments of `@forward` and the
    results `(loss, grad_0, ..., grad_n)`, one gradient per float argument
    (parameter), each carrying `llama.grad_of = "<param name>"`. The body is
    the forward program followed by the reverse sweep: every op's
    `VJPOpInterface` builds its operands' cotangents; fan-out is summed with
    `llama.add`. Forward values the backward reads come from the forward
    when saved and from clones placed at their first backward use when the
    op is marked `llama.remat = "recompute"` (clones carry
    `llama.recomputed`). Every op built here carries `llama.backward`.
  }];
  let statistics = [
    Statistic<"numBackwardOps", "backward-ops", "Ops built for the backward">,
    Statistic<"numRecomputedOps", "recomputed-ops", "Forward ops cloned for recomputation">,
  ];
}

def LlamaDeriveLogits : Pass<"llama-derive-logits", "::mlir::ModuleOp"> {
  let summary = "Derive @logits (forward without the loss) from @forward for generation";
  let description = [{
    Builds `func.func @logits(params..., tokens) -> logits` from `@forward`:
    the program up to the operand of its `llama.cross_entropy`, with the
    batch dimension set to `batch` (every op's result type is re-derived;
    reshapes must keep the leading batch dimension).
  }];
  let options = [
    Option<"batch", "batch", "int64_t", /*default=*/"1", "batch of @logits">,
  ];
}

def LlamaFuse : Pass<"llama-fuse", "::mlir::ModuleOp"> {
  let summary = "Fuse memory-bound chains into single-kernel ops";
  let description = [{
    Runs after autodiff (the fused ops are not differentiable) and before
    the memory plan. In every function, in this order:
    - `llama.cross_entropy` and the `llama.cross_entropy_grad` of the same
      logits seeded by a constant (`llama.fill`) become one
      `llama.cross_entropy_fused` (loss and gradient in one read of the
      logits; the gradient may overwrite them);
    - `llama.add` feeding `llama.rms_norm` becomes `llama.add_rms_norm`
      (the residual stream and the normalized output in one pass, row rstd
      kept); a norm whose backward is in the function keeps its rstd too
      (`llama.rms_norm_rstd`);
    - `llama.rms_norm_grad` becomes `llama.rms_norm_grad_rstd`, reading the
      saved rstd, and absorbs the `llama.add` that accumulates its input
      gradient into the residual stream's gradient;
    - the two `llama.rope` (or `llama.rope_grad`) of one attention become one
      `llama.rope_qk`;
    - chains of `llama.add` whose inner results have no other use become one
      `llama.sum`.
    GEMMs, attention, SwiGLU and collectives are left as they are.
  }];
  let statistics = [
    Statistic<"numCrossEntropy", "cross-entropy", "cross_entropy + grad fused">,
    Statistic<"numAddNorm", "add-rms-norm", "add + rms_norm fused">,
    Statistic<"numNormGrad", "rms-norm-grad", "rms_norm_grad reading a saved rstd">,
    Statistic<"numNormGradAccumulate", "rms-norm-grad-accumulate", "gradient adds absorbed by a norm backward">,
    Statistic<"numRope", "rope-qk", "rope pairs fused">,
    Statistic<"numSum", "sum", "add chains fused">,
  ];
}

def LlamaPlanMemory : Pass<"llama-plan-memory", "::mlir::ModuleOp"> {
  let summary = "Static memory plan: one arena per function, liveness-based offsets";
  let description = [{
    For every function (`@forward` becomes the evaluation entry point, and
    `@train_step`, `@logits`), gives each tensor produced in it a byte offset in one arena (`llama.offset` on the op, an array with
    one entry per result; -1 for results that are views of their operand).
    Buffers whose lifetimes (definition to last use, through views) do not
    overlap share memory; placement is first fit in decreasing size order. Results
    returned by the function are written straight to the caller's output
    buffers (`llama.output` = result index) instead of the arena when
    possible. Sets `llama.arena_bytes` and `llama.live_lower_bound_bytes`
    (the peak of the sum of live buffers, which no placement can beat) on the
    function.
  }];
  let options = [
    Option<"alignment", "alignment", "int64_t", /*default=*/"64", "buffer alignment in bytes">,
  ];
}

#endif // LLAMA_PASSES_TD
