// run_plot_command (plot.h): the `plot` subcommand shared by the training
// binaries and llama-run, which needs no model and no runtime beyond plot.h.
#include "runtime/observe/plot.h"

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

namespace llamart::observe {

namespace {

const char *kPlotUsage = R"(usage: %s plot RUN_DIR [-o FILE.png]
  draws RUN_DIR/metrics.jsonl (or a metrics.jsonl given directly) into
  RUN_DIR/metrics.png, or FILE.png with -o: train and val loss, learning rate,
  gradient norm (log scale), skipped updates and rollbacks over the step.
  Works while the run is going: it draws what has been written so far.
)";

} // namespace

int run_plot_command(int argc, char **argv, const char *program) {
  std::string run, out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::printf(kPlotUsage, program);
      return 0;
    }
    if (a == "-o" || a == "--out") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s plot: error: %s needs a file name\n", program, a.c_str());
        return 2;
      }
      out = argv[++i];
    } else if (a.rfind("--out=", 0) == 0) {
      out = a.substr(6);
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "%s plot: error: unknown flag '%s'\n", program, a.c_str());
      return 2;
    } else if (run.empty()) {
      run = a;
    } else {
      std::fprintf(stderr, "%s plot: error: one RUN_DIR expected, got '%s' and '%s'\n",
                   program, run.c_str(), a.c_str());
      return 2;
    }
  }
  if (run.empty()) {
    std::fprintf(stderr, kPlotUsage, program);
    return 2;
  }
  try {
    const PlotResult r = plot_run(run, out);
    std::printf("wrote %s (%lld updates, %lld evals, %lld skipped, %lld non-finite values not drawn)\n",
                r.png_path.c_str(), static_cast<long long>(r.updates),
                static_cast<long long>(r.evals), static_cast<long long>(r.skipped),
                static_cast<long long>(r.nonfinite));
    return 0;
  } catch (const std::exception &e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s plot: error: %s\n", program, e.what());
    return 1;
  }
}

} // namespace llamart::observe
