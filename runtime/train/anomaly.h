// Which optimizer updates to skip: non-finite values and loss / gradient-norm
// spikes (PaLM, Chowdhery et al. 2022, sec. 5.1: skip the batches around a
// spike and restart from an earlier checkpoint; OPT's logbook does the same by
// hand).
//
// An update is judged from its mean loss and its global gradient L2 norm
// before clipping:
//  - "nonfinite": the loss or the norm is NaN or infinite. A single NaN or Inf
//    anywhere in the gradients makes the norm non-finite, so one reduction
//    that the driver computes anyway checks every element.
//  - "spike": once the window holds `window` accepted updates, the update's
//    one-sided z-score against that window exceeds `zscore`, either for the
//    loss or for log(grad norm). Gradient norms are roughly log-normal (they
//    move by factors, not by amounts), so their z-score is taken in log space;
//    losses move by amounts. A floor on the standard deviation (0.1% of the
//    mean loss; 0.001 in log-norm, i.e. a 0.1% change) keeps a flat window
//    from flagging noise-sized moves as spikes. Only increases are spikes: a
//    loss falling fast is what training is for.
// Skipped updates never enter the window, so an outlier does not widen the
// band that the next outlier is judged against.
//
// Skips close together form a burst: skips separated by fewer than R accepted
// updates (R = max_skips_before_rollback). A burst of R skips asks the driver
// to roll back to a checkpoint from before the burst's first skip.
//
// The whole state is plain data saved in state.json: a resumed run judges its
// next update exactly as the uninterrupted run would. Statistics are summed
// oldest first in double, so they do not depend on how the state was stored.
#pragma once
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <deque>
#include <string>

namespace llamart::train {

struct SpikeConfig {
  int64_t window = 32;                  // --spike-window: 0 disables spike checks
  double zscore = 6.0;                  // --spike-zscore: 0 disables spike checks
  int64_t max_skips_before_rollback = 3; // --max-skips-before-rollback: 0 = never
  bool spikes_enabled() const { return window > 0 && zscore > 0; }
  // Throws std::runtime_error naming the offending flag.
  void validate() const;
};

// GemmChecksum is never returned by judge(): the driver sets it when an
// update's GEMMs fail their ABFT checksums twice (--verify-gemm-every).
enum class SkipReason { None, NonFinite, Spike, GemmChecksum };

// "nonfinite" / "spike" / "gemm_checksum" (the metrics.jsonl spelling); "" for None.
const char *skip_reason_name(SkipReason reason);

struct Verdict {
  SkipReason reason = SkipReason::None;
  // z-scores of this update (NaN while the window is warming up, when spike
  // checks are off, or for non-finite values).
  double loss_z = NAN;
  double grad_norm_z = NAN;
};

class AnomalyDetector {
public:
  explicit AnomalyDetector(const SpikeConfig &config = {}) : config_(config) {}

  // Judges an update; changes nothing.
  Verdict judge(double loss, double grad_norm) const;

  // Records the outcome of update `step` under `verdict`. Accepted updates
  // enter the window; skipped ones extend the current burst. Returns true when
  // this skip makes the burst R skips long (time to roll back).
  bool record(int64_t step, double loss, double grad_norm, const Verdict &verdict);

  // Forgets the current burst (after a rollback, or when none is possible).
  void end_burst();

  int64_t burst_skips() const { return burst_skips_; }
  int64_t burst_first_step() const { return burst_first_step_; }
  size_t window_size() const { return losses_.size(); }
  const SpikeConfig &config() const { return config_; }

  // The same history judged under other settings (a resumed run's flags):
  // the newest config.window values are kept.
  AnomalyDetector with_config(const SpikeConfig &config) const;

  // {"window", "zscore", "max_skips_before_rollback", "losses": [...],
  //  "log_grad_norms": [...], "burst_skips", "burst_first_step",
  //  "accepted_since_skip"}, oldest value first. from_json throws
  // std::runtime_error on malformed input, prefixed with `where` unless empty.
  nlohmann::json to_json() const;
  static AnomalyDetector from_json(const nlohmann::json &j, const std::string &where);

private:
  SpikeConfig config_;
  std::deque<double> losses_, log_norms_; // accepted updates, oldest first
  int64_t burst_skips_ = 0;
  int64_t burst_first_step_ = 0;
  int64_t accepted_since_skip_ = 0;
};

} // namespace llamart::train
