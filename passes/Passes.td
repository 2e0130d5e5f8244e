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
    Option<"storageBytes", "storage-bytes", "int64_t", /*default=*/"0",
           "bytes per float element in storage (the CUDA target's bf16: 2); values "
           "llama-assign-precision recorded as fp32 (`llama.fp32`, through views and "
           "collectives) take 4. 0: every buffer at its tensor type's size">,
    Option<"collectivesInFlight", "collectives-in-flight", "bool", /*default=*/"false",
           "a collective's input and output stay allocated until the first use of its "
           "result (the CUDA target runs collectives on their own stream)">,
  ];
}

def LlamaAssignPrecision : Pass<"llama-assign-precision", "::mlir::ModuleOp"> {
  let summary = "Mixed precision: the values a bf16 program keeps in fp32";
  let description = [{
    With bf16 storage (the CUDA target's default) activations, their
    gradients and the weights the step reads are bf16; fp32 are the
    statistics by their op's kind (rstd, the norm weight gradient,
    logsumexp, losses, the vocab-parallel cross-entropy's maxima, sums and
    counts, scalar fills) in every function, generation's logits (the
    lm_head GEMM of `@prefill` / `@decode`), and the parameter gradients:
    the values `@train_step` returns after the loss and,
    through the `llama.add`, `llama.sum`, views and collectives that
    assemble them, their partial sums, so a weight gradient is produced and
    summed in fp32 and never rounded to bf16. This pass records that choice:
    each op producing such a value gets `llama.fp32 = array<i64: ...>`, the
    indices of its results kept in fp32; `llama-plan-memory{storage-bytes=2}`
    sizes the buffers from it and the CUDA emitter prints their types from
    it. A parameter gradient produced by an op with no
    fp32 output (only GEMMs, the embedding and norm gradients and fills have
    one) is an error, not a silent rounding.

    Before:
    ```mlir
    %dw = llama.matmul %x, %dy {transpose_lhs = true} : ...
    return %loss, %dw, ...
    ```
    After:
    ```mlir
    %dw = llama.matmul %x, %dy {llama.fp32 = array<i64: 0>, transpose_lhs = true} : ...
    ```
  }];
  let statistics = [
    Statistic<"numFp32Values", "fp32-values", "values kept in fp32">,
  ];
}

def LlamaScheduleCollectives : Pass<"llama-schedule-collectives", "::mlir::ModuleOp"> {
  let summary = "Start each collective as early as its input allows and move independent work under it";
  let description = [{
    For the CUDA target of a partitioned program, whose collectives run on
    their own stream from their op until the first op that needs their
    result. In every function: each `shard` collective moves to right after
    the op producing its input; then the ops between two collectives that
    the second does not depend on move after it, in their order (in a
    backward, the weight-gradient GEMMs of a layer's q/k/v or gate/up
    projections, which program order puts between the input-gradient GEMMs
    whose sum is all-reduced), so they run while it communicates. Ops are
    not moved again past the next collective (that would keep their inputs
    alive to the end of the step). Every rank runs the same order, so
    collectives still match up; the function is verified afterwards (every
    value defined before its uses). Run before the memory plan that keeps
    collectives' buffers in flight.

    Before:
    ```mlir
    %a = llama.matmul %dy, %wq ...       // input gradient
    %g = llama.matmul %x, %dy ...        // weight gradient
    %r = shard.all_reduce %a on @grid grid_axes = [1] ...
    ```
    After:
    ```mlir
    %a = llama.matmul %dy, %wq ...
    %r = shard.all_reduce %a on @grid grid_axes = [1] ...
    %g = llama.matmul %x, %dy ...        // runs under the all-reduce
    ```
  }];
  let statistics = [
    Statistic<"numHoisted", "collectives-hoisted", "collectives moved up to their producer">,
    Statistic<"numMovedUnder", "ops-moved-under", "ops moved after a collective to run under it">,
  ];
  let dependentDialects = ["::mlir::shard::ShardDialect"];
}

def LlamaPlanGradBuckets : Pass<"llama-plan-grad-buckets", "::mlir::ModuleOp"> {
  let summary = "ZeRO-1 gradient buckets of a data-parallel @train_step and where each is ready";
  let description = [{
    With `dp > 1` (the module's `llama.grid`) every data-parallel rank owns
    1/dp of each gradient bucket (runtime/program/partition.h, DpShard), and
    the CUDA runtime reduce-scatters a bucket as soon as the backward has
    written its last gradient (Megatron's overlap_grad_reduce). The buckets
    are contiguous ranges of the flat gradient buffer (parameters in
    argument order) cut from its end, where the backward starts, at
    parameter starts once a bucket holds `bucket-elements` (default
    max(40M, 1M x dp), Megatron's), every bound a multiple of dp x 64
    elements and the last the buffer padded to a multiple of dp. Records
    `llama.grad_buckets` (the bounds) on `@train_step` and
    `llama.grads_ready = array<i64: k, ...>` on the op after which bucket k
    is complete: the last op writing one of its gradients in place (the
    memory plan's `llama.output`) or the return, which copies the others.
    Needs the memory plan.

    After (two parameters of 128 elements, dp 2, bucket-elements 100):
    ```mlir
    func.func @train_step(...) attributes {llama.grad_buckets = array<i64: 0, 128, 256>} {
      %g1 = llama.matmul ... {llama.grads_ready = array<i64: 1>, llama.output = array<i64: 2>}
      %g0 = llama.matmul ... {llama.grads_ready = array<i64: 0>, llama.output = array<i64: 1>}
    ```
  }];
  let options = [
    Option<"bucketElements", "bucket-elements", "int64_t", /*default=*/"0",
           "elements per bucket (0: max(40M, 1M x dp))">,
  ];
  let statistics = [
    Statistic<"numBuckets", "buckets", "gradient buckets">,
  ];
}

#endif // LLAMA_PASSES_TD
