#include "runtime/train/anomaly.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace llamart::train {

namespace {

// Noise floors of the standard deviation (see the header).
constexpr double kLossRelativeFloor = 1e-3;
constexpr double kLogNormFloor = 1e-3;
// log() of a zero norm (every gradient exactly 0) would be -inf and poison
// the window's mean.
constexpr double kMinNorm = 1e-30;

double log_norm(double grad_norm) { return std::log(std::max(grad_norm, kMinNorm)); }

// One-sided z-score of x against `window` (population standard deviation,
// two passes, oldest value first), with the standard deviation held at or
// above `floor`.
double zscore(const std::deque<double> &window, double x, double floor) {
  double sum = 0.0;
  for (double v : window)
    sum += v;
  const double n = static_cast<double>(window.size());
  const double mean = sum / n;
  double sq = 0.0;
  for (double v : window)
    sq += (v - mean) * (v - mean);
  const double sd = std::max(std::sqrt(sq / n), floor);
  return (x - mean) / sd;
}

double mean_abs(const std::deque<double> &window) {
  double sum = 0.0;
  for (double v : window)
    sum += v;
  return std::fabs(sum / static_cast<double>(window.size()));
}

} // namespace

void SpikeConfig::validate() const {
  auto bad = [](const std::string &m) { throw std::runtime_error(m); };
  // Fewer than 4 values make a standard deviation that says nothing.
  if (window < 0 || (window > 0 && window < 4) || window > 100000)
    bad("--spike-window: must be 0 (off) or in [4, 100000], got " +
        std::to_string(window));
  if (!(zscore >= 0) || !std::isfinite(zscore))
    bad("--spike-zscore: must be a finite number >= 0 (0 = off), got " +
        std::to_string(zscore));
  if (max_skips_before_rollback < 0 || max_skips_before_rollback > 1000000)
    bad("--max-skips-before-rollback: must be in [0, 1000000] (0 = never), got " +
        std::to_string(max_skips_before_rollback));
}

const char *skip_reason_name(SkipReason reason) {
  switch (reason) {
  case SkipReason::NonFinite:
    return "nonfinite";
  case SkipReason::Spike:
    return "spike";
  case SkipReason::GemmChecksum:
    return "gemm_checksum";
  case SkipReason::None:
    break;
  }
  return "";
}

Verdict AnomalyDetector::judge(double loss, double grad_norm) const {
  Verdict v;
  if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
    v.reason = SkipReason::NonFinite;
    return v;
  }
  if (!config_.spikes_enabled() ||
      losses_.size() < static_cast<size_t>(config_.window))
    return v;
  const double loss_floor = kLossRelativeFloor * std::max(mean_abs(losses_), 1e-12);
  v.loss_z = zscore(losses_, loss, loss_floor);
  v.grad_norm_z = zscore(log_norms_, log_norm(grad_norm), kLogNormFloor);
  if (v.loss_z > config_.zscore || v.grad_norm_z > config_.zscore)
    v.reason = SkipReason::Spike;
  return v;
}

bool AnomalyDetector::record(int64_t step, double loss, double grad_norm,
                             const Verdict &verdict) {
  const int64_t burst_limit = config_.max_skips_before_rollback;
  if (verdict.reason == SkipReason::None) {
    losses_.push_back(loss);
    log_norms_.push_back(log_norm(grad_norm));
    const size_t keep = static_cast<size_t>(std::max<int64_t>(config_.window, 0));
    while (losses_.size() > keep) {
      losses_.pop_front();
      log_norms_.pop_front();
    }
    // R accepted updates in a row end a burst.
    if (burst_skips_ > 0 && ++accepted_since_skip_ >= std::max<int64_t>(burst_limit, 1))
      end_burst();
    return false;
  }
  if (burst_skips_ == 0)
    burst_first_step_ = step;
  ++burst_skips_;
  accepted_since_skip_ = 0;
  return burst_limit > 0 && burst_skips_ >= burst_limit;
}

void AnomalyDetector::end_burst() {
  burst_skips_ = 0;
  burst_first_step_ = 0;
  accepted_since_skip_ = 0;
}

AnomalyDetector AnomalyDetector::with_config(const SpikeConfig &config) const {
  AnomalyDetector d = *this;
  d.config_ = config;
  const size_t keep = static_cast<size_t>(std::max<int64_t>(config.window, 0));
  while (d.losses_.size() > keep) {
    d.losses_.pop_front();
    d.log_norms_.pop_front();
  }
  return d;
}

nlohmann::json AnomalyDetector::to_json() const {
  // nlohmann writes doubles in their shortest round-trip form, so the window
  // reloads bit-exactly (train_test checks this).
  return {{"window", config_.window},
          {"zscore", config_.zscore},
          {"max_skips_before_rollback", config_.max_skips_before_rollback},
          {"losses", std::vector<double>(losses_.begin(), losses_.end())},
          {"log_grad_norms", std::vector<double>(log_norms_.begin(), log_norms_.end())},
          {"burst_skips", burst_skips_},
          {"burst_first_step", burst_first_step_},
          {"accepted_since_skip", accepted_since_skip_}};
}

AnomalyDetector AnomalyDetector::from_json(const nlohmann::json &j,
                                           const std::string &where) {
  const std::string prefix = where.empty() ? "" : where + ": ";
  try {
    SpikeConfig config;
    config.window = j.at("window").get<int64_t>();
    config.zscore = j.at("zscore").get<double>();
    config.max_skips_before_rollback = j.at("max_skips_before_rollback").get<int64_t>();
    config.validate();
    AnomalyDetector d(config);
    const auto losses = j.at("losses").get<std::vector<double>>();
    const auto norms = j.at("log_grad_norms").get<std::vector<double>>();
    if (losses.size() != norms.size())
      throw std::runtime_error("\"losses\" and \"log_grad_norms\" differ in length");
    if (losses.size() > static_cast<size_t>(config.window))
      throw std::runtime_error("more values than \"window\"");
    for (size_t i = 0; i < losses.size(); ++i)
      if (!std::isfinite(losses[i]) || !std::isfinite(norms[i]))
        throw std::runtime_error("non-finite value in the spike window");
    d.losses_.assign(losses.begin(), losses.end());
    d.log_norms_.assign(norms.begin(), norms.end());
    d.burst_skips_ = j.at("burst_skips").get<int64_t>();
    d.burst_first_step_ = j.at("burst_first_step").get<int64_t>();
    d.accepted_since_skip_ = j.at("accepted_since_skip").get<int64_t>();
    if (d.burst_skips_ < 0 || d.burst_first_step_ < 0 || d.accepted_since_skip_ < 0)
      throw std::runtime_error("negative burst counter");
    return d;
  } catch (const nlohmann::json::exception &e) {
    throw std::runtime_error(prefix + "malformed \"anomaly\": " + e.what());
  } catch (const std::runtime_error &e) {
    throw std::runtime_error(prefix + "malformed \"anomaly\": " + e.what());
  }
}

} // namespace llamart::train
