#include "tools/llama-run/plot.h"

#include "runtime/train/plot.h"

int run_plot(int argc, char **argv) {
  return llamart::train::run_plot_command(argc, argv, "llama-run");
}
