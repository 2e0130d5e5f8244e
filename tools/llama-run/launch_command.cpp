#include "tools/llama-run/launch_command.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>

namespace llama_run {

namespace {

int read_int_file(const std::string &path, int fallback) {
  std::ifstream f(path);
  int v = fallback;
  return (f >> v) ? v : fallback;
}

const char *env_or_null(const char *name) {
  const char *v = std::getenv(name);
  return v && *v ? v : nullptr;
}

} // namespace

Host probe_host() {
  Host h;
  h.root = geteuid() == 0;
  // The affinity mask, not the machine's CPU count: under taskset, cgroups
  // cpusets or a Slurm step only these CPUs are ours.
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) {
    h.cpus = h.physical_cores = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
    return h;
  }
  h.cpus = std::max(1, CPU_COUNT(&set));
  // OpenMPI gives each core (not each hardware thread) one slot, and refuses
  // more ranks than slots without --oversubscribe.
  std::set<std::pair<int, int>> cores;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set))
      continue;
    const std::string topo = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    cores.insert({read_int_file(topo + "physical_package_id", 0),
                  read_int_file(topo + "core_id", cpu)});
  }
  h.physical_cores = std::max(1, int(cores.size()));
  return h;
}

Env rank_environment(const LaunchOptions &o, const Host &host) {
  Env env;
  if (!env_or_null("OMP_NUM_THREADS")) {
    // One OpenMP team per rank, the cores split evenly: more threads than
    // cores would make every rank's GEMMs fight for them.
    int threads = std::max(1, host.cpus / o.ranks);
    if (o.slurm) {
      // Slurm knows what each task was given; without that, assume the
      // tasks of this node share this node's CPUs.
      if (const char *c = env_or_null("SLURM_CPUS_PER_TASK"))
        threads = std::max(1, std::atoi(c));
      else if (const char *t = env_or_null("SLURM_NTASKS_PER_NODE"))
        threads = std::max(1, host.cpus / std::max(1, std::atoi(t)));
    }
    env.emplace_back("OMP_NUM_THREADS", std::to_string(threads));
  }
  if (!o.timeout.empty())
    env.emplace_back("LLAMA_COMM_TIMEOUT_S", o.timeout);
  return env;
}

std::vector<std::string> mpirun_command(const LaunchOptions &o, const Host &host,
                                        const Env &env,
                                        const std::vector<std::string> &program) {
  std::vector<std::string> cmd = {LLAMA_RUN_MPIRUN};
#if LLAMA_RUN_OPEN_MPI
  if (host.root)
    cmd.push_back("--allow-run-as-root");
  if (o.ranks > host.physical_cores)
    cmd.push_back("--oversubscribe");
#endif
  // Ranks run OpenMP teams; binding each to one core would serialize them.
  cmd.insert(cmd.end(), {"--bind-to", "none"});
#if LLAMA_RUN_OPEN_MPI
  // OpenMPI 4.1's aggregation of identical help messages garbles them when
  // several ranks abort at once ("Data unpack would read past end of
  // buffer"); the unaggregated message is the readable one.
  cmd.insert(cmd.end(), {"--mca", "orte_base_help_aggregate", "0"});
#endif
  cmd.insert(cmd.end(), {"-n", std::to_string(o.ranks)});
  for (const auto &[name, value] : env) {
#if LLAMA_RUN_OPEN_MPI
    cmd.insert(cmd.end(), {"-x", name + "=" + value});
#else
    cmd.insert(cmd.end(), {"-genv", name, value}); // MPICH / Intel MPI (hydra)
#endif
  }
  cmd.insert(cmd.end(), program.begin(), program.end());
  return cmd;
}

std::vector<std::string> srun_command(const LaunchOptions &o, const Env &env,
                                      const std::vector<std::string> &program) {
  // --kill-on-bad-exit: one failed task ends the step (srun's default is to
  // let the others run, which would leave them waiting in a collective).
  std::vector<std::string> cmd = {"srun", "--ntasks=" + std::to_string(o.ranks),
                                  "--kill-on-bad-exit=1", "--mpi=pmix"};
  std::string exports = "--export=ALL";
  for (const auto &[name, value] : env)
    exports += "," + name + "=" + value;
  cmd.push_back(exports);
  cmd.insert(cmd.end(), program.begin(), program.end());
  return cmd;
}

std::vector<std::string> restart_program(const std::vector<std::string> &program,
                                         bool *resumes) {
  std::vector<std::string> next = program;
  const bool trains = std::find(next.begin() + 1, next.end(), "train") != next.end();
  const bool has_resume = std::find(next.begin(), next.end(), "--resume") != next.end();
  if (trains && !has_resume)
    next.push_back("--resume");
  *resumes = trains;
  return next;
}

std::string shell_line(const std::vector<std::string> &argv) {
  std::string line;
  for (const std::string &a : argv) {
    if (!line.empty())
      line += ' ';
    const bool plain = !a.empty() && a.find_first_not_of(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=/.,:@%") ==
        std::string::npos;
    if (plain) {
      line += a;
      continue;
    }
    line += '\'';
    for (char ch : a)
      line += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    line += '\'';
  }
  return line;
}

} // namespace llama_run
