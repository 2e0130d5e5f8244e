#include "runtime/train/zero_optimizer.h"

#include "runtime/comm/comm.h"

#include <algorithm>
#include <cmath>

namespace llamart::train {

namespace {

using comm::Axis;

int dp_size(const ProgramInfo &program) { return std::max(1, program.grid_dp); }

} // namespace

template <typename T>
ZeroAdamW<T>::ZeroAdamW(const ProgramInfo &program, int dp_rank, int tp_rank)
    : program_(program), partitioned_(is_partitioned(program)),
      shard_(dp_shard(program.param_numel, dp_size(program), dp_rank,
                      grad_bucket_bounds(program))),
      norm_ranges_(norm_ranges(program, shard_, tp_rank)),
      exp_avg_(static_cast<size_t>(shard_.size)),
      exp_avg_sq_(static_cast<size_t>(shard_.size)) {
  if (dp_size(program) > 1) {
    grad_shard_ = AlignedBuffer<T>(static_cast<size_t>(shard_.size));
    param_shard_ = AlignedBuffer<T>(static_cast<size_t>(shard_.size));
  }
}

template <typename T>
double ZeroAdamW<T>::reduce_gradients(const T *grads, double scale) {
  if (!partitioned_)
    return grad_l2_norm(grads, program_.param_numel, scale);
  const T *reduced = grads;
  if (dp_size(program_) > 1) {
    // Bucket by bucket: each leaves this rank its piece (one call for the
    // single bucket of a CPU program).
    for (int k = 0; k < shard_.buckets(); ++k) {
      const DpShard::Piece p = shard_.piece(k);
      comm::reduce_scatter(grads + shard_.bounds[size_t(k)], grad_shard_.data() + p.shard, 1,
                           p.count, Axis::DP, "ZeRO-1 gradient reduce-scatter");
    }
    reduced = grad_shard_.data();
  }
  double sum = 0.0;
  for (const auto &[lo, hi] : norm_ranges_)
    sum += sum_of_squares(reduced + lo, hi - lo);
  comm::all_reduce(&sum, 1, comm::ReduceOp::Sum, Axis::World, "gradient norm");
  return std::sqrt(sum) * std::fabs(scale);
}

template <typename T>
void ZeroAdamW<T>::update(const AdamWConfig &config, int64_t step, double lr,
                          double grad_scale, const T *grads, T *params) {
  if (dp_size(program_) == 1) {
    // The shard is the whole buffer (tp alone, or no grid at all).
    adamw_update(program_, config, step, lr, grad_scale, params, grads,
                 exp_avg_.data(), exp_avg_sq_.data());
    return;
  }
  // all_gather may not write into its own input, so the shard is updated in
  // a copy and gathered from there.
  for (const DpShard::Piece &p : shard_.pieces()) {
    std::copy_n(params + p.flat, p.count, param_shard_.data() + p.shard);
    adamw_update_range(program_, config, step, lr, grad_scale, p.flat, p.flat_end(),
                       param_shard_.data() + p.shard, grad_shard_.data() + p.shard,
                       exp_avg_.data() + p.shard, exp_avg_sq_.data() + p.shard);
  }
  for (int k = 0; k < shard_.buckets(); ++k) {
    const DpShard::Piece p = shard_.piece(k);
    comm::all_gather(param_shard_.data() + p.shard, params + shard_.bounds[size_t(k)], 1,
                     p.count, Axis::DP, "ZeRO-1 parameter all-gather");
  }
}

template <typename T>
void ZeroAdamW<T>::set_moments(const T *exp_avg_local, const T *exp_avg_sq_local) {
  // The padding past param_numel stays zero: no param owns it.
  std::fill_n(exp_avg_.data(), shard_.size, T(0));
  std::fill_n(exp_avg_sq_.data(), shard_.size, T(0));
  for (const DpShard::Piece &p : shard_.pieces()) {
    const int64_t n =
        std::max<int64_t>(0, std::min(p.flat_end(), program_.param_numel) - p.flat);
    std::copy_n(exp_avg_local + p.flat, n, exp_avg_.data() + p.shard);
    std::copy_n(exp_avg_sq_local + p.flat, n, exp_avg_sq_.data() + p.shard);
  }
}

template class ZeroAdamW<float>;
template class ZeroAdamW<double>;

} // namespace llamart::train
