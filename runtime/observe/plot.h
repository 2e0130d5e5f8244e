// metrics.png: a picture of a run drawn from its metrics.jsonl (metrics.h),
// at the end of `train` and on demand (`plot` of a training binary,
// `llama-run plot`), also while the run is still writing the file.
//
// Three panels share the step axis: loss (train line, val points joined),
// learning rate, gradient norm (log scale when every norm is positive).
// Skipped updates are red ticks at the foot of the loss and grad-norm panels,
// rollbacks brown ticks at the top of the loss panel. A run longer than the
// plot is wide is reduced to the min and max of each pixel column, so a
// one-step spike stays visible at any length. Non-finite values (null in the
// JSON) are not drawn; the header says how many there were.
#pragma once
#include "runtime/observe/png_writer.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace llamart::observe {

struct MetricsHistory {
  struct Update {
    int64_t step;
    double loss, lr, grad_norm; // NaN where the record had null
  };
  std::vector<Update> updates;                    // by step; the last record of a step wins
  std::vector<std::pair<int64_t, double>> evals; // (step, val_loss), same rule
  std::vector<int64_t> skipped;                   // steps of skip records, sorted, unique
  std::vector<int64_t> rollbacks;                 // steps of rollback records
  int64_t nonfinite = 0; // loss / lr / grad_norm / val_loss values that were null
};

// Reads a metrics.jsonl. Records with other keys than the known kinds are
// ignored (newer writers may add kinds). A last line without its newline
// that does not parse is one being written and is ignored. Throws
// std::runtime_error "PATH:LINE: what is wrong" on a malformed line and
// "PATH: ..." when the file cannot be read or has no record to draw.
MetricsHistory read_metrics(const std::string &path);

struct PlotSize {
  int width = 1000, height = 960;
};

// The plot as an indexed image; `source` names the file in the header.
// Throws std::invalid_argument when the size is below 320 x 300.
IndexedImage render_metrics(const MetricsHistory &history, const std::string &source,
                            PlotSize size = {});

struct PlotResult {
  std::string png_path;
  int64_t updates = 0, evals = 0, skipped = 0, nonfinite = 0;
};

// Reads `run` (a run directory, or a metrics.jsonl file) and writes the plot
// to `png_path` (default: metrics.png beside the metrics file) atomically.
PlotResult plot_run(const std::string &run, const std::string &png_path = "");

// `<program> plot RUN_DIR [-o FILE.png]`, argv[0] == "plot": exit status 0,
// 1 on an error, 2 on a usage error; the messages go to stderr.
int run_plot_command(int argc, char **argv, const char *program);

} // namespace llamart::observe
