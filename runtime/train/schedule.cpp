#include "runtime/train/schedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace llamart::train {

double LrSchedule::at(int64_t step) const {
  if (step <= 0)
    return 0.0;
  if (step <= warmup_steps)
    return peak_lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  const double min_lr = min_lr_ratio * peak_lr;
  if (step >= total_steps)
    return min_lr;
  const double progress = static_cast<double>(step - warmup_steps) /
                          static_cast<double>(total_steps - warmup_steps);
  const double pi = 3.141592653589793238462643;
  return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + std::cos(pi * progress));
}

void LrSchedule::validate() const {
  if (!(peak_lr >= 0.0) || !std::isfinite(peak_lr))
    throw std::runtime_error("--lr: must be a finite number >= 0, got " +
                             std::to_string(peak_lr));
  if (!(min_lr_ratio >= 0.0 && min_lr_ratio <= 1.0))
    throw std::runtime_error("--min-lr-ratio: must be in [0, 1], got " +
                             std::to_string(min_lr_ratio));
  if (warmup_steps < 0)
    throw std::runtime_error("--warmup: must be >= 0, got " +
                             std::to_string(warmup_steps));
  if (total_steps < 1)
    throw std::runtime_error("--steps: must be >= 1, got " +
                             std::to_string(total_steps));
}

int64_t default_warmup_steps(int64_t total_steps) {
  return std::min<int64_t>(2000, std::max<int64_t>(1, total_steps / 20));
}

} // namespace llamart::train
