// `llama-run plot RUN_DIR [-o FILE.png]`: metrics.png of a run, finished or
// still going (runtime/observe/plot.h).
#pragma once

int run_plot(int argc, char **argv);
