// The device side of a CUDA training binary (runtime/program/device_session.h;
// the interface the generated source calls is runtime/cuda/session.h).
// Compiled once for each storage type (act_t: float, __nv_bfloat16) into
// libllamart_cuda by nvcc, and as C++ with -DLLAMA_CUDA_EMULATE into
// libllamart_cuda_emu (session_emulated.cpp), where every kernel runs on the
// CPU through emulate.h and plain host memory stands in for device memory.
//
// One session owns, in device memory for the whole run: the flat fp32
// parameters (the master weights), gradients and AdamW moments
// (program.param_numel each), with bf16 storage (act_t) a bf16 copy of the
// parameters that the step reads and AdamW rewrites with every update, a
// second gradient buffer for gradient accumulation (allocated on first use),
// one arena shared by the train and eval steps (the larger of the two
// plans), the kernels' workspace, token/target buffers and the cuBLASLt
// workspace. Nothing is allocated after the first step.
//
// The train step is captured in a CUDA Graph at its second call (the first
// runs eagerly, so cuBLASLt plans every GEMM shape outside the capture) and
// replayed from then on; one graph per destination (overwrite, accumulate)
// and, on a dp grid, per whether it reduce-scatters the gradient buckets
// (the update's last micro-step) and whether it all-gathers the parameters
// the last update left stale (the first micro-step after one).
//
// Determinism: every generated kernel sums in a fixed order; the gradient
// norm below reduces fixed chunks in fp64 and the chunk partials in index
// order; AdamW is elementwise. cuBLASLt runs the same algorithm for a shape
// on every call (LtGemm plans each shape once), so a session's results
// repeat bit for bit.
#include "runtime/cuda/session.h"

#include "runtime/cuda/kernels/common.cuh"
#include "runtime/cuda/kernels/optimizer.cuh"
// ABFT checks of the GEMMs: the state the session hands the generated GEMM
// calls (llama_abft::state).
#include "runtime/cuda/gemm_check.inl"

#include "runtime/comm/comm.h"
#include "runtime/cuda/bytes_text.h"
#include "runtime/cuda/layout.h"
#include "runtime/program/device_session.h"
#include "runtime/program/partition.h"
#include "runtime/program/program.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <type_traits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef LLAMA_CUDA_EMULATE
#define LLAMA_CUDA_CALL(call) (void)(call)
#else
#include "runtime/cuda/check.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/graph_replay.h"
#include "runtime/cuda/lt_gemm.h"
#define LLAMA_CUDA_CALL(call) LLAMART_CUDA_CHECK(call)
#endif

namespace llamart::cuda {


template <typename act_t>
class CudaSession final : public DeviceSession,
                          private llama_coll::GradBuckets,
                          private llama_coll::ParamBuckets {
public:
  CudaSession(const ProgramInfo &program, const StepProgram<act_t> &step)
      : program_(program), step_(step), n_(program.param_numel),
        dp_(step.partitioned ? llamart::comm::size(llamart::comm::Axis::DP) : 1),
        tp_rank_(step.partitioned ? llamart::comm::rank(llamart::comm::Axis::TP) : 0),
        shard_(dp_shard(program.param_numel, dp_,
                               step.partitioned ? llamart::comm::rank(llamart::comm::Axis::DP)
                                                : 0,
                               grad_bucket_bounds(program))),
        pn_(shard_.padded_numel), sn_(shard_.size) {
#ifdef LLAMA_CUDA_EMULATE
    device_ = "CUDA emulated on the CPU (LLAMA_CUDA_EMULATE)";
#else
    device_ = open_device(/*local_rank=*/step.partitioned,
                          step.partitioned ? llamart::comm::rank() : 0);
    size_t total = 0;
    LLAMA_CUDA_CALL(cudaMemGetInfo(&free_at_open_, &total));
    LLAMA_CUDA_CALL(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    gemm_ = new LtGemm();
#endif
    // AdamW's chunk table: the parameters' parts inside this rank's ZeRO-1
    // shard (its piece of every gradient bucket; the whole buffer on one
    // device), in shard and in flat coordinates.
    std::vector<llk::optim::Chunk> chunks, norm_chunks;
    auto split = [](std::vector<llk::optim::Chunk> &out, int64_t begin,
                    int64_t end, int32_t decays, int64_t flat) {
      for (int64_t b = begin; b < end; b += llk::optim::kChunk)
        out.push_back(
            {b, std::min<int64_t>(llk::optim::kChunk, end - b), decays, flat + b - begin});
    };
    for (const DpShard::Piece &piece : shard_.pieces())
      for (int32_t p = 0; p < program.num_params; ++p) {
        const ParamInfo &info = program.params[p];
        const int64_t begin = std::max(info.offset, piece.flat),
                      end = std::min(info.offset + info.numel, piece.flat_end());
        if (begin < end)
          split(chunks, piece.shard + begin - piece.flat, piece.shard + end - piece.flat,
                info.rank >= 2 ? 1 : 0, begin);
      }
    // The gradient norm's: every element of the model once over the grid
    // (partition.h: norm_ranges), or the whole buffer on one device.
    if (step.partitioned)
      for (const auto &[begin, end] : norm_ranges(program, shard_, tp_rank_))
        split(norm_chunks, begin, end, 0, 0);
    else
      split(norm_chunks, 0, n_, 0, 0);
    num_chunks_ = int64_t(chunks.size());
    norm_blocks_ = int64_t(norm_chunks.size());

    // Everything in one device allocation, laid out by layout.h (the
    // function --report prints from). Parameters and gradients span the
    // padded local buffer (zero past param_numel), the moments this rank's
    // shard. bf16 storage on a dp grid keeps the fp32 master weights of the
    // shard alone (Megatron's distributed optimizer): the step reads the
    // bf16 copy, AdamW updates the shard's masters and the updated bf16
    // shards are all-gathered. Otherwise the masters span the local buffer.
    SessionSizes sizes;
    sizes.param_numel = program.param_numel;
    sizes.dp = dp_;
    sizes.num_params = program.num_params;
    sizes.buckets = shard_.buckets();
    sizes.act_bytes = int(sizeof(act_t));
    sizes.train_arena = int64_t(step.train_arena_bytes);
    sizes.eval_arena = int64_t(step.eval_arena_bytes);
    sizes.workspace = int64_t(step.workspace_bytes);
    sizes.tokens = program.batch * program.seq_len;
    sizes.gemm_max_dim = step.gemm_max_dim;
    sizes.collective_staging = step.partitioned ? int64_t(step.collective_staging_bytes) : 0;
    layout_ = session_layout(sizes);
    if (layout_.padded_numel != pn_ || layout_.shard_numel != sn_ ||
        layout_.sharded_masters != sharded_masters_)
      throw std::logic_error("the session's ZeRO-1 shard differs from its memory layout");
    if (int64_t(chunks.size()) > layout_.chunk_capacity ||
        int64_t(norm_chunks.size()) > layout_.chunk_capacity)
      throw std::logic_error("the session's chunk tables outgrow their layout (" +
                             std::to_string(chunks.size()) + " and " +
                             std::to_string(norm_chunks.size()) + " of " +
                             std::to_string(layout_.chunk_capacity) + ")");
    arena_bytes_ = size_t(layout_.arena_bytes);
    LLAMA_CUDA_CALL(cudaMalloc(&block_, size_t(layout_.block_bytes)));
    LLAMA_CUDA_CALL(cudaMemset(block_, 0, size_t(layout_.block_bytes)));
    char *const base = static_cast<char *>(block_);
    auto at = [&](auto *&ptr, int64_t offset) {
      ptr = offset < 0 ? nullptr
                       : reinterpret_cast<std::remove_reference_t<decltype(ptr)>>(base + offset);
    };
    at(params_, layout_.params);
    at(copy_, layout_.copy);
    at(grads_, layout_.grads);
    at(grad_shard_, layout_.grad_shard);
    at(m_, layout_.m);
    at(v_, layout_.v);
    at(arena_, layout_.arena);
    at(workspace_, layout_.workspace);
    at(tokens_, layout_.tokens);
    at(targets_, layout_.targets);
    at(loss_, layout_.loss);
    at(chunks_, layout_.chunks);
    at(norm_chunks_, layout_.norm_chunks);
    at(partial_, layout_.partial);
    at(abft_.r, layout_.abft_r);
    at(abft_.w, layout_.abft_w);
    at(abft_.wa, layout_.abft_wa);
    at(abft_.t, layout_.abft_t);
    at(abft_.tabs, layout_.abft_tabs);
    at(abft_.failures, layout_.abft_failures);
    abft_.capacity = layout_.abft_capacity;
    bytes_params_ = layout_.params_bytes;
    bytes_grads_ = layout_.grads_bytes;
    bytes_optimizer_ = layout_.optimizer_bytes;
    bytes_arena_ = layout_.arena_block_bytes;
    bytes_work_ = layout_.work_bytes;
    LLAMA_CUDA_CALL(cudaMemcpy(chunks_, chunks.data(), chunks.size() * sizeof(chunks[0]),
                               cudaMemcpyHostToDevice));
    LLAMA_CUDA_CALL(cudaMemcpy(norm_chunks_, norm_chunks.data(),
                               norm_chunks.size() * sizeof(chunks[0]), cudaMemcpyHostToDevice));
    if (step.partitioned) {
      if (!step.make_communicator)
        throw std::logic_error("a partitioned program without collectives");
      comm_ = step.make_communicator(step.collective_staging_bytes);
      llama_coll::active = comm_.get();
    }
    std::vector<double> r(size_t(abft_.capacity));
    for (size_t j = 0; j < r.size(); ++j)
      r[j] = llama_abft::weight(j);
    LLAMA_CUDA_CALL(cudaMemcpy(abft_.r, r.data(), r.size() * sizeof(double),
                               cudaMemcpyHostToDevice));
  }

  ~CudaSession() override {
    if (llama_abft::state == &abft_)
      llama_abft::state = nullptr;
    if (llama_coll::active == comm_.get())
      llama_coll::active = nullptr;
    comm_.reset();
#ifndef LLAMA_CUDA_EMULATE
    delete gemm_;
    if (stream_)
      cudaStreamDestroy(stream_);
#endif
    cudaFree(block_);
    cudaFree(grads2_);
  }

  std::string describe() const override {
    const int64_t held = held_bytes();
    std::string s = "device: " + device_ + " | " +
                    (kCopy ? "bf16 storage, fp32 master weights" : "fp32 storage") +
                    " | device memory held: params " +
                    bytes_text(bytes_params_) + ", grads " + bytes_text(bytes_grads_) +
                    ", AdamW moments " + bytes_text(bytes_optimizer_) + ", arena " +
                    bytes_text(bytes_arena_) + ", workspaces " +
                    bytes_text(bytes_work_ + gemm_workspace()) + " = " + bytes_text(held);
#ifndef LLAMA_CUDA_EMULATE
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
      s += " (device in use: " + bytes_text(int64_t(total_b - free_b)) + " of " +
           bytes_text(int64_t(total_b)) + ")";
#endif
    return s;
  }

  bool shards_params() const override { return sharded_masters_; }

  // The storage type's value of x, on the host (round to nearest even, as
  // to_storage_k on the device).
  static void host_round(float x, float &out) { out = x; }
  static void host_round(float x, __nv_bfloat16 &out) { out = __float2bfloat16(x); }

  void upload(const float *params, const float *m, const float *v) override {
    params_stale_ = false; // every rank's whole local buffer, from the host
    const size_t bytes = size_t(n_) * sizeof(float), sbytes = size_t(sn_) * sizeof(float);
    LLAMA_CUDA_CALL(cudaMemcpy(m_, m, sbytes, cudaMemcpyHostToDevice));
    LLAMA_CUDA_CALL(cudaMemcpy(v_, v, sbytes, cudaMemcpyHostToDevice));
    if (sharded_masters_) {
      // The shard's masters, and the bf16 copy of the whole local buffer
      // rounded here (as to_storage_k rounds on the device).
      LLAMA_CUDA_CALL(cudaMemset(params_, 0, sbytes));
      for (const DpShard::Piece &p : shard_.pieces())
        if (const int64_t own = std::min(p.flat_end(), n_) - p.flat; own > 0)
          LLAMA_CUDA_CALL(cudaMemcpy(params_ + p.shard, params + p.flat,
                                     size_t(own) * sizeof(float), cudaMemcpyHostToDevice));
      std::vector<act_t> copy(static_cast<size_t>(pn_));
      for (int64_t i = 0; i < pn_; ++i)
        host_round(i < n_ ? params[i] : 0.0f, copy[size_t(i)]);
      LLAMA_CUDA_CALL(cudaMemcpy(copy_, copy.data(), copy.size() * sizeof(act_t),
                                 cudaMemcpyHostToDevice));
      return;
    }
    LLAMA_CUDA_CALL(cudaMemcpy(params_, params, bytes, cudaMemcpyHostToDevice));
    if (kCopy) {
      auto *convert = &llk::optim::to_storage_k<act_t>;
      LLAMA_LAUNCH(convert, dim3(blocks(pn_)),
                   dim3(llk::optim::kThreads), stream_, params_, copy_, pn_);
      check_launch();
      sync();
    }
  }

  void download(float *params, float *m, float *v) override {
    if (!sharded_masters_)
      gather_params(); // the whole local buffer is read below
    sync();
    const size_t bytes = size_t(n_) * sizeof(float), sbytes = size_t(sn_) * sizeof(float);
    if (sharded_masters_) {
      for (const DpShard::Piece &p : shard_.pieces())
        if (const int64_t own = std::min(p.flat_end(), n_) - p.flat; own > 0)
          LLAMA_CUDA_CALL(cudaMemcpy(params + p.flat, params_ + p.shard,
                                     size_t(own) * sizeof(float), cudaMemcpyDeviceToHost));
    } else {
      LLAMA_CUDA_CALL(cudaMemcpy(params, params_, bytes, cudaMemcpyDeviceToHost));
    }
    LLAMA_CUDA_CALL(cudaMemcpy(m, m_, sbytes, cudaMemcpyDeviceToHost));
    LLAMA_CUDA_CALL(cudaMemcpy(v, v_, sbytes, cudaMemcpyDeviceToHost));
  }

  double train_step(const int32_t *tokens, const int32_t *targets, bool accumulate,
                    bool last) override {
    put_batch(tokens, targets);
    if (accumulate && !grads2_) {
      // Gradient accumulation's second buffer: the one allocation after
      // the session opened, made by the first accumulating micro-step.
      const size_t bytes = size_t(n_) * sizeof(float);
      void *p = nullptr;
      LLAMA_CUDA_CALL(cudaMalloc(&p, bytes));
      grads2_ = static_cast<float *>(p);
      bytes_grads_ += int64_t(bytes);
    }
    // On a dp grid the update's last micro-step reduce-scatters the
    // gradients bucket by bucket as the backward completes them (ready()
    // below, called from the step); the graph waits for the last bucket.
    const bool reduce = last && dp_ > 1;
    // The first micro-step after an update gathers the updated parameters
    // bucket by bucket under its forward (params_gather/params_needed).
    if (params_stale_ && accumulate)
      gather_params(); // (the trainer's first micro-step never accumulates)
    const bool gather = params_stale_;
    const int variant = (accumulate ? 1 : 0) + (reduce ? 2 : 0) + (gather ? 4 : 0);
    auto body = [&] {
      float *dst = accumulate ? grads2_ : grads_;
      accumulating_ = accumulate;
      bucket_done_.assign(size_t(shard_.buckets()), false);
      last_bucket_ = -1;
      gathers_started_.assign(size_t(shard_.buckets()), false);
      gathers_waited_.assign(size_t(shard_.buckets()), false);
      llama_coll::grad_buckets = reduce ? this : nullptr;
      llama_coll::param_buckets = gather ? this : nullptr;
      step_.train_step(weights(), dst, tokens_, targets_, arena_, workspace_, loss_,
                       gemm_, stream_);
      llama_coll::grad_buckets = nullptr;
      llama_coll::param_buckets = nullptr;
      if (gather)
        for (int k = 0; k < shard_.buckets(); ++k)
          if (!gathers_waited_[size_t(k)])
            throw std::logic_error("the train step never waited for parameter bucket " +
                                   std::to_string(k) + "'s all-gather");
      if (reduce) {
        for (int k = 0; k < shard_.buckets(); ++k)
          if (!bucket_done_[size_t(k)])
            throw std::logic_error("the train step never marked gradient bucket " +
                                   std::to_string(k) + " ready");
        comm_->wait(kReduceBucket + last_bucket_, stream_);
      } else if (accumulate) {
        LLAMA_LAUNCH(llk::optim::accumulate_k, dim3(blocks(n_)),
                     dim3(llk::optim::kThreads), stream_, grads_, grads2_, n_);
      }
    };
    run_graph(variant, body);
    shard_current_ = reduce;
    params_stale_ = false;
    return read_loss();
  }

  void read_grads(float *grads) override {
    sync();
    LLAMA_CUDA_CALL(cudaMemcpy(grads, grads_, size_t(n_) * sizeof(float),
                               cudaMemcpyDeviceToHost));
  }
  void write_grads(const float *grads) override {
    sync();
    shard_current_ = false; // the reduced shard is of the gradients replaced here
    LLAMA_CUDA_CALL(cudaMemcpy(grads_, grads, size_t(n_) * sizeof(float),
                               cudaMemcpyHostToDevice));
  }

  double grad_norm(double scale) override {
    if (dp_ > 1 && !shard_current_) {
      // ZeRO-1: the gradients summed over dp into this rank's shard, here
      // when the last train step did not (write_grads replaced them).
      for (int k = 0; k < shard_.buckets(); ++k)
        start_bucket(k, stream_);
      comm_->wait(kReduceBucket + shard_.buckets() - 1, stream_);
      shard_current_ = true;
    }
    if (norm_blocks_ > 0) {
      LLAMA_LAUNCH(llk::optim::sumsq_k, dim3(unsigned(norm_blocks_)),
                   dim3(llk::optim::kThreads), stream_, norm_chunks_, shard_grads(),
                   partial_);
      check_launch();
    }
    LLAMA_LAUNCH(llk::optim::sum_k, dim3(1), dim3(llk::optim::kThreads),
                 stream_, partial_, norm_blocks_, partial_ + norm_blocks_);
    check_launch();
    double total = 0.0;
    LLAMA_CUDA_CALL(cudaMemcpyAsync(&total, partial_ + norm_blocks_, sizeof total,
                                    cudaMemcpyDeviceToHost, stream_));
    sync();
    if (comm_) // each rank's share of the model's elements
      llamart::comm::all_reduce(&total, 1, llamart::comm::ReduceOp::Sum,
                                llamart::comm::Axis::World, "gradient norm");
    return std::sqrt(total) * std::fabs(scale);
  }

  void adamw(double beta1, double beta2, double eps, double weight_decay,
             int64_t step, double lr, double grad_scale) override {
    if (step < 1)
      throw std::runtime_error("adamw: step must be >= 1");
    llk::optim::AdamWArgs a;
    a.beta1 = beta1;
    a.beta2 = beta2;
    a.eps = eps;
    a.step_size = lr / (1.0 - std::pow(beta1, double(step)));
    a.bias2_sqrt = std::sqrt(1.0 - std::pow(beta2, double(step)));
    a.decay_factor = 1.0 - lr * weight_decay;
    a.grad_scale = grad_scale;
    if (num_chunks_ > 0) {
      auto *update = &llk::optim::adamw_k<act_t>;
      LLAMA_LAUNCH(update, dim3(unsigned(num_chunks_)),
                   dim3(llk::optim::kThreads), stream_, chunks_, a,
                   params_, sharded_masters_, shard_grads(), m_, v_, copy_);
      check_launch();
    }
    // On a dp grid every rank updated its own pieces of each bucket; the
    // other ranks' pieces arrive by all-gather in the next train step, under
    // its forward, or before anything else reads the weights.
    params_stale_ = dp_ > 1;
  }

  double eval_loss(const int32_t *tokens, const int32_t *targets) override {
    gather_params();
    put_batch(tokens, targets);
    step_.eval_loss(weights(), tokens_, targets_, arena_, workspace_, loss_, gemm_,
                    stream_);
    check_launch();
    return read_loss();
  }

  DeviceMemoryProbe probe_memory(const int32_t *tokens,
                                 const int32_t *targets) override {
    DeviceMemoryProbe m;
    m.train_arena_bytes = int64_t(step_.train_arena_bytes);
    m.eval_arena_bytes = int64_t(step_.eval_arena_bytes);
    std::vector<unsigned char> host(arena_bytes_ + kGuardBytes);
    auto watch = [&](unsigned char pattern, size_t planned, const char *what) {
      sync();
      LLAMA_CUDA_CALL(cudaMemcpy(host.data(), arena_, host.size(), cudaMemcpyDeviceToHost));
      for (size_t i = arena_bytes_; i < host.size(); ++i)
        if (host[i] != pattern)
          throw std::runtime_error(std::string("memcheck: a kernel wrote past the end of "
                                               "the device arena in the ") +
                                   what + " (byte " + std::to_string(i - arena_bytes_) +
                                   " beyond its " + std::to_string(arena_bytes_) + ")");
      size_t used = 0;
      for (size_t i = arena_bytes_; i > 0; --i)
        if (host[i - 1] != pattern) {
          used = i;
          break;
        }
      if (used > planned)
        throw std::runtime_error(std::string("memcheck: the ") + what + " used " +
                                 std::to_string(used) + " arena bytes of " +
                                 std::to_string(planned) + " planned");
      return int64_t(used);
    };
    for (unsigned char pattern : {0xA5, 0x5A}) {
      LLAMA_CUDA_CALL(cudaMemset(arena_, pattern, arena_bytes_ + kGuardBytes));
      train_step(tokens, targets, false, /*last=*/false);
      m.train_arena_used_bytes =
          std::max(m.train_arena_used_bytes, watch(pattern, step_.train_arena_bytes, "train step"));
      LLAMA_CUDA_CALL(cudaMemset(arena_, pattern, arena_bytes_ + kGuardBytes));
      eval_loss(tokens, targets);
      m.eval_arena_used_bytes =
          std::max(m.eval_arena_used_bytes, watch(pattern, step_.eval_arena_bytes, "evaluation"));
    }
    m.held_bytes = held_bytes();
#ifndef LLAMA_CUDA_EMULATE
    size_t free_now = 0, total = 0;
    LLAMA_CUDA_CALL(cudaMemGetInfo(&free_now, &total));
    m.device_used_bytes = int64_t(free_at_open_) - int64_t(free_now);
#endif
    return m;
  }

  void gemm_check_begin(bool verify, bool inject, uint64_t seed) override {
    sync();
    abft_.verify = verify;
    abft_.inject_at = inject && step_.gemm_count > 0
                          ? int64_t((seed >> 17) % uint64_t(step_.gemm_count))
                          : -1;
    abft_.inject_seed = seed;
    abft_.delivered = false;
    abft_.gemms = abft_.checked = 0;
    LLAMA_CUDA_CALL(cudaMemset(abft_.failures, 0, sizeof(unsigned)));
    llama_abft::state = (verify || inject) ? &abft_ : nullptr;
  }

  DeviceGemmCheck gemm_check_end() override {
    sync();
    unsigned failures = 0;
    LLAMA_CUDA_CALL(cudaMemcpy(&failures, abft_.failures, sizeof failures,
                               cudaMemcpyDeviceToHost));
    DeviceGemmCheck r;
    r.checked = abft_.checked;
    r.failed = int64_t(failures);
    r.bitflip_delivered = abft_.delivered;
    abft_.verify = false;
    abft_.inject_at = -1;
    llama_abft::state = nullptr;
    return r;
  }

private:
  // The layout's block and staging (what --report prints), gradient
  // accumulation's buffer once allocated, cuBLASLt's workspace.
  int64_t held_bytes() const {
    return layout_.total() + (grads2_ ? n_ * int64_t(sizeof(float)) : 0) + gemm_workspace();
  }

  // bf16 storage keeps a copy of the weights in the storage type.
  static constexpr bool kCopy = sizeof(act_t) != sizeof(float);
  const act_t *weights() const {
    // (The cast is the identity where it is taken: fp32 storage.)
    return kCopy ? copy_ : reinterpret_cast<const act_t *>(params_);
  }
  static unsigned blocks(int64_t n) {
    return unsigned((n + llk::optim::kThreads - 1) / llk::optim::kThreads);
  }

  int64_t gemm_workspace() const {
#ifdef LLAMA_CUDA_EMULATE
    return 0;
#else
    return int64_t(LtGemm::kWorkspaceBytes);
#endif
  }

  void put_batch(const int32_t *tokens, const int32_t *targets) {
    const size_t bytes = size_t(program_.batch * program_.seq_len) * sizeof(int32_t);
    LLAMA_CUDA_CALL(cudaMemcpyAsync(tokens_, tokens, bytes, cudaMemcpyHostToDevice, stream_));
    LLAMA_CUDA_CALL(cudaMemcpyAsync(targets_, targets, bytes, cudaMemcpyHostToDevice, stream_));
  }

  double read_loss() {
    float loss = 0.0f;
    LLAMA_CUDA_CALL(cudaMemcpyAsync(&loss, loss_, sizeof loss, cudaMemcpyDeviceToHost,
                                    stream_));
    sync();
    return double(loss);
  }

  // Runs `body` (launches on stream_): eagerly at its first call, then
  // captured once into a CUDA Graph that every later call replays.
  template <typename F> void run_graph(int variant, F body) {
#ifdef LLAMA_CUDA_EMULATE
    (void)variant;
    body();
#else
    // ABFT checks and injections are host decisions per GEMM call: eager.
    if (llama_abft::state) {
      body();
      check_launch();
      return;
    }
    graphs_[variant].run(stream_, body);
#endif
  }

  void check_launch() {
#ifndef LLAMA_CUDA_EMULATE
    LLAMART_CUDA_CHECK_LAUNCH();
#endif
  }
  void sync() {
    if (comm_) // with a deadline: a peer that never joins a collective ends the job
      comm_->synchronize(stream_);
    else
      LLAMA_CUDA_CALL(cudaStreamSynchronize(stream_));
  }

  // The gradients AdamW and the norm read: this rank's reduced shard, or
  // the local buffer itself when there is no dp axis.
  const float *shard_grads() const { return dp_ > 1 ? grad_shard_ : grads_; }

  // Bucket k's reduce-scatter over dp: grads_[b_k, b_k+1) summed into this
  // rank's piece of the shard, on the gradient lane.
  void start_bucket(int k, cudaStream_t stream) {
    const DpShard::Piece p = shard_.piece(k);
    comm_->start({kReduceBucket + k, llama_coll::Kind::ReduceScatter,
                  grads_ + shard_.bounds[size_t(k)], grad_shard_ + p.shard, 1, p.count, 4, 0,
                  "gradient reduce-scatter (ZeRO-1 bucket)", /*lane=*/1},
                 stream);
    last_bucket_ = k;
  }

  // llama_coll::GradBuckets: the step has written bucket k's gradients
  // (installed only while the update's last micro-step runs on a dp grid).
  // Accumulating, the micro-batch's bucket is added to the sum first.
  void ready(int k, cudaStream_t stream) override {
    if (k < 0 || k >= shard_.buckets() || bucket_done_[size_t(k)])
      throw std::logic_error("the train step marked gradient bucket " + std::to_string(k) +
                             " ready twice or out of range");
    bucket_done_[size_t(k)] = true;
    if (accumulating_) {
      const int64_t b = shard_.bounds[size_t(k)],
                    e = std::min(shard_.bounds[size_t(k) + 1], n_);
      if (e > b)
        LLAMA_LAUNCH(llk::optim::accumulate_k, dim3(blocks(e - b)),
                     dim3(llk::optim::kThreads), stream, grads_ + b, grads2_ + b, e - b);
    }
    start_bucket(k, stream);
  }

  // ZeRO-1's parameter all-gather of bucket k over dp, in place: every
  // rank's updated piece into every rank's weights the step reads (NCCL's
  // in-place all-gather: the input is this rank's block of the output).
  // With bf16 storage on a dp grid that is the bf16 copy (the fp32 masters
  // exist for the shard alone): half the bytes of gathering fp32.
  void start_gather(int k, cudaStream_t stream, int lane) {
    const DpShard::Piece p = shard_.piece(k);
    if (sharded_masters_)
      comm_->start({kGatherParams + k, llama_coll::Kind::AllGather, copy_ + p.flat,
                    copy_ + shard_.bounds[size_t(k)], 1, p.count, int(sizeof(act_t)), 0,
                    "bf16 parameter all-gather (ZeRO-1 bucket)", lane},
                   stream);
    else
      comm_->start({kGatherParams + k, llama_coll::Kind::AllGather, params_ + p.flat,
                    params_ + shard_.bounds[size_t(k)], 1, p.count, 4, 0,
                    "parameter all-gather (ZeRO-1 bucket)", lane},
                   stream);
  }

  // Every bucket's gather now, where the weights are read outside a train
  // step (evaluation, a save's download) after an update.
  void gather_params() {
    if (!params_stale_)
      return;
    for (int k = 0; k < shard_.buckets(); ++k)
      start_gather(k, stream_, 0);
    comm_->wait(kGatherParams + shard_.buckets() - 1, stream_);
    params_stale_ = false;
  }

  // llama_coll::ParamBuckets (installed for the first micro-step after an
  // update): the step starts bucket k's gather on the gradient buckets'
  // lane, then waits for it before the first op reading its parameters.
  void gather(int k, cudaStream_t stream) override {
    if (k < 0 || k >= shard_.buckets() || gathers_started_[size_t(k)])
      throw std::logic_error("the train step started parameter bucket " + std::to_string(k) +
                             "'s all-gather twice or out of range");
    gathers_started_[size_t(k)] = true;
    start_gather(k, stream, 1);
  }
  void needed(int k, cudaStream_t stream) override {
    if (k < 0 || k >= shard_.buckets() || !gathers_started_[size_t(k)] ||
        gathers_waited_[size_t(k)])
      throw std::logic_error("the train step waited for parameter bucket " +
                             std::to_string(k) + " out of order");
    gathers_waited_[size_t(k)] = true;
    comm_->wait(kGatherParams + k, stream);
  }


  const ProgramInfo &program_;
  const StepProgram<act_t> step_;
  const int64_t n_;
  // The grid (1 x 1 unpartitioned): ZeRO-1 shards the moments over dp.
  const int dp_, tp_rank_;
  const DpShard shard_;
  const int64_t pn_, sn_; // padded local numel, shard numel
  const bool sharded_masters_ = kCopy && dp_ > 1;
  static_assert(llk::optim::kChunk == SessionLayout::kSessionChunk &&
                    sizeof(llk::optim::Chunk) == SessionLayout::kChunkEntryBytes,
                "layout.h sizes the chunk tables");
  // The session's own collectives, numbered after any program's (one per
  // gradient bucket each).
  static constexpr int kReduceBucket = 1 << 24, kGatherParams = 1 << 25;
  // The gradient buckets' state: the last micro-step's reduce-scatters left
  // grad_shard_ current (shard_current_); within a step's body, whether it
  // accumulates, the buckets marked ready, the last started.
  bool shard_current_ = false, accumulating_ = false;
  std::vector<bool> bucket_done_;
  // After an update on a dp grid, the other ranks' pieces of the weights are
  // stale until gathered (params_stale_); within a step's body, the
  // buckets whose gathers it started and waited for.
  bool params_stale_ = false;
  std::vector<bool> gathers_started_, gathers_waited_;
  int last_bucket_ = -1;
  std::unique_ptr<llama_coll::Communicator> comm_;
  std::string device_;
  cudaStream_t stream_ = nullptr;
  LtGemm *gemm_ = nullptr; // owned (an incomplete type under emulation)
  static constexpr size_t kGuardBytes = size_t(SessionLayout::kGuardBytes);
  SessionLayout layout_;
  void *block_ = nullptr;
  size_t arena_bytes_ = 0, free_at_open_ = 0;
  act_t *copy_ = nullptr; // bf16 programs: the weights the step reads
  float *params_ = nullptr, *grads_ = nullptr, *grads2_ = nullptr, *m_ = nullptr,
        *v_ = nullptr, *loss_ = nullptr, *grad_shard_ = nullptr;
  char *arena_ = nullptr, *workspace_ = nullptr;
  int32_t *tokens_ = nullptr, *targets_ = nullptr;
  llk::optim::Chunk *chunks_ = nullptr, *norm_chunks_ = nullptr;
  int64_t num_chunks_ = 0, norm_blocks_ = 0;
  double *partial_ = nullptr;
  llama_abft::State abft_;
  int64_t bytes_params_ = 0, bytes_grads_ = 0, bytes_optimizer_ = 0, bytes_arena_ = 0,
          bytes_work_ = 0;
#ifndef LLAMA_CUDA_EMULATE
  // Per variant: overwrite / accumulate, without / with the bucket
  // reduction, without / with the parameter gathers.
  GraphReplay graphs_[8];
#endif
};

template <typename T>
DeviceSession *open_session(const ProgramInfo &program, const StepProgram<T> &step) {
  return new CudaSession<T>(program, step);
}
template DeviceSession *open_session<float>(const ProgramInfo &, const StepProgram<float> &);
template DeviceSession *open_session<__nv_bfloat16>(const ProgramInfo &,
                                                    const StepProgram<__nv_bfloat16> &);

} // namespace llamart::cuda
