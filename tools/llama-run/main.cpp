// llama-run: runs training binaries (the launcher, launch.cpp) and hosts
// subcommands that work on a run. A subcommand is chosen by the first
// argument; any other command line is the launcher's (it always starts with
// a flag such as -n), so adding one never touches the launcher.
#include "tools/llama-run/launch.h"
#include "tools/llama-run/plot.h"

#include <cstring>

namespace {

struct Subcommand {
  const char *name;
  // Gets argv from the subcommand's name on (argv[0] == name).
  int (*run)(int argc, char **argv);
};

// Register subcommands here, each implemented in its own file.
const Subcommand kSubcommands[] = {
    {"plot", run_plot}, // plot.h
};

} // namespace

int main(int argc, char **argv) {
  if (argc >= 2)
    for (const Subcommand &s : kSubcommands)
      if (s.name && std::strcmp(argv[1], s.name) == 0)
        return s.run(argc - 1, argv + 1);
  return run_launch(argc, argv);
}
