// Learning-rate schedule of the LLaMA paper: linear warmup from 0 to the peak
// over `warmup_steps`, then cosine decay to min_lr_ratio * peak at
// `total_steps`. Steps are 1-based optimizer updates: update s uses at(s), so
// the first update already moves (peak / warmup) and update `warmup_steps`
// uses exactly the peak.
#pragma once
#include <cstdint>

namespace llamart::train {

struct LrSchedule {
  double peak_lr = 3e-4;
  double min_lr_ratio = 0.1;
  int64_t warmup_steps = 2000;
  int64_t total_steps = 1;

  double at(int64_t step) const;
  // Throws std::runtime_error naming the offending setting.
  void validate() const;
};

// The driver's default warmup when --warmup is not given: the paper's 2000
// steps, but never more than 5% of a short run (at least one step).
int64_t default_warmup_steps(int64_t total_steps);

} // namespace llamart::train
