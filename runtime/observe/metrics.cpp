#include "runtime/observe/metrics.h"

#include "runtime/observe/tensorboard.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <unistd.h>

namespace llamart::observe {

namespace {
using ordered_json = nlohmann::ordered_json;

// A redraw per step can cost more than a tiny model's step; 10 per second is
// as fast as anyone reads.
constexpr std::chrono::milliseconds kLiveRedrawInterval{100};
} // namespace

MetricsLog::MetricsLog(const std::string &path, const std::string &tensorboard_dir)
    : path_(path) {
  file_ = std::fopen(path.c_str(), "a");
  if (!file_)
    throw std::runtime_error(path + ": cannot open for append: " +
                             std::strerror(errno));
  if (!tensorboard_dir.empty()) {
    try {
      events_ = std::make_unique<EventWriter>(tensorboard_dir);
    } catch (...) {
      std::fclose(file_); // the destructor does not run for a throwing constructor
      file_ = nullptr;
      throw;
    }
  }
}

MetricsLog::~MetricsLog() {
  if (file_)
    std::fclose(file_);
}

void MetricsLog::write_line(const std::string &line) {
  if (std::fputs(line.c_str(), file_) < 0 || std::fputc('\n', file_) == EOF ||
      std::fflush(file_) != 0)
    throw std::runtime_error(path_ + ": write failed: " + std::strerror(errno));
}

void MetricsLog::log_step(int64_t step, double loss, double lr,
                          double grad_norm, double tokens_per_s,
                          double elapsed_s) {
  ordered_json j;
  j["step"] = step;
  j["loss"] = loss;
  j["lr"] = lr;
  j["grad_norm"] = grad_norm;
  j["tokens_per_s"] = tokens_per_s;
  j["elapsed_s"] = elapsed_s;
  write_line(j.dump());
  if (events_)
    events_->scalars(step, {{"train/loss", static_cast<float>(loss)},
                            {"train/lr", static_cast<float>(lr)},
                            {"train/grad_norm", static_cast<float>(grad_norm)},
                            {"train/tokens_per_s", static_cast<float>(tokens_per_s)}});
}

void MetricsLog::log_eval(int64_t step, double val_loss) {
  ordered_json j;
  j["step"] = step;
  j["val_loss"] = val_loss;
  write_line(j.dump());
  if (events_)
    events_->scalars(step, {{"val/loss", static_cast<float>(val_loss)}});
}

namespace {
// JSON has no NaN or infinity; null says "no number" without breaking parsers.
ordered_json number_or_null(double v) { return std::isfinite(v) ? ordered_json(v) : ordered_json(); }
} // namespace

void MetricsLog::log_skip(const SkipRecord &r) {
  ordered_json j;
  j["step"] = r.step;
  j["skipped"] = r.reason;
  j["loss"] = number_or_null(r.loss);
  j["grad_norm"] = number_or_null(r.grad_norm);
  j["lr"] = r.lr;
  j["loss_z"] = number_or_null(r.loss_z);
  j["grad_norm_z"] = number_or_null(r.grad_norm_z);
  j["attempt"] = r.attempt;
  j["data_epoch"] = r.data_epoch;
  j["data_index"] = r.data_index;
  j["elapsed_s"] = r.elapsed_s;
  if (r.gemm_failures >= 0)
    j["gemm_failures"] = r.gemm_failures;
  if (r.recomputed)
    j["recomputed"] = true;
  write_line(j.dump());
}

void MetricsLog::log_rollback(const RollbackRecord &r) {
  ordered_json j;
  j["step"] = r.step;
  j["rollback_to"] = r.to_step;
  j["checkpoint"] = r.checkpoint;
  j["checkpoint_data_epoch"] = r.checkpoint_epoch;
  j["checkpoint_data_index"] = r.checkpoint_index;
  j["data_epoch"] = r.data_epoch;
  j["data_index"] = r.data_index;
  j["discarded_checkpoints"] = r.discarded_checkpoints;
  j["elapsed_s"] = r.elapsed_s;
  write_line(j.dump());
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0)
    return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  char buf[64];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  return buf;
}

Progress::Progress(int64_t start_step, int64_t total_steps, bool quiet)
    : Progress(start_step, total_steps, quiet, isatty(STDERR_FILENO) != 0) {}

Progress::Progress(int64_t start_step, int64_t total_steps, bool quiet,
                   bool live)
    : start_step_(start_step), total_steps_(total_steps), quiet_(quiet),
      live_(live && !quiet),
      plain_every_(std::max<int64_t>(1, total_steps / 10)),
      start_(std::chrono::steady_clock::now()), last_draw_() {}

std::string Progress::format(int64_t step, double loss, double lr,
                             double tokens_per_s) const {
  const double elapsed = std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - start_)
                             .count();
  const int64_t done = step - start_step_;
  const double eta =
      done > 0 ? elapsed / static_cast<double>(done) *
                     static_cast<double>(total_steps_ - step)
               : NAN;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "step %lld/%lld | loss %.4f | lr %.3e | %.0f tok/s | ETA %s",
                static_cast<long long>(step),
                static_cast<long long>(total_steps_), loss, lr, tokens_per_s,
                format_duration(eta).c_str());
  return buf;
}

void Progress::update(int64_t step, double loss, double lr,
                      double tokens_per_s) {
  if (quiet_)
    return;
  if (live_) {
    const auto now = std::chrono::steady_clock::now();
    if (step != total_steps_ && line_shown_ &&
        now - last_draw_ < kLiveRedrawInterval)
      return;
    last_draw_ = now;
    // \033[K clears what a longer previous line left behind.
    std::fprintf(stderr, "\r%s\033[K", format(step, loss, lr, tokens_per_s).c_str());
    std::fflush(stderr);
    line_shown_ = true;
    return;
  }
  if (step % plain_every_ == 0 || step == total_steps_ || step == start_step_ + 1)
    std::fprintf(stderr, "%s\n", format(step, loss, lr, tokens_per_s).c_str());
}

void Progress::message(const std::string &line) {
  if (quiet_)
    return;
  if (live_ && line_shown_) {
    std::fprintf(stderr, "\r\033[K");
    line_shown_ = false;
  }
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (live_ && line_shown_) {
    std::fprintf(stderr, "\n");
    std::fflush(stderr);
    line_shown_ = false;
  }
}

} // namespace llamart::observe
