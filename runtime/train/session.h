// Where the trainer's arithmetic runs: one interface, two sessions.
//
// The trainer (trainer.h) steers a run (data, schedule, verdicts,
// checkpoints, rollback) and leaves the compute of an update to a
// StepSession: micro-steps that leave the update's summed gradients in the
// session, the gradient reduction with its global norm, AdamW, evaluation,
// and the ABFT checks of the GEMMs. Two implementations:
//
//   HostSession    the generated train_step / eval_loss on host buffers (CPU
//                  programs): gradients and arenas are host memory, the
//                  optimizer is ZeroAdamW over the trainer's own parameter
//                  and moment buffers, so push/pull are no-ops;
//   DeviceSession  (runtime/program/device_session.h, implemented by
//                  runtime/cuda) for programs compiled with
//                  --target cuda: parameters, gradients, moments and arenas
//                  stay on the device for the whole run, and the trainer's
//                  buffers are host copies brought up to date by push/pull
//                  around checkpoint loads and saves.
//
// Both do the same per-element arithmetic in the same order (optimizer.h),
// so the trainer reads the same whichever runs: step -> judge -> apply -> log.
#pragma once
#include "runtime/cpu/gemm_check.h"
#include "runtime/program/program.h"
#include "runtime/train/optimizer.h"
#include "runtime/train/zero_optimizer.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace llamart::train {

template <typename T> class StepSession {
public:
  virtual ~StepSession() = default;

  // One line about where the session runs (a device and the memory it
  // holds); empty for the host, whose facts the trainer already prints.
  virtual std::string describe() const = 0;

  // The trainer's parameter buffer and the optimizer's moments (what
  // checkpoints save and load) into the session, after a restore, an init or
  // a rollback; and back from it, before a save.
  virtual void push_state() = 0;
  virtual void pull_state() = 0;
  // Whether pull_state fills only this rank's ZeRO-1 shard of the
  // parameters (DeviceSession::shards_params); a checkpoint then gathers the
  // weights from the dp shards as it gathers the moments.
  virtual bool shards_params() const = 0;

  // One micro-batch (host int32 [batch, seq_len]): its mean loss. Its
  // gradients replace the session's, or are added to them when `accumulate`;
  // `last` marks the update's last micro-batch (a device overlaps its
  // backward with the dp reduce-scatter).
  virtual double micro_step(const int32_t *tokens, const int32_t *targets,
                            bool accumulate, bool last) = 0;

  // Lets `edit` change the update's gradients in place (fault injection):
  // the whole local buffer, param_numel elements, on the host.
  virtual void edit_gradients(const std::function<void(T *grads)> &edit) = 0;

  // Reduces the gradients over dp into this rank's ZeRO-1 shard and returns
  // the L2 norm of the whole model's gradient times |scale| (zero_optimizer.h;
  // collective over the world).
  virtual double reduce_gradients(double scale) = 0;

  // One AdamW update with the gradients reduce_gradients reduced; `step` is
  // 1-based, `grad_scale` multiplies the gradient (1/accum times clipping).
  virtual void adamw(const AdamWConfig &config, int64_t step, double lr,
                     double grad_scale) = 0;

  // The mean loss of one batch, forward only.
  virtual double eval_loss(const int32_t *tokens, const int32_t *targets) = 0;

  // ABFT around the micro-steps of one update: every GEMM checked when
  // `verify`; with `inject`, one GEMM output chosen by `seed` gets a flipped
  // exponent bit (runtime/cpu/gemm_check.h, runtime/cuda/gemm_check.inl).
  virtual void gemm_check_begin(bool verify, bool inject, uint64_t seed) = 0;
  virtual cpu::GemmCheckStats gemm_check_end() = 0;
};

// The session for `program`: a DeviceSession when the program has one
// (open_device; fp32 storage only: train() refuses others first), else a
// HostSession. `params` (shard().padded_numel elements) and `optimizer` are
// the trainer's and outlive the session.
template <typename T>
std::unique_ptr<StepSession<T>> open_step_session(const ProgramInfo &program, T *params,
                                                  ZeroAdamW<T> &optimizer);

} // namespace llamart::train
