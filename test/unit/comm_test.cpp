// runtime/comm: the collectives of partitioned programs, checked against
// closed forms and against a naive reference that recomputes every rank's
// input locally (inputs are pure functions of the world rank).
//
// Run under mpirun with --grid=DPxTP (one ctest per grid): the CommGrid
// tests then run on every rank. Without --grid, only the CommSingleProcess
// tests run (the size-1 behaviour of a binary started without mpirun).
//
// Every rank must make the same sequence of collective calls even when a
// check fails, so the checks are EXPECT_* (never ASSERT_* before a
// collective): an early return on one rank would hang the others.
//
// Extra modes for the launcher tests (test/integration/llama_run.sh):
//   --mode=diverge  rank 1 skips a collective (the others must time out)
//   --mode=loop     all-reduce in a loop for --seconds=S (default 120),
//                   each rank first writing its pid to --pid-dir=DIR/rank-W.pid
#include "runtime/comm/comm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace comm = llamart::comm;
using comm::Axis;
using comm::ReduceOp;

namespace {

const Axis kAxes[] = {Axis::World, Axis::DP, Axis::TP};

// World ranks of the group of `axis` that this rank belongs to, in the
// order of their index within the group (the contract in comm.h).
std::vector<int> members(Axis axis) {
  const int dp = comm::grid_dp(), tp = comm::grid_tp(), w = comm::rank();
  std::vector<int> m;
  if (axis == Axis::World)
    for (int r = 0; r < dp * tp; ++r) m.push_back(r);
  else if (axis == Axis::DP)
    for (int r = 0; r < dp; ++r) m.push_back(r * tp + w % tp);
  else
    for (int r = 0; r < tp; ++r) m.push_back((w / tp) * tp + r);
  return m;
}

// A value with a full mantissa in [-1, 1), so that the order of additions
// shows in the rounded result.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
template <typename T> T noise(int world_rank, int64_t i) {
  const uint64_t h = mix(uint64_t(world_rank) * 0x100000001b3ull + uint64_t(i));
  return T(double(h >> 11) * 0x1.0p-52 - 1.0);
}

template <typename T> bool same_bits(const std::vector<T> &a, const std::vector<T> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

#define REQUIRE_GRID()                                                                   \
  if (!comm::initialized())                                                              \
  GTEST_SKIP() << "needs mpirun and --grid=DPxTP"

// Sizes that are not multiples of the group size, and (with a small
// LLAMA_COMM_CHUNK_BYTES) longer than one staging tile.
const int64_t kLengths[] = {1, 3, 1003, 40961};

TEST(CommGrid, Topology) {
  REQUIRE_GRID();
  const int w = comm::rank(), tp = comm::grid_tp(), dp = comm::grid_dp();
  EXPECT_EQ(comm::size(), dp * tp);
  EXPECT_EQ(comm::size(Axis::DP), dp);
  EXPECT_EQ(comm::size(Axis::TP), tp);
  EXPECT_EQ(comm::rank(Axis::DP), w / tp);
  EXPECT_EQ(comm::rank(Axis::TP), w % tp);
  // The communicators hold exactly the ranks the grid says, in that order.
  for (Axis axis : kAxes) {
    const std::vector<int> m = members(axis);
    const double mine = w;
    std::vector<double> got(m.size());
    comm::all_gather(&mine, got.data(), 1, 1, axis, "topology");
    for (size_t r = 0; r < m.size(); ++r)
      EXPECT_EQ(got[r], m[r]) << "axis " << int(axis) << " member " << r;
  }
}

// Integers in float: every partial sum is exact, so the closed form holds
// bit for bit whatever the order.
template <typename T> void all_reduce_sum_closed_form() {
  for (Axis axis : kAxes)
    for (int64_t n : kLengths) {
      std::vector<T> buf(n);
      const int w = comm::rank();
      for (int64_t i = 0; i < n; ++i) buf[i] = T(w + 1) + T(i % 97) * T(0.5);
      comm::all_reduce(buf.data(), n, ReduceOp::Sum, axis, "sum closed form");
      int64_t rank_sum = 0;
      for (int r : members(axis)) rank_sum += r + 1;
      const int64_t p = int64_t(members(axis).size());
      int64_t bad = 0;
      for (int64_t i = 0; i < n; ++i)
        bad += buf[i] != T(rank_sum) + T(p) * T(i % 97) * T(0.5);
      EXPECT_EQ(bad, 0) << "axis " << int(axis) << " n " << n;
    }
}
TEST(CommGrid, AllReduceSumClosedFormFloat) { REQUIRE_GRID(); all_reduce_sum_closed_form<float>(); }
TEST(CommGrid, AllReduceSumClosedFormDouble) { REQUIRE_GRID(); all_reduce_sum_closed_form<double>(); }

TEST(CommGrid, AllReduceSumClosedFormInt64) {
  REQUIRE_GRID();
  for (Axis axis : kAxes) {
    // Beyond 2^53: an implementation going through double would lose bits.
    std::vector<int64_t> buf(1003, (int64_t(1) << 60) + comm::rank());
    comm::all_reduce(buf.data(), int64_t(buf.size()), ReduceOp::Sum, axis, "int64");
    int64_t want = 0;
    for (int r : members(axis)) want += (int64_t(1) << 60) + r;
    for (int64_t v : buf) EXPECT_EQ(v, want) << "axis " << int(axis);
  }
}

// With rounding, the contract is the left fold in group order
// ((x_0 + x_1) + x_2) + ...: recompute it from the other ranks' inputs.
template <typename T> void all_reduce_sum_is_rank_order_fold() {
  for (Axis axis : kAxes)
    for (int64_t n : kLengths) {
      std::vector<T> buf(n), want(n);
      for (int64_t i = 0; i < n; ++i) buf[i] = noise<T>(comm::rank(), i);
      const std::vector<int> m = members(axis);
      for (int64_t i = 0; i < n; ++i) {
        T acc = noise<T>(m[0], i);
        for (size_t r = 1; r < m.size(); ++r) acc += noise<T>(m[r], i);
        want[i] = acc;
      }
      comm::all_reduce(buf.data(), n, ReduceOp::Sum, axis, "sum fold");
      EXPECT_TRUE(same_bits(buf, want)) << "axis " << int(axis) << " n " << n;
    }
}
TEST(CommGrid, AllReduceSumIsRankOrderFoldFloat) { REQUIRE_GRID(); all_reduce_sum_is_rank_order_fold<float>(); }
TEST(CommGrid, AllReduceSumIsRankOrderFoldDouble) { REQUIRE_GRID(); all_reduce_sum_is_rank_order_fold<double>(); }

TEST(CommGrid, AllReduceMax) {
  REQUIRE_GRID();
  for (Axis axis : kAxes) {
    const std::vector<int> m = members(axis);
    const int64_t n = 1003;
    std::vector<float> buf(n);
    std::vector<int64_t> ibuf(n);
    for (int64_t i = 0; i < n; ++i) {
      buf[i] = noise<float>(comm::rank(), i);
      ibuf[i] = int64_t(mix(uint64_t(comm::rank()) * 7919 + i)) >> 1;
    }
    // A NaN on the last member only: the max must be NaN everywhere.
    if (comm::rank() == m.back()) buf[17] = std::numeric_limits<float>::quiet_NaN();
    comm::all_reduce(buf.data(), n, ReduceOp::Max, axis, "max");
    comm::all_reduce(ibuf.data(), n, ReduceOp::Max, axis, "max int64");
    for (int64_t i = 0; i < n; ++i) {
      float want = -2.0f;
      int64_t iwant = std::numeric_limits<int64_t>::min();
      for (int r : m) {
        want = std::max(want, noise<float>(r, i));
        iwant = std::max(iwant, int64_t(mix(uint64_t(r) * 7919 + i)) >> 1);
      }
      if (i == 17)
        EXPECT_TRUE(std::isnan(buf[i])) << "axis " << int(axis);
      else
        EXPECT_EQ(buf[i], want) << "axis " << int(axis) << " i " << i;
      EXPECT_EQ(ibuf[i], iwant) << "axis " << int(axis) << " i " << i;
    }
  }
}

// Gathering dimension 1 of [outer, local, inner] tensors: chunk = local *
// inner, and out[o][r * chunk + j] = in_r[o][j].
template <typename T> void all_gather_middle_dim(int64_t outer, int64_t local, int64_t inner) {
  const int64_t chunk = local * inner;
  for (Axis axis : kAxes) {
    const std::vector<int> m = members(axis);
    const int64_t p = int64_t(m.size());
    std::vector<T> in(outer * chunk), out(outer * p * chunk, T(-7));
    for (int64_t i = 0; i < outer * chunk; ++i) in[i] = noise<T>(comm::rank(), i);
    comm::all_gather(in.data(), out.data(), outer, chunk, axis, "gather");
    int64_t bad = 0;
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t r = 0; r < p; ++r)
        for (int64_t j = 0; j < chunk; ++j)
          bad += out[(o * p + r) * chunk + j] != noise<T>(m[r], o * chunk + j);
    EXPECT_EQ(bad, 0) << "axis " << int(axis) << " outer " << outer << " chunk " << chunk;
  }
}
TEST(CommGrid, AllGatherMiddleDim) {
  REQUIRE_GRID();
  all_gather_middle_dim<float>(3, 5, 2);
  all_gather_middle_dim<double>(4, 7, 3);
  all_gather_middle_dim<float>(1, 11, 1);      // plain concatenation
  all_gather_middle_dim<float>(3, 257, 4);     // rows longer than a small tile
  all_gather_middle_dim<double>(1000, 3, 1);   // many short rows per tile
}

// gather: all_gather's layout on the chosen root of the group; the other
// ranks' outputs are never touched (they pass null).
template <typename T> void gather_middle_dim(int64_t outer, int64_t local, int64_t inner) {
  const int64_t chunk = local * inner;
  for (Axis axis : kAxes) {
    const std::vector<int> m = members(axis);
    const int64_t p = int64_t(m.size());
    for (int root = 0; root < int(p); ++root) {
      std::vector<T> in(outer * chunk), out(outer * p * chunk, T(-7));
      for (int64_t i = 0; i < outer * chunk; ++i) in[i] = noise<T>(comm::rank(), i);
      const bool at_root = comm::rank(axis) == root;
      comm::gather(in.data(), at_root ? out.data() : nullptr, outer, chunk, root, axis,
                   "gather to root");
      if (!at_root)
        continue;
      int64_t bad = 0;
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t r = 0; r < p; ++r)
          for (int64_t j = 0; j < chunk; ++j)
            bad += out[(o * p + r) * chunk + j] != noise<T>(m[r], o * chunk + j);
      EXPECT_EQ(bad, 0) << "axis " << int(axis) << " root " << root << " chunk " << chunk;
    }
  }
}
TEST(CommGrid, GatherToRootMiddleDim) {
  REQUIRE_GRID();
  gather_middle_dim<float>(3, 5, 2);
  gather_middle_dim<double>(1, 11, 1);
  gather_middle_dim<float>(3, 257, 4);   // rows longer than a small tile
  gather_middle_dim<double>(1000, 3, 1); // many short rows per tile
}

// gather_varying: rank r's counts[r] elements land, in rank order, on the
// root alone; zero counts (a rank holding none of a tensor) included.
template <typename T> void gather_varying_case(std::vector<int64_t> pattern) {
  for (Axis axis : kAxes) {
    const std::vector<int> m = members(axis);
    const int64_t p = int64_t(m.size());
    std::vector<int64_t> counts(p);
    for (int64_t r = 0; r < p; ++r) counts[r] = pattern[r % pattern.size()];
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    const int64_t me = comm::rank(axis);
    for (int root = 0; root < int(p); ++root) {
      std::vector<T> in(counts[me]), out(total, T(-7));
      for (int64_t i = 0; i < counts[me]; ++i) in[i] = noise<T>(comm::rank(), i);
      const bool at_root = me == root;
      comm::gather_varying(in.data(), at_root ? out.data() : nullptr, counts.data(), root,
                           axis, "gather varying");
      if (!at_root)
        continue;
      int64_t bad = 0, at = 0;
      for (int64_t r = 0; r < p; ++r)
        for (int64_t i = 0; i < counts[r]; ++i) bad += out[at++] != noise<T>(m[r], i);
      EXPECT_EQ(bad, 0) << "axis " << int(axis) << " root " << root;
    }
  }
}
TEST(CommGrid, GatherVaryingToEveryRoot) {
  REQUIRE_GRID();
  gather_varying_case<float>({5, 0, 3, 17});
  gather_varying_case<double>({0, 1});
  gather_varying_case<float>({1000, 1});
}

// The input is [outer, p * chunk] on every rank; rank r gets the fold over
// members (in group order) of column block r.
template <typename T> void reduce_scatter_middle_dim(int64_t outer, int64_t chunk) {
  for (Axis axis : kAxes) {
    const std::vector<int> m = members(axis);
    const int64_t p = int64_t(m.size()), me = comm::rank(axis);
    const int64_t row = p * chunk;
    std::vector<T> in(outer * row), out(outer * chunk, T(-7)), want(outer * chunk);
    for (int64_t i = 0; i < outer * row; ++i) in[i] = noise<T>(comm::rank(), i);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < chunk; ++j) {
        const int64_t at = o * row + me * chunk + j;
        T acc = noise<T>(m[0], at);
        for (int64_t r = 1; r < p; ++r) acc += noise<T>(m[r], at);
        want[o * chunk + j] = acc;
      }
    comm::reduce_scatter(in.data(), out.data(), outer, chunk, axis, "scatter");
    EXPECT_TRUE(same_bits(out, want)) << "axis " << int(axis) << " outer " << outer
                                      << " chunk " << chunk;
  }
}
TEST(CommGrid, ReduceScatterMiddleDim) {
  REQUIRE_GRID();
  reduce_scatter_middle_dim<float>(3, 10);
  reduce_scatter_middle_dim<double>(5, 6);
  reduce_scatter_middle_dim<float>(1, 13);
  reduce_scatter_middle_dim<float>(3, 1031);   // rows longer than a small tile
  reduce_scatter_middle_dim<double>(999, 2);   // many short rows per tile
}

// reduce_scatter then all_gather is an all-reduce (ZeRO-1 relies on it).
TEST(CommGrid, ReduceScatterThenAllGatherIsAllReduce) {
  REQUIRE_GRID();
  for (Axis axis : kAxes) {
    const int64_t p = comm::size(axis), chunk = 301, n = p * chunk;
    std::vector<float> full(n), part(chunk), gathered(n);
    for (int64_t i = 0; i < n; ++i) full[i] = noise<float>(comm::rank(), i);
    comm::reduce_scatter(full.data(), part.data(), 1, chunk, axis, "zero1 grads");
    comm::all_gather(part.data(), gathered.data(), 1, chunk, axis, "zero1 params");
    comm::all_reduce(full.data(), n, ReduceOp::Sum, axis, "zero1 reference");
    EXPECT_TRUE(same_bits(gathered, full)) << "axis " << int(axis);
  }
}

TEST(CommGrid, Broadcast) {
  REQUIRE_GRID();
  for (Axis axis : kAxes) {
    const std::vector<int> m = members(axis);
    const int root = int(m.size()) - 1;
    std::vector<unsigned char> bytes(4099);
    for (size_t i = 0; i < bytes.size(); ++i)
      bytes[i] = (unsigned char)mix(uint64_t(comm::rank()) * 131 + i);
    comm::broadcast(bytes.data(), int64_t(bytes.size()), root, axis, "bcast");
    int64_t bad = 0;
    for (size_t i = 0; i < bytes.size(); ++i)
      bad += bytes[i] != (unsigned char)mix(uint64_t(m[root]) * 131 + i);
    EXPECT_EQ(bad, 0) << "axis " << int(axis);
  }
}

// All ranks hold the same bits after an all-reduce, and a second run over
// the same inputs gives the same bits again.
TEST(CommGrid, BitIdenticalOnEveryRankAndEveryRun) {
  REQUIRE_GRID();
  const int64_t n = 40961, p = comm::size();
  std::vector<float> first(n), second(n), everyone(n * p);
  for (int64_t i = 0; i < n; ++i) first[i] = second[i] = noise<float>(comm::rank(), i) * 1e3f;
  comm::all_reduce(first.data(), n, ReduceOp::Sum, Axis::World, "run 1");
  comm::all_reduce(second.data(), n, ReduceOp::Sum, Axis::World, "run 2");
  EXPECT_TRUE(same_bits(first, second));
  comm::all_gather(first.data(), everyone.data(), 1, n, Axis::World, "compare");
  for (int64_t r = 0; r < p; ++r)
    EXPECT_EQ(std::memcmp(everyone.data() + r * n, first.data(), n * sizeof(float)), 0)
        << "rank " << r << " holds different bits";
}

TEST(CommGrid, BarrierWaitsForTheLastRank) {
  REQUIRE_GRID();
  using clock = std::chrono::steady_clock;
  comm::barrier(Axis::World, "align");
  const auto start = clock::now();
  if (comm::rank() == comm::size() - 1)
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  comm::barrier(Axis::World, "late rank");
  const double waited = std::chrono::duration<double>(clock::now() - start).count();
  EXPECT_GE(waited, 0.25);
}

// Argument errors are detected before any message is sent, identically on
// every rank, so they can throw.
TEST(CommGrid, BadArgumentsThrow) {
  REQUIRE_GRID();
  float x[8] = {};
  const int p = comm::size(Axis::TP);
  EXPECT_THROW(comm::broadcast(x, 4, p, Axis::TP, "bad root"), std::runtime_error);
  EXPECT_THROW(comm::all_reduce(x, -1, ReduceOp::Sum, Axis::World, "neg"), std::runtime_error);
  EXPECT_THROW(comm::all_gather(x, x, 1, 1, Axis::World, "alias"), std::runtime_error);
  EXPECT_THROW(comm::all_reduce(x, 1, ReduceOp::Sum, Axis(5), "axis"), std::runtime_error);
  try {
    comm::broadcast(x, 4, p, Axis::TP, "bad root");
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("broadcast over tp ('bad root')"), std::string::npos)
        << e.what();
  }
}

// ---- without init(): one process, size 1, collectives are copies ----

#define REQUIRE_SINGLE()                                                                 \
  if (comm::initialized())                                                               \
  GTEST_SKIP() << "runs without mpirun only"

TEST(CommSingleProcess, SizeOneGrid) {
  REQUIRE_SINGLE();
  EXPECT_EQ(comm::grid_dp(), 1);
  EXPECT_EQ(comm::grid_tp(), 1);
  for (Axis axis : kAxes) {
    EXPECT_EQ(comm::size(axis), 1);
    EXPECT_EQ(comm::rank(axis), 0);
  }
}

TEST(CommSingleProcess, CollectivesAreCopies) {
  REQUIRE_SINGLE();
  std::vector<double> buf = {1.5, -2.0, 3.25};
  comm::all_reduce(buf.data(), 3, ReduceOp::Sum, Axis::World, "sum");
  comm::all_reduce(buf.data(), 3, ReduceOp::Max, Axis::TP, "max");
  EXPECT_EQ(buf, (std::vector<double>{1.5, -2.0, 3.25}));
  std::vector<float> in = {1, 2, 3, 4, 5, 6}, out(6, 0.0f);
  comm::all_gather(in.data(), out.data(), 2, 3, Axis::TP, "gather");
  EXPECT_EQ(out, in);
  std::fill(out.begin(), out.end(), 0.0f);
  comm::reduce_scatter(in.data(), out.data(), 3, 2, Axis::DP, "scatter");
  EXPECT_EQ(out, in);
  char bytes[4] = {'a', 'b', 'c', 'd'};
  comm::broadcast(bytes, 4, 0, Axis::World, "bcast");
  EXPECT_EQ(std::string(bytes, 4), "abcd");
  EXPECT_THROW(comm::broadcast(bytes, 4, 1, Axis::World, "bcast"), std::runtime_error);
  comm::barrier(Axis::World, "barrier");
  EXPECT_FALSE(comm::initialized());
}

// Starts MPI as a singleton (world size 1) for a 2 x 2 program: the message
// must say what the binary needs and how to start it.
TEST(CommSingleProcess, WorldSizeMismatchNamesBothSizes) {
  REQUIRE_SINGLE();
  try {
    comm::init(2, 2);
    ADD_FAILURE() << "init(2, 2) on one process did not throw";
  } catch (const std::runtime_error &e) {
    EXPECT_STREQ(e.what(), "this binary is partitioned for dp=2 x tp=2 = 4 ranks but runs "
                           "on 1; start it with llama-run -n 4");
  }
  EXPECT_FALSE(comm::initialized());
  EXPECT_EQ(comm::size(), 1);
}

TEST(CommSingleProcess, BadTimeoutEnvironmentIsRejected) {
  REQUIRE_SINGLE();
  setenv("LLAMA_COMM_TIMEOUT_S", "ten", 1);
  try {
    comm::init(1, 1);
    ADD_FAILURE() << "init accepted LLAMA_COMM_TIMEOUT_S=ten";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("LLAMA_COMM_TIMEOUT_S='ten'"), std::string::npos)
        << e.what();
  }
  unsetenv("LLAMA_COMM_TIMEOUT_S");
  EXPECT_FALSE(comm::initialized());
}

// Prints failures of ranks other than 0 (whose output goes through the
// usual printer), prefixed with the rank, so a one-rank failure is visible.
class RankFailurePrinter : public testing::EmptyTestEventListener {
  void OnTestPartResult(const testing::TestPartResult &r) override {
    if (r.failed())
      std::fprintf(stderr, "rank %d: %s:%d: %s\n", comm::rank(),
                   r.file_name() ? r.file_name() : "?", r.line_number(), r.summary());
  }
};

bool starts_with(const char *s, const char *prefix) {
  return std::strncmp(s, prefix, std::strlen(prefix)) == 0;
}

int run_diverge() {
  // Rank 1 "computes" far longer than the timeout instead of joining: the
  // others must give up after LLAMA_COMM_TIMEOUT_S and end the job.
  float x = 1.0f;
  if (comm::rank() == 1)
    std::this_thread::sleep_for(std::chrono::seconds(120));
  else
    comm::all_reduce(&x, 1, ReduceOp::Sum, Axis::World, "diverged");
  comm::finalize();
  return 0;
}

int run_loop(const std::string &pid_dir, double seconds) {
  if (!pid_dir.empty()) {
    const std::string path = pid_dir + "/rank-" + std::to_string(comm::rank()) + ".pid";
    std::ofstream(path + ".tmp") << getpid() << "\n";
    std::rename((path + ".tmp").c_str(), path.c_str()); // readers never see half a pid
  }
  std::vector<float> x(4096, 1.0f);
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    comm::all_reduce(x.data(), int64_t(x.size()), ReduceOp::Max, Axis::World, "loop");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  comm::finalize();
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  testing::InitGoogleTest(&argc, argv);
  int dp = 0, tp = 0;
  std::string mode = "test", pid_dir;
  double seconds = 120;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    if (starts_with(a, "--grid=") && std::sscanf(a + 7, "%dx%d", &dp, &tp) == 2) continue;
    if (starts_with(a, "--mode=")) { mode = a + 7; continue; }
    if (starts_with(a, "--pid-dir=")) { pid_dir = a + 10; continue; }
    if (starts_with(a, "--seconds=")) { seconds = std::atof(a + 10); continue; }
    std::fprintf(stderr, "comm_test: unknown argument '%s' (expected --grid=DPxTP, "
                         "--mode=test|diverge|loop, --pid-dir=DIR, --seconds=S)\n", a);
    return 2;
  }
  if (dp > 0) {
    try {
      // Short enough that a failing test (hanging its peers) ends the job soon.
      comm::init(dp, tp, 60.0);
    } catch (const std::exception &e) {
      std::fprintf(stderr, "comm_test: %s\n", e.what());
      return 1;
    }
  } else if (mode != "test") {
    std::fprintf(stderr, "comm_test: --mode=%s needs --grid=DPxTP\n", mode.c_str());
    return 2;
  }
  if (mode == "diverge") return run_diverge();
  if (mode == "loop") return run_loop(pid_dir, seconds);
  if (mode != "test") {
    std::fprintf(stderr, "comm_test: unknown --mode=%s\n", mode.c_str());
    return 2;
  }
  // Without a grid only the single-process tests apply (and ctest discovers
  // only those); with one, only the grid tests.
  if (testing::GTEST_FLAG(filter) == "*")
    testing::GTEST_FLAG(filter) = comm::initialized() ? "CommGrid.*" : "CommSingleProcess.*";
  if (comm::initialized() && comm::rank() != 0) {
    testing::TestEventListeners &l = testing::UnitTest::GetInstance()->listeners();
    delete l.Release(l.default_result_printer());
    l.Append(new RankFailurePrinter);
  }
  const int failed = RUN_ALL_TESTS();
  comm::finalize();
  return failed;
}
