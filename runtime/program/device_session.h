// The training driver's view of an accelerator (ABI v4, program.h): a
// program compiled for a GPU (llama-compile --target cuda) keeps parameters,
// gradients, AdamW moments and the step's arena in device memory for the
// whole run, and the driver (trainer.h) talks to it through this interface
// instead of calling train_step on host buffers. Everything that steers the
// run stays in the driver and is the same as on the CPU: the data stream,
// the LR schedule, clipping, the spike detector, checkpoints (the device
// state is copied to host buffers only to be saved, and back after a load).
//
// A session is deterministic: the same inputs give the same bits on every
// call, so exact resume holds on the device as on the CPU.
#pragma once
#include <cstdint>
#include <string>

namespace llamart {

struct ProgramInfo;

// `memcheck` on a device (device_session.h): the arena's high-water marks
// measured with marker bytes, against the compile-time plan, and the device
// memory the session holds against what the device reports.
struct DeviceMemoryProbe {
  int64_t train_arena_bytes = 0, train_arena_used_bytes = 0;
  int64_t eval_arena_bytes = 0, eval_arena_used_bytes = 0;
  int64_t held_bytes = 0;         // everything the session allocated
  int64_t device_used_bytes = -1; // the device's used memory growth since the
                                  // session opened (-1: not measurable)
};

// What the ABFT checks of one update's GEMMs found (runtime/cuda/gemm_check.inl).
struct DeviceGemmCheck {
  int64_t checked = 0, failed = 0;
  bool bitflip_delivered = false;
};

class DeviceSession {
public:
  virtual ~DeviceSession() = default;

  // One line: the device, and the device memory the session holds by use
  // (parameters, gradients, optimizer state, arena, workspaces) next to
  // what the device reports in use.
  virtual std::string describe() const = 0;

  // Host <-> device copies of the flat state: the parameters
  // (program.param_numel fp32 elements) and the AdamW moments of this rank's
  // ZeRO-1 shard in shard coordinates (partition.h: DpShard, size elements
  // each; the whole buffer on one device).
  virtual void upload(const float *params, const float *exp_avg,
                      const float *exp_avg_sq) = 0;
  virtual void download(float *params, float *exp_avg, float *exp_avg_sq) = 0;
  // Whether the session keeps the fp32 master weights of this rank's ZeRO-1
  // shard alone (bf16 storage on a dp grid): download then fills the
  // shard's pieces of params only, and a checkpoint gathers the weights
  // from the shards as it gathers the moments.
  virtual bool shards_params() const { return false; }

  // One micro-batch (tokens/targets: host int32 [batch, seq_len]): returns
  // its mean loss; the gradients overwrite the device gradient buffer, or
  // are added to it when `accumulate`. `last`: the update's last
  // micro-batch, whose backward a dp grid overlaps with the gradient
  // reduce-scatter, bucket by bucket (ProgramInfo::grad_bucket_bounds).
  virtual double train_step(const int32_t *tokens, const int32_t *targets,
                            bool accumulate, bool last) = 0;

  // The device gradient buffer to / from the host (fault injection, verify).
  virtual void read_grads(float *grads) = 0;
  virtual void write_grads(const float *grads) = 0;

  // L2 norm of the device gradients times |scale|, reduced in a fixed order
  // (fp64 partial sums). On a dp x tp grid the norm of the whole model's
  // gradient, over the gradients reduce-scattered over dp into this rank's
  // shard (by the last train_step, or here when write_grads replaced them
  // since; collective over the world).
  virtual double grad_norm(double scale) = 0;

  // One AdamW update of every parameter on the device, with optimizer.h's
  // per-element arithmetic (fp64, decoupled weight decay on 2-D params
  // only). `step` is 1-based. On a grid: of this rank's shard, with the
  // gradients grad_norm reduced, then the parameters all-gathered over dp.
  virtual void adamw(double beta1, double beta2, double eps, double weight_decay,
                     int64_t step, double lr, double grad_scale) = 0;

  // The mean loss of one batch, forward only.
  virtual double eval_loss(const int32_t *tokens, const int32_t *targets) = 0;

  // One train step and one evaluation on the batch with the arena filled
  // with marker bytes (twice, two patterns): throws when a kernel wrote past
  // the arena or a step used more than its plan.
  virtual DeviceMemoryProbe probe_memory(const int32_t *tokens,
                                         const int32_t *targets) = 0;

  // ABFT around the train steps of one update (--verify-gemm-every,
  // --inject bitflip): from begin to end every GEMM is checked when
  // `verify`, and with `inject` one GEMM output chosen by `seed` gets a
  // flipped high exponent bit right after the GEMM wrote it. Steps run
  // eagerly (not from the CUDA Graph) in between.
  virtual void gemm_check_begin(bool verify, bool inject, uint64_t seed) = 0;
  virtual DeviceGemmCheck gemm_check_end() = 0;
};

// Generation on an accelerator (ABI v6, ProgramInfo::open_generator): the
// weights in the device's storage type, the KV cache and the @prefill /
// @decode steps live on the device; the driver (generate.h) keeps the
// prompt, the sampling and the stop rules on the host and reads back one
// row of fp32 logits per step. Zero-filled cache at open, as on the CPU.
class DeviceGenerator {
public:
  virtual ~DeviceGenerator() = default;
  // One line: the device and the memory held (weights, KV cache, arena).
  virtual std::string describe() const = 0;
  // The weights (program.param_numel fp32 elements, the flat layout),
  // converted to the storage type.
  virtual void upload(const float *params) = 0;
  // One step: tokens are host int32 [gen_batch, prefill_chunk] (prefill) or
  // [gen_batch, 1] (decode), starting at cache row `pos` (the positions
  // already filled); the caller keeps pos + chunk within kv_capacity.
  virtual void prefill(const int32_t *tokens, int64_t pos) = 0;
  virtual void decode(const int32_t *tokens, int64_t pos) = 0;
  // The last step's logits of sequence 0 at chunk index t: vocab_size fp32.
  virtual void logits(int64_t t, float *out) = 0;
};

} // namespace llamart
