#include "runtime/train/session.h"

#include "runtime/program/aligned_buffer.h"
#include "runtime/program/device_session.h"

#include <stdexcept>
#include <type_traits>

namespace llamart::train {

namespace {

// The generated step functions on host memory.
template <typename T> class HostSession final : public StepSession<T> {
public:
  HostSession(const ProgramInfo &program, T *params, ZeroAdamW<T> &optimizer)
      : program_(program), params_(params), optimizer_(optimizer),
        grads_(static_cast<size_t>(optimizer.shard().padded_numel)),
        arena_(static_cast<size_t>(program.train_arena_bytes)),
        eval_arena_(static_cast<size_t>(program.eval_arena_bytes)) {}

  std::string describe() const override { return std::string(); }
  // The trainer's buffers are the session's own.
  void push_state() override {}
  void pull_state() override {}
  bool shards_params() const override { return false; }

  double micro_step(const int32_t *tokens, const int32_t *targets, bool accumulate,
                    bool /*last*/) override {
    // train_step overwrites its gradient buffer: a later micro-batch of the
    // update computes into its own and is added.
    T *out = grads_.data();
    if (accumulate) {
      if (micro_grads_.size() == 0)
        micro_grads_ = AlignedBuffer<T>(static_cast<size_t>(program_.param_numel));
      out = micro_grads_.data();
    }
    double loss = 0.0;
    program_.train_step(params_, out, tokens, targets, arena_.data(), &loss);
    if (accumulate)
      train::accumulate(grads_.data(), micro_grads_.data(), program_.param_numel);
    return loss;
  }

  void edit_gradients(const std::function<void(T *)> &edit) override {
    edit(grads_.data());
  }

  double reduce_gradients(double scale) override {
    return optimizer_.reduce_gradients(grads_.data(), scale);
  }

  void adamw(const AdamWConfig &config, int64_t step, double lr,
             double grad_scale) override {
    optimizer_.update(config, step, lr, grad_scale, grads_.data(), params_);
  }

  double eval_loss(const int32_t *tokens, const int32_t *targets) override {
    double loss = 0.0;
    program_.eval_loss(params_, tokens, targets, eval_arena_.data(), &loss);
    return loss;
  }

  void gemm_check_begin(bool verify, bool inject, uint64_t seed) override {
    cpu::gemm_check_begin(verify);
    if (inject)
      cpu::gemm_inject_bitflip(seed);
  }
  cpu::GemmCheckStats gemm_check_end() override { return cpu::gemm_check_end(); }

private:
  const ProgramInfo &program_;
  T *const params_;
  ZeroAdamW<T> &optimizer_;
  AlignedBuffer<T> grads_, micro_grads_;
  AlignedBuffer<uint8_t> arena_, eval_arena_;
};

// A program's DeviceSession (fp32 host copies) behind the trainer's
// interface.
class DeviceStepSession final : public StepSession<float> {
public:
  DeviceStepSession(const ProgramInfo &program, float *params,
                    ZeroAdamW<float> &optimizer)
      : program_(program), params_(params), optimizer_(optimizer),
        device_(program.open_device(program)) {}

  std::string describe() const override { return device_->describe(); }
  void push_state() override {
    device_->upload(params_, optimizer_.exp_avg(), optimizer_.exp_avg_sq());
  }
  void pull_state() override {
    device_->download(params_, optimizer_.exp_avg(), optimizer_.exp_avg_sq());
  }
  bool shards_params() const override { return device_->shards_params(); }

  double micro_step(const int32_t *tokens, const int32_t *targets, bool accumulate,
                    bool last) override {
    return device_->train_step(tokens, targets, accumulate, last);
  }

  // The gradients live on the device: a host copy is made for the edit (the
  // buffer only exists once a fault has been injected).
  void edit_gradients(const std::function<void(float *)> &edit) override {
    if (host_grads_.size() == 0)
      host_grads_ = AlignedBuffer<float>(static_cast<size_t>(program_.param_numel));
    device_->read_grads(host_grads_.data());
    edit(host_grads_.data());
    device_->write_grads(host_grads_.data());
  }

  double reduce_gradients(double scale) override { return device_->grad_norm(scale); }

  void adamw(const AdamWConfig &c, int64_t step, double lr, double grad_scale) override {
    device_->adamw(c.beta1, c.beta2, c.eps, c.weight_decay, step, lr, grad_scale);
  }

  double eval_loss(const int32_t *tokens, const int32_t *targets) override {
    return device_->eval_loss(tokens, targets);
  }

  void gemm_check_begin(bool verify, bool inject, uint64_t seed) override {
    device_->gemm_check_begin(verify, inject, seed);
  }
  cpu::GemmCheckStats gemm_check_end() override {
    const DeviceGemmCheck d = device_->gemm_check_end();
    cpu::GemmCheckStats stats;
    stats.checked = d.checked;
    stats.failed = d.failed;
    stats.bitflip_delivered = d.bitflip_delivered;
    return stats;
  }

private:
  const ProgramInfo &program_;
  float *const params_;
  ZeroAdamW<float> &optimizer_;
  std::unique_ptr<DeviceSession> device_;
  AlignedBuffer<float> host_grads_;
};

} // namespace

template <typename T>
std::unique_ptr<StepSession<T>> open_step_session(const ProgramInfo &program, T *params,
                                                  ZeroAdamW<T> &optimizer) {
  if (!program.open_device)
    return std::make_unique<HostSession<T>>(program, params, optimizer);
  if constexpr (std::is_same_v<T, float>)
    return std::make_unique<DeviceStepSession>(program, params, optimizer);
  throw std::runtime_error(std::string("a ") + (program.target ? program.target : "device") +
                           " program trains in fp32 storage only");
}

template std::unique_ptr<StepSession<float>>
open_step_session<float>(const ProgramInfo &, float *, ZeroAdamW<float> &);
template std::unique_ptr<StepSession<double>>
open_step_session<double>(const ProgramInfo &, double *, ZeroAdamW<double> &);

} // namespace llamart::train
