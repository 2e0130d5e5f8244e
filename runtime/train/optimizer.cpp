#include "runtime/train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace llamart::train {

namespace {
// Block size of the deterministic norm reduction: large enough that the
// per-block partial sums are cheap, small enough to balance threads.
constexpr int64_t kNormBlock = 1 << 15;

void require(bool ok, const std::string &message) {
  if (!ok)
    throw std::runtime_error(message);
}
} // namespace

void AdamWConfig::validate() const {
  require(beta1 >= 0.0 && beta1 < 1.0,
          "--beta1: must be in [0, 1), got " + std::to_string(beta1));
  require(beta2 >= 0.0 && beta2 < 1.0,
          "--beta2: must be in [0, 1), got " + std::to_string(beta2));
  require(eps > 0.0 && std::isfinite(eps),
          "--eps: must be a finite number > 0, got " + std::to_string(eps));
  require(weight_decay >= 0.0 && std::isfinite(weight_decay),
          "--weight-decay: must be a finite number >= 0, got " +
              std::to_string(weight_decay));
}

bool param_decays(const ParamInfo &param) { return param.rank >= 2; }

template <typename T> double sum_of_squares(const T *values, int64_t n) {
  const int64_t blocks = (n + kNormBlock - 1) / kNormBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kNormBlock;
    const int64_t end = std::min(n, begin + kNormBlock);
    double sum = 0.0;
    for (int64_t i = begin; i < end; ++i) {
      const double x = static_cast<double>(values[i]);
      sum += x * x;
    }
    partial[static_cast<size_t>(b)] = sum;
  }
  double total = 0.0;
  for (double p : partial)
    total += p;
  return total;
}

template <typename T> double grad_l2_norm(const T *grads, int64_t n, double scale) {
  return std::sqrt(sum_of_squares(grads, n)) * std::fabs(scale);
}

double clip_scale(double norm, double max_norm) {
  if (max_norm <= 0.0)
    return 1.0;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

template <typename T> void accumulate(T *dst, const T *src, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    dst[i] += src[i];
}

template <typename T>
void adamw_update_range(const ProgramInfo &program, const AdamWConfig &config,
                        int64_t step, double lr, double grad_scale,
                        int64_t begin, int64_t end, T *params, const T *grads,
                        T *exp_avg, T *exp_avg_sq) {
  require(step >= 1, "adamw_update: step must be >= 1");
  require(0 <= begin && begin <= end, "adamw_update: bad element range");
  const double b1 = config.beta1, b2 = config.beta2, eps = config.eps;
  const double bias1 = 1.0 - std::pow(b1, static_cast<double>(step));
  const double bias2_sqrt = std::sqrt(1.0 - std::pow(b2, static_cast<double>(step)));
  const double step_size = lr / bias1;
  const double decay_factor = 1.0 - lr * config.weight_decay;

  // One parallel region for all tensors; `nowait` because tensors are
  // disjoint ranges of the buffers, so no thread reads another's output.
#pragma omp parallel
  for (int32_t p = 0; p < program.num_params; ++p) {
    const ParamInfo &info = program.params[p];
    // The part of this param inside [begin, end), relative to `begin`.
    const int64_t lo = std::max(info.offset, begin) - begin;
    const int64_t hi = std::min(info.offset + info.numel, end) - begin;
    if (lo >= hi)
      continue; // the same decision on every thread: no barrier is skipped
    const double decay = param_decays(info) ? decay_factor : 1.0;
    T *w = params + lo;
    const T *g = grads + lo;
    T *m = exp_avg + lo;
    T *v = exp_avg_sq + lo;
    const int64_t n = hi - lo;
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < n; ++i) {
      const double gi = static_cast<double>(g[i]) * grad_scale;
      const double mi = b1 * static_cast<double>(m[i]) + (1.0 - b1) * gi;
      const double vi = b2 * static_cast<double>(v[i]) + (1.0 - b2) * gi * gi;
      m[i] = static_cast<T>(mi);
      v[i] = static_cast<T>(vi);
      // The update reads the moments as stored (rounded to T), as an
      // optimizer that computes in T (torch on fp32) does.
      const double ms = static_cast<double>(m[i]);
      const double vs = static_cast<double>(v[i]);
      const double wi = static_cast<double>(w[i]) * decay;
      w[i] = static_cast<T>(wi - step_size * ms / (std::sqrt(vs) / bias2_sqrt + eps));
    }
  }
}

template <typename T>
void adamw_update(const ProgramInfo &program, const AdamWConfig &config,
                  int64_t step, double lr, double grad_scale, T *params,
                  const T *grads, T *exp_avg, T *exp_avg_sq) {
  adamw_update_range(program, config, step, lr, grad_scale, 0,
                     program.param_numel, params, grads, exp_avg, exp_avg_sq);
}

#define LLAMART_INSTANTIATE(T)                                                 \
  template double sum_of_squares<T>(const T *, int64_t);                      \
  template double grad_l2_norm<T>(const T *, int64_t, double);                 \
  template void accumulate<T>(T *, const T *, int64_t);                        \
  template void adamw_update<T>(const ProgramInfo &, const AdamWConfig &,      \
                                int64_t, double, double, T *, const T *, T *,  \
                                T *);                                          \
  template void adamw_update_range<T>(const ProgramInfo &,                     \
                                      const AdamWConfig &, int64_t, double,    \
                                      double, int64_t, int64_t, T *,           \
                                      const T *, T *, T *);
LLAMART_INSTANTIATE(float)
LLAMART_INSTANTIATE(double)
#undef LLAMART_INSTANTIATE

} // namespace llamart::train
