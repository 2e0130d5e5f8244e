// The process grid of a partitioned program: MPI start-up, the per-axis
// sub-communicators, and the deadline-bounded wait every collective uses
// (collectives.cpp holds the collectives themselves).
//
// Why a polling wait instead of blocking MPI calls: a blocking MPI_Allreduce
// whose peer died or took a different code path hangs forever, and a hung
// multi-node job burns its allocation silently. Non-blocking calls completed
// with MPI_Testall let us give up after a deadline with a message naming the
// rank and the collective. The poll sleeps with a growing back-off because
// our CPU test setup oversubscribes (4 ranks on 2 cores): a spinning waiter
// would steal the core from the very peer it is waiting for.
#include "runtime/comm/context.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

namespace llamart::comm {
namespace detail {

Context &context() {
  static Context ctx;
  return ctx;
}

const char *axis_name(Axis axis) {
  switch (axis) {
  case Axis::World: return "world";
  case Axis::DP: return "dp";
  case Axis::TP: return "tp";
  }
  return "unknown-axis";
}

MPI_Comm axis_comm(Axis axis) {
  Context &ctx = context();
  switch (axis) {
  case Axis::World: return MPI_COMM_WORLD;
  case Axis::DP: return ctx.dp_comm;
  case Axis::TP: return ctx.tp_comm;
  }
  throw std::runtime_error("comm: axis " + std::to_string(int(axis)) +
                           " is not a grid axis (expected -1 world, 0 dp, 1 tp)");
}

std::byte *staging(size_t bytes) {
  std::vector<std::byte> &buf = context().staging;
  if (buf.size() < bytes)
    buf.resize(bytes);
  return buf.data();
}

static std::string rank_prefix() {
  const Context &ctx = context();
  return "rank " + std::to_string(ctx.world_rank) + " (dp " +
         std::to_string(ctx.world_rank / ctx.tp) + ", tp " +
         std::to_string(ctx.world_rank % ctx.tp) + ")";
}

static std::string describe(const Call &call) {
  return std::string(call.collective) + " over " + axis_name(call.axis) + " ('" +
         (call.what ? call.what : "") + "')";
}

[[noreturn]] static void abort_now(const std::string &line, int code) {
  // One write so lines of different ranks do not interleave mid-line.
  std::string text = line + "\n";
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
  int mpi_up = 0, mpi_down = 0;
  MPI_Initialized(&mpi_up);
  MPI_Finalized(&mpi_down);
  if (mpi_up && !mpi_down)
    MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

void check_mpi(int rc, const Call &call, const char *mpi_function) {
  if (rc == MPI_SUCCESS)
    return;
  char reason[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, reason, &len) != MPI_SUCCESS)
    len = std::snprintf(reason, sizeof reason, "MPI error code %d", rc);
  abort_now(rank_prefix() + ": " + describe(call) + ": " + mpi_function +
                " failed: " + std::string(reason, size_t(len)) + "; ending the job",
            1);
}

void wait_all(MPI_Request *requests, int count, const Call &call) {
  using clock = std::chrono::steady_clock;
  const Context &ctx = context();
  const auto start = clock::now();
  const auto deadline = start + std::chrono::duration<double>(ctx.timeout_s);
  // Spin briefly (small collectives finish in microseconds when peers are on
  // their own cores), then sleep 2 us doubling to 128 us. Sleeping, however
  // short, hands the core to a peer on an oversubscribed machine; the cap is
  // low because OpenMPI moves a large message in fragments only while we are
  // inside MPI_Testall (a 1 ms cap made a 64 MiB all-reduce on 8 ranks over
  // 2 cores ~1.7x slower than 100 us). A rank left waiting then costs a
  // few thousand cheap polls a second.
  constexpr int kSpins = 64;
  constexpr long kMaxSleepUs = 128;
  long sleep_us = 2;
  for (int polls = 0;; ++polls) {
    int done = 0;
    check_mpi(MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE), call,
              "MPI_Testall");
    if (done)
      return;
    if (polls < kSpins) {
      std::this_thread::yield();
      continue;
    }
    if (clock::now() >= deadline) {
      char seconds[32];
      std::snprintf(seconds, sizeof seconds, "%g", ctx.timeout_s);
      abort_now(rank_prefix() + ": " + describe(call) + " timed out after " +
                    seconds + " s: a peer died or diverged; ending the job",
                1);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    sleep_us = std::min(sleep_us * 2, kMaxSleepUs);
  }
}

// A positive number from the environment, or `fallback` when unset. A value
// that is set but malformed is an error: silently ignoring a typo in a
// timeout would leave the user with a job that hangs 10 minutes.
static double positive_env(const char *name, double fallback) {
  const char *text = std::getenv(name);
  if (!text || !*text)
    return fallback;
  char *end = nullptr;
  double value = std::strtod(text, &end);
  if (*end != '\0' || !(value > 0) || !std::isfinite(value))
    throw std::runtime_error(std::string("comm: ") + name + "='" + text +
                             "' is not a positive number");
  return value;
}

} // namespace detail

using detail::context;
using detail::Context;

static void check_init(int rc, const char *mpi_function) {
  if (rc == MPI_SUCCESS)
    return;
  char reason[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, reason, &len);
  throw std::runtime_error(std::string("comm::init: ") + mpi_function +
                           " failed: " + std::string(reason, size_t(len)));
}

void init(int dp, int tp, double timeout_s) {
  Context &ctx = context();
  if (ctx.initialized)
    throw std::runtime_error("comm::init: called twice (grid dp=" +
                             std::to_string(ctx.dp) + " x tp=" + std::to_string(ctx.tp) +
                             " already built)");
  if (dp < 1 || tp < 1)
    throw std::runtime_error("comm::init: grid dp=" + std::to_string(dp) + " x tp=" +
                             std::to_string(tp) + " has an axis smaller than 1");
  // Read the environment before starting MPI so a bad value costs nothing.
  const double timeout = detail::positive_env(
      "LLAMA_COMM_TIMEOUT_S", timeout_s > 0 ? timeout_s : 600.0);
  const double staging = detail::positive_env(
      "LLAMA_COMM_CHUNK_BYTES", double(detail::kDefaultStagingBytes));

  int mpi_up = 0, mpi_down = 0;
  MPI_Initialized(&mpi_up);
  MPI_Finalized(&mpi_down);
  if (mpi_down)
    throw std::runtime_error("comm::init: MPI was already finalized in this process "
                             "(MPI cannot be restarted)");
  bool started = false;
  if (!mpi_up) {
    // FUNNELED: OpenMP threads compute, only the main thread communicates.
    int provided = 0;
    check_init(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided),
               "MPI_Init_thread");
    started = true;
  }
  int world_size = 0, world_rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  if (int64_t(world_size) != int64_t(dp) * tp) {
    // Every rank sees the same mismatch and leaves the same way; finalizing
    // (rather than exiting with MPI up) keeps mpirun from reporting a crash
    // on top of our message.
    if (started)
      MPI_Finalize();
    throw std::runtime_error(
        "this binary is partitioned for dp=" + std::to_string(dp) + " x tp=" +
        std::to_string(tp) + " = " + std::to_string(int64_t(dp) * tp) +
        " ranks but runs on " + std::to_string(world_size) +
        "; start it with llama-run -n " + std::to_string(int64_t(dp) * tp));
  }
  // Errors come back as codes so check_mpi can name the collective that
  // failed; split communicators inherit the handler from their parent.
  check_init(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN),
             "MPI_Comm_set_errhandler");
  // Ranks with the same tp_index form a DP group, ordered by dp_index; ranks
  // with the same dp_index (consecutive world ranks) form a TP group.
  const int dp_index = world_rank / tp, tp_index = world_rank % tp;
  MPI_Comm dp_comm = MPI_COMM_NULL, tp_comm = MPI_COMM_NULL;
  check_init(MPI_Comm_split(MPI_COMM_WORLD, tp_index, dp_index, &dp_comm),
             "MPI_Comm_split (dp axis)");
  check_init(MPI_Comm_split(MPI_COMM_WORLD, dp_index, tp_index, &tp_comm),
             "MPI_Comm_split (tp axis)");

  ctx.initialized = true;
  ctx.started_mpi = started;
  ctx.dp = dp;
  ctx.tp = tp;
  ctx.world_rank = world_rank;
  ctx.world_size = world_size;
  ctx.timeout_s = timeout;
  ctx.staging_bytes = size_t(staging);
  ctx.dp_comm = dp_comm;
  ctx.tp_comm = tp_comm;
}

void finalize() {
  Context &ctx = context();
  if (!ctx.initialized)
    return;
  MPI_Comm_free(&ctx.dp_comm);
  MPI_Comm_free(&ctx.tp_comm);
  if (ctx.started_mpi)
    MPI_Finalize();
  ctx = Context{};
}

void abort_job(const std::string &message, int code) {
  detail::abort_now("rank " + std::to_string(context().world_rank) + ": " + message,
                    code);
}

bool initialized() { return context().initialized; }

int rank(Axis axis) {
  const Context &ctx = context();
  switch (axis) {
  case Axis::World: return ctx.world_rank;
  case Axis::DP: return ctx.world_rank / ctx.tp;
  case Axis::TP: return ctx.world_rank % ctx.tp;
  }
  throw std::runtime_error("comm::rank: axis " + std::to_string(int(axis)) +
                           " is not a grid axis");
}

int size(Axis axis) {
  const Context &ctx = context();
  switch (axis) {
  case Axis::World: return ctx.world_size;
  case Axis::DP: return ctx.dp;
  case Axis::TP: return ctx.tp;
  }
  throw std::runtime_error("comm::size: axis " + std::to_string(int(axis)) +
                           " is not a grid axis");
}

int grid_dp() { return context().dp; }
int grid_tp() { return context().tp; }
double timeout_s() { return context().timeout_s; }

} // namespace llamart::comm
