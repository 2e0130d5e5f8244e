// What a run reports while it trains:
//  - MetricsLog: <run-dir>/metrics.jsonl, one JSON object per line, opened for
//    append (a resumed run continues the same file; nothing is truncated), and
//    flushed per line so a crash loses at most the line being written.
//    With a tensorboard directory, step and eval records also go to a
//    TensorBoard event file there (tensorboard.h): train/loss, train/lr,
//    train/grad_norm, train/tokens_per_s, val/loss.
//  - Progress: a human-readable line on stderr. On a terminal it is redrawn in
//    place (carriage return) every step; in a log file it is a plain line about
//    every 10% of the run, so logs stay short.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

namespace llamart::observe {

// An update that was judged and not applied (runtime/train/anomaly.h).
struct SkipRecord {
  int64_t step;
  const char *reason;   // "nonfinite" | "spike" | "gemm_checksum"
  double loss, grad_norm, lr;
  double loss_z, grad_norm_z; // NaN when not computed
  int64_t attempt;      // TrainState::attempts of this update
  uint64_t data_epoch;  // where the update's first batch came from
  uint64_t data_index;
  double elapsed_s;
  int64_t gemm_failures = -1; // GEMMs whose checksum failed; < 0 = not logged
  bool recomputed = false;    // the update is being recomputed on the same batch
};

// A return to an earlier checkpoint after a burst of skipped updates; the
// data stream does not go back, so the batches in between are skipped.
struct RollbackRecord {
  int64_t step;              // the update that completed the burst
  int64_t to_step;           // the checkpoint's step; training goes on from it
  std::string checkpoint;    // its directory
  uint64_t checkpoint_epoch; // data position stored in the checkpoint
  uint64_t checkpoint_index;
  uint64_t data_epoch;       // data position training continues from
  uint64_t data_index;
  int64_t discarded_checkpoints; // newer checkpoints deleted
  double elapsed_s;
};

class EventWriter;

class MetricsLog {
public:
  // Creates or appends to `path`, and when `tensorboard_dir` is not empty
  // starts a new event file in it; throws std::runtime_error naming the path.
  explicit MetricsLog(const std::string &path, const std::string &tensorboard_dir = "");
  ~MetricsLog();
  MetricsLog(const MetricsLog &) = delete;
  MetricsLog &operator=(const MetricsLog &) = delete;

  void log_step(int64_t step, double loss, double lr, double grad_norm,
                double tokens_per_s, double elapsed_s);
  void log_eval(int64_t step, double val_loss);
  // {"step", "skipped", "loss", "grad_norm", "lr", "loss_z", "grad_norm_z",
  //  "attempt", "data_epoch", "data_index", "elapsed_s"}; non-finite numbers
  // are written as null.
  void log_skip(const SkipRecord &r);
  // {"step", "rollback_to", "checkpoint", "checkpoint_data_epoch",
  //  "checkpoint_data_index", "data_epoch", "data_index",
  //  "discarded_checkpoints", "elapsed_s"}
  void log_rollback(const RollbackRecord &r);

private:
  void write_line(const std::string &line);
  std::string path_;
  std::FILE *file_ = nullptr;
  std::unique_ptr<EventWriter> events_;
};

class Progress {
public:
  // Steps run from start_step (exclusive) to total_steps; `quiet` silences it.
  Progress(int64_t start_step, int64_t total_steps, bool quiet);
  Progress(int64_t start_step, int64_t total_steps, bool quiet, bool live);
  ~Progress() { finish(); } // an error message must not land on the live line
  Progress(const Progress &) = delete;
  Progress &operator=(const Progress &) = delete;
  void update(int64_t step, double loss, double lr, double tokens_per_s);
  // Prints a full line (eval results, checkpoint notes) without garbling the
  // live line: it is cleared first and redrawn by the next update.
  void message(const std::string &line);
  // Ends the live line, if one is shown.
  void finish();
  bool live() const { return live_; }

private:
  std::string format(int64_t step, double loss, double lr,
                     double tokens_per_s) const;
  int64_t start_step_, total_steps_;
  bool quiet_, live_;
  bool line_shown_ = false;
  int64_t plain_every_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1h02m", "3m05s", "12s"
std::string format_duration(double seconds);

} // namespace llamart::observe
