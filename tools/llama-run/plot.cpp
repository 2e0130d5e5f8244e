#include "tools/llama-run/plot.h"

#include "runtime/observe/plot.h"

int run_plot(int argc, char **argv) {
  return llamart::observe::run_plot_command(argc, argv, "llama-run");
}
