// The command lines the launcher runs, as pure functions of the options and
// of what it found out about this machine (so --dry-run prints exactly what
// would run, and tests can check it).
#pragma once
#include "tools/llama-run/launch_options.h"

#include <string>
#include <utility>
#include <vector>

namespace llama_run {

struct Host {
  int cpus = 1;           // logical CPUs this process may run on
  int physical_cores = 1; // distinct cores among them (mpirun's default slots)
  bool root = false;
};

Host probe_host();

using Env = std::vector<std::pair<std::string, std::string>>;

// What every rank gets on top of the inherited environment:
// OMP_NUM_THREADS (unless the user set it) and LLAMA_COMM_TIMEOUT_S (with
// --timeout).
Env rank_environment(const LaunchOptions &o, const Host &host);

std::vector<std::string> mpirun_command(const LaunchOptions &o, const Host &host,
                                        const Env &env,
                                        const std::vector<std::string> &program);
std::vector<std::string> srun_command(const LaunchOptions &o, const Env &env,
                                      const std::vector<std::string> &program);

// The program's arguments for a restart: `--resume` appended when they
// contain the `train` subcommand and no `--resume` yet.
std::vector<std::string> restart_program(const std::vector<std::string> &program,
                                         bool *resumes);

// One line a POSIX shell parses back into `argv`.
std::string shell_line(const std::vector<std::string> &argv);

} // namespace llama_run
