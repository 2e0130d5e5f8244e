#include "tools/llama-run/launch_options.h"

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace llama_run {

const char *const kLaunchHelp = R"(usage: llama-run -n N [options] [--] PROGRAM ARGS...
       llama-run --slurm -n N [options] [--] PROGRAM ARGS...
       llama-run plot RUN_DIR [-o FILE.png]   (loss, LR and grad-norm plot of a run)

Runs PROGRAM (a training binary from llama-compile, partitioned for a grid of
N = dp x tp ranks) as N ranks, and ends the whole job when any rank fails.

  -n N                 number of ranks (required)
  --timeout S          seconds a collective may wait for its peers before the
                       job is ended with a message naming the rank and the
                       collective (exported as LLAMA_COMM_TIMEOUT_S; the
                       binary's default is 600)
  --max-restarts R     when the job fails, start it again up to R times; if
                       the arguments contain `train`, `--resume` is added so
                       the run continues from its latest checkpoint (default 0)
  --slurm              run inside a Slurm allocation with
                       srun --ntasks=N --kill-on-bad-exit=1 --mpi=pmix
                       instead of a local mpirun
  --dry-run            print the mpirun (or srun) command line and exit
  -h, --help           this text

Local runs use )" LLAMA_RUN_MPIRUN R"( with --bind-to none (each rank runs an
OpenMP team, pinning ranks to one core each would serialize it), adding
--oversubscribe when N exceeds the cores and --allow-run-as-root as root.
Each rank gets OMP_NUM_THREADS = max(1, cores / N) unless OMP_NUM_THREADS is
set (under Slurm: SLURM_CPUS_PER_TASK when set). The exit status is the
job's (128 + signal when a rank was killed).

When one rank dies (crash, kill -9, exit status != 0) mpirun (or srun with
--kill-on-bad-exit) stops the others at once; a rank that hangs is caught by
the collective timeout of its peers.

examples:
  llama-run -n 4 ./tiny-train train --data shards --steps 1000
  llama-run -n 8 --max-restarts 3 ./llama-7b-train train --data shards --steps 20000
  llama-run --slurm -n 64 --timeout 900 ./llama-65b-train train --data shards --steps 1000
)";

namespace {

int positive_int(const std::string &flag, const std::string &text, int min) {
  char *end = nullptr;
  errno = 0;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE || v < min || v > INT_MAX)
    throw UsageError(flag + " '" + text + "' is not an integer >= " + std::to_string(min));
  return int(v);
}

// Splits "--flag=value" and fetches the value of "--flag value".
struct Cursor {
  int argc;
  char **argv;
  int i = 1;

  std::string value(const std::string &flag, const char *inline_value) {
    if (inline_value)
      return inline_value;
    if (i + 1 >= argc)
      throw UsageError(flag + " needs a value");
    return argv[++i];
  }
};

} // namespace

LaunchOptions parse_launch_options(int argc, char **argv) {
  LaunchOptions o;
  Cursor c{argc, argv};
  bool have_ranks = false;
  for (; c.i < argc; ++c.i) {
    std::string arg = argv[c.i];
    if (arg == "--") {
      ++c.i;
      break;
    }
    if (arg.empty() || arg[0] != '-')
      break; // the program
    const char *inline_value = nullptr;
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = argv[c.i] + eq + 1;
      arg.resize(eq);
    }
    if (arg == "-n" || arg == "--ranks") {
      o.ranks = positive_int(arg, c.value(arg, inline_value), 1);
      have_ranks = true;
    } else if (arg == "--timeout") {
      const std::string text = c.value(arg, inline_value);
      char *end = nullptr;
      const double s = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || !(s > 0) || !std::isfinite(s))
        throw UsageError("--timeout '" + text + "' is not a positive number of seconds");
      o.timeout = text;
    } else if (arg == "--max-restarts") {
      o.max_restarts = positive_int(arg, c.value(arg, inline_value), 0);
    } else if (inline_value) {
      throw UsageError(arg + " takes no value");
    } else if (arg == "--slurm") {
      o.slurm = true;
    } else if (arg == "--dry-run") {
      o.dry_run = true;
    } else if (arg == "-h" || arg == "--help") {
      o.help = true;
      return o;
    } else {
      throw UsageError("unknown flag '" + arg + "' (see llama-run --help)");
    }
  }
  o.program.assign(argv + c.i, argv + argc);
  if (!have_ranks)
    throw UsageError("-n N (the number of ranks) is required");
  if (o.program.empty())
    throw UsageError("no program to run (usage: llama-run -n N [options] [--] PROGRAM ARGS...)");
  return o;
}

} // namespace llama_run
