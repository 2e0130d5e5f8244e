// AdamW (Loshchilov & Hutter, 2019) over the program's flat parameter buffer,
// with the update written exactly as torch.optim.AdamW computes it:
//   g  = grad * grad_scale                (1/grad_accum and the clip factor)
//   m  = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
//   p *= 1 - lr * wd                      (decoupled decay, 2-D params only)
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Weight decay skips 1-D params (RMSNorm gains), the LLaMA / Megatron rule:
// decaying a gain towards 0 shrinks the whole residual branch.
//
// Per-element arithmetic is done in double and stored in T; the state m, v
// lives in T (the program dtype). Every reduction here runs in a fixed order
// independent of the thread count, so a run is bit-reproducible, which exact
// resume from checkpoints relies on.
#pragma once
#include "runtime/program/program.h"

#include <cstdint>

namespace llamart::train {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  // Throws std::runtime_error naming the offending flag.
  void validate() const;
};

// Whether weight decay applies to this parameter (matrices yes, gains no).
bool param_decays(const ParamInfo &param);

// sum(g[i]^2) accumulated in double over fixed blocks, summed in block
// order: the same bits for any number of threads.
template <typename T> double sum_of_squares(const T *values, int64_t n);

// sqrt(sum_of_squares(grads, n)) * |scale|, the L2 norm of grads * scale.
template <typename T> double grad_l2_norm(const T *grads, int64_t n, double scale);

// Factor that brings a gradient of norm `norm` down to `max_norm`
// (min(1, max_norm / (norm + 1e-6)), as torch.nn.utils.clip_grad_norm_);
// max_norm <= 0 disables clipping.
double clip_scale(double norm, double max_norm);

// dst[i] += src[i], in parallel (gradient accumulation over micro-batches).
template <typename T> void accumulate(T *dst, const T *src, int64_t n);

// One AdamW update of every parameter of `program`. `step` is the 1-based
// number of this update (bias correction); exp_avg and exp_avg_sq have
// program.param_numel elements each, zero before the first update.
template <typename T>
void adamw_update(const ProgramInfo &program, const AdamWConfig &config,
                  int64_t step, double lr, double grad_scale, T *params,
                  const T *grads, T *exp_avg, T *exp_avg_sq);

// The same update restricted to the elements [begin, end) of the flat
// parameter buffer (a ZeRO-1 shard, partition.h): every pointer addresses
// element `begin` (pointer[i - begin] is element i), the per-parameter
// decisions (weight decay) are those of the param each element belongs to,
// and elements outside every param are left alone. Shards that cover the
// buffer give exactly adamw_update's bits: the arithmetic of an element does
// not depend on the range.
template <typename T>
void adamw_update_range(const ProgramInfo &program, const AdamWConfig &config,
                        int64_t step, double lr, double grad_scale,
                        int64_t begin, int64_t end, T *params, const T *grads,
                        T *exp_avg, T *exp_avg_sq);

} // namespace llamart::train
