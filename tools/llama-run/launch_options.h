// The launcher's command line: `llama-run [flags] [--] PROGRAM ARGS...`.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace llama_run {

// A bad command line; the message names the flag. Exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct LaunchOptions {
  int ranks = 0;               // -n N
  std::string timeout;         // --timeout S, as given ("" = not given)
  int max_restarts = 0;        // --max-restarts R
  bool slurm = false;          // --slurm: srun instead of mpirun
  bool dry_run = false;        // print the command line instead of running it
  bool help = false;
  std::vector<std::string> program; // PROGRAM ARGS...
};

// Throws UsageError. Flags end at `--` or at the first word that is not a
// flag: everything after belongs to the program, its own flags included.
LaunchOptions parse_launch_options(int argc, char **argv);

extern const char *const kLaunchHelp;

} // namespace llama_run
