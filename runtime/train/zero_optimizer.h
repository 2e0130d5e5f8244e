// AdamW with ZeRO stage 1 (Rajbhandari et al., 2020) for one rank of a
// dp x tp grid: every rank keeps its full local (tp-shard) parameters, but
// the AdamW moments only of its dp shard of the flat local buffer
// (partition.h: DpShard), so the optimizer state per rank shrinks by grid_dp.
// One update:
//   reduce_gradients: the local gradients are summed over the dp group with
//     one reduce-scatter per gradient bucket straight into this rank's shard
//     (half the traffic of an all-reduce), and the global L2 norm is the
//     square root of the sum over the world of each rank's share
//     (norm_ranges: every element of the model once);
//   update: AdamW on the shard (adamw_update_range: the same per-element
//     arithmetic as the single-rank update), then an all-gather per bucket
//     over dp puts the updated pieces back together in every rank's
//     parameter buffer.
// On a 1 x 1 grid the shard is the whole buffer and no collective runs: the
// calls are exactly grad_l2_norm and adamw_update, so a single-rank run is
// bit-for-bit what it was before ZeRO existed.
#pragma once
#include "runtime/program/aligned_buffer.h"
#include "runtime/train/optimizer.h"
#include "runtime/program/partition.h"
#include "runtime/program/program.h"

#include <cstdint>
#include <utility>
#include <vector>

namespace llamart::train {

template <typename T> class ZeroAdamW {
public:
  // `program` is this rank's program; dp_rank / tp_rank its grid place.
  ZeroAdamW(const ProgramInfo &program, int dp_rank, int tp_rank);
  ZeroAdamW(const ZeroAdamW &) = delete;
  ZeroAdamW &operator=(const ZeroAdamW &) = delete;

  // The local parameter and gradient buffers have shard().padded_numel
  // elements (zero padding past param_numel).
  const DpShard &shard() const { return shard_; }

  // Sums `grads` (this rank's gradients of the global loss) over the dp group
  // into this rank's shard and returns the L2 norm of the whole model's
  // gradient times |scale|. Collective over the world; the result can still
  // differ in the last bit between ranks (MPI's reduction order), so callers
  // that branch on it agree on one value first.
  double reduce_gradients(const T *grads, double scale);

  // AdamW on this rank's shard with the gradient reduce_gradients(grads)
  // produced (`grads` must be that same buffer), then the updated shards are
  // gathered into `params` on every dp rank. Collective over dp.
  void update(const AdamWConfig &config, int64_t step, double lr,
              double grad_scale, const T *grads, T *params);

  // This rank's moments: shard().size elements each.
  T *exp_avg() { return exp_avg_.data(); }
  T *exp_avg_sq() { return exp_avg_sq_.data(); }

  // Keeps this rank's shard of moments given for the whole local buffer.
  void set_moments(const T *exp_avg_local, const T *exp_avg_sq_local);

private:
  const ProgramInfo &program_;
  const bool partitioned_;
  const DpShard shard_;
  const std::vector<std::pair<int64_t, int64_t>> norm_ranges_;
  AlignedBuffer<T> exp_avg_, exp_avg_sq_;
  // dp > 1 only: the reduced gradient and the parameters of the shard.
  AlignedBuffer<T> grad_shard_, param_shard_;
};

} // namespace llamart::train
