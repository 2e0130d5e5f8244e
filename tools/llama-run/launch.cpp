// run_launch: parse, build the mpirun/srun line, run it (again, after a
// failure, up to --max-restarts times) and forward its exit status.
#include "tools/llama-run/launch.h"

#include "tools/llama-run/launch_command.h"
#include "tools/llama-run/launch_options.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace llama_run {
namespace {

volatile sig_atomic_t g_child = 0;
volatile sig_atomic_t g_interrupted = 0;

// The user (or the batch system) asked the job to stop: pass the signal on
// to mpirun/srun, which end the ranks, and do not restart afterwards.
// Signals from the terminal (Ctrl-C: si_code SI_KERNEL) reach the launched
// process already, being in our process group; forwarding them too would
// make mpirun take them as a second Ctrl-C.
void on_stop_signal(int sig, siginfo_t *info, void *) {
  g_interrupted = 1;
  if (g_child > 0 && !(info && info->si_code == SI_KERNEL))
    kill(pid_t(g_child), sig);
}

void install_signal_forwarding() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_stop_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP})
    sigaction(sig, &sa, nullptr);
}

// Runs argv to completion; returns its exit status (128 + signal when it was
// killed), or throws when it could not be started.
int run_to_completion(const std::vector<std::string> &argv, const Env &env) {
  std::vector<char *> cargv;
  for (const std::string &a : argv)
    cargv.push_back(const_cast<char *>(a.c_str()));
  cargv.push_back(nullptr);
  int exec_error[2];
  if (pipe2(exec_error, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  const pid_t pid = fork();
  if (pid < 0)
    throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    // If llama-run itself is killed (kill -9, OOM) the job must not live on
    // unsupervised: mpirun/srun get SIGTERM and end the ranks.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    for (const auto &[name, value] : env)
      setenv(name.c_str(), value.c_str(), 1);
    execvp(cargv[0], cargv.data());
    const int err = errno;
    (void)!write(exec_error[1], &err, sizeof err);
    _exit(127);
  }
  g_child = pid;
  if (g_interrupted) // a stop signal came between fork() and the line above
    kill(pid, SIGTERM);
  close(exec_error[1]);
  int err = 0;
  const bool exec_failed = read(exec_error[0], &err, sizeof err) == sizeof err;
  close(exec_error[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_child = 0;
  if (exec_failed)
    throw std::runtime_error("cannot run " + argv[0] + ": " + std::strerror(err));
  if (WIFSIGNALED(status))
    return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

int launch(const LaunchOptions &o) {
  const Host host = probe_host();
  const Env env = rank_environment(o, host);
  auto command = [&](const std::vector<std::string> &program, const Env &e) {
    return o.slurm ? srun_command(o, e, program) : mpirun_command(o, host, e, program);
  };
  if (o.dry_run) {
    std::printf("%s\n", shell_line(command(o.program, env)).c_str());
    return 0;
  }
  install_signal_forwarding();
  std::vector<std::string> program = o.program;
  for (int attempt = 0;; ++attempt) {
    // Which launch this is (0 = the first): fault injection (--inject
    // kill@N) fires in the first launch only, as a crashed host does not
    // crash again at the same step after a restart.
    Env attempt_env = env;
    if (attempt > 0)
      attempt_env.emplace_back("LLAMA_RUN_RESTART", std::to_string(attempt));
    const int status = run_to_completion(command(program, attempt_env), attempt_env);
    if (status == 0 || g_interrupted || attempt == o.max_restarts)
      return status;
    bool resumes = false;
    program = restart_program(program, &resumes);
    std::fprintf(stderr, "llama-run: job failed (exit %d); restart %d of %d%s\n", status,
                 attempt + 1, o.max_restarts, resumes ? " from the latest checkpoint" : "");
    std::fflush(stderr);
  }
}

} // namespace
} // namespace llama_run

int run_launch(int argc, char **argv) {
  using namespace llama_run;
  try {
    const LaunchOptions o = parse_launch_options(argc, argv);
    if (o.help) {
      std::fputs(kLaunchHelp, stdout);
      return 0;
    }
    return launch(o);
  } catch (const UsageError &e) {
    std::fprintf(stderr, "llama-run: %s\n", e.what());
    return 2;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "llama-run: %s\n", e.what());
    return 1;
  }
}
