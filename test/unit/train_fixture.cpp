#include "test/unit/train_fixture.h"

#include "runtime/comm/comm.h"
#include "runtime/cli/cli.h"
#include "runtime/data/shards.h"
#include "runtime/program/rng.h"

#include <algorithm>
#include <cmath>
#include <csignal>
#include <string>
#include <vector>

namespace llamart::testing {

std::atomic<int64_t> bigram_train_calls{0};
std::atomic<int64_t> raise_sigterm_at_call{0};

std::vector<int32_t> bigram_chain_tokens(int64_t n, uint64_t seed, int vocab) {
  Rng rng(seed);
  std::vector<int32_t> out(static_cast<size_t>(n));
  int32_t tok = 0;
  for (auto &t : out) {
    tok = rng.uniform() < 0.9 ? (5 * tok + 3) % vocab
                              : static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
    t = tok;
  }
  return out;
}

std::string make_bigram_dataset(const std::string &dir, int vocab, bool with_val) {
  std::filesystem::create_directories(dir);
  const uint64_t v = static_cast<uint64_t>(vocab);
  data::write_shard(dir + "/train_00000.tok", bigram_chain_tokens(3000, 1, vocab), v);
  data::write_shard(dir + "/train_00001.tok", bigram_chain_tokens(1500, 2, vocab), v);
  if (with_val)
    data::write_shard(dir + "/val_00000.tok", bigram_chain_tokens(800, 3, vocab), v);
  return dir;
}

namespace {

// Loss, and the gradients when `grads` is not null.
template <typename T, int V, int B, int S>
void bigram_compute(const void *params_v, T *grads, const int32_t *tokens,
                    const int32_t *targets, void *arena, double *loss_out) {
  const T *w = static_cast<const T *>(params_v);
  const T *g = w + V * V;
  // Scratch in the arena, so an arena the driver sized wrongly would show.
  double *z = static_cast<double *>(arena);
  std::vector<double> acc(V * V + V, 0.0);

  int64_t scored = 0;
  for (int i = 0; i < B * S; ++i)
    scored += targets[i] != kBigramIgnoreIndex;
  double loss = 0.0;
  for (int i = 0; i < B * S && scored > 0; ++i) {
    const int tgt = targets[i];
    if (tgt == kBigramIgnoreIndex)
      continue;
    const int tok = tokens[i];
    double m = -INFINITY;
    for (int j = 0; j < V; ++j) {
      z[j] = static_cast<double>(w[tok * V + j]) * static_cast<double>(g[j]);
      m = std::max(m, z[j]);
    }
    double sum = 0.0;
    for (int j = 0; j < V; ++j)
      sum += std::exp(z[j] - m);
    const double lse = m + std::log(sum);
    loss += lse - z[tgt];
    for (int j = 0; j < V; ++j) {
      const double d = (std::exp(z[j] - lse) - (j == tgt ? 1.0 : 0.0)) /
                       static_cast<double>(scored);
      acc[tok * V + j] += d * static_cast<double>(g[j]);
      acc[V * V + j] += d * static_cast<double>(w[tok * V + j]);
    }
  }
  if (grads)
    for (int k = 0; k < V * V + V; ++k)
      grads[k] = static_cast<T>(acc[k]);
  *loss_out = scored > 0 ? loss / static_cast<double>(scored) : 0.0;
}

template <typename T, int V, int B, int S>
void bigram_eval_loss(const void *params_v, const int32_t *tokens,
                      const int32_t *targets, void *arena, double *loss_out) {
  bigram_compute<T, V, B, S>(params_v, nullptr, tokens, targets, arena, loss_out);
}

template <typename T, int V, int B, int S>
void bigram_train_step(const void *params_v, void *grads_v, const int32_t *tokens,
                       const int32_t *targets, void *arena, double *loss_out) {
  bigram_compute<T, V, B, S>(params_v, static_cast<T *>(grads_v), tokens,
                             targets, arena, loss_out);
  const int64_t call = ++bigram_train_calls;
  if (raise_sigterm_at_call.load() > 0 && call == raise_sigterm_at_call.load())
    std::raise(SIGTERM);
}

template <typename T, int V, int S>
void bigram_logits(const void *params_v, const int32_t *tokens, void *,
                   void *logits_v) {
  const T *w = static_cast<const T *>(params_v);
  const T *g = w + V * V;
  T *out = static_cast<T *>(logits_v);
  for (int t = 0; t < S; ++t)
    for (int j = 0; j < V; ++j)
      out[t * V + j] = static_cast<T>(static_cast<double>(w[tokens[t] * V + j]) *
                                      static_cast<double>(g[j]));
}

// Rank (dp, tp) of the partitioned bigram (train_fixture.h): loss and, when
// `grads` is not null, this rank's gradients.
template <typename T, int V, int GB, int S, int DP, int TP>
void bigram_grid_compute(const void *params_v, T *grads, const int32_t *tokens,
                         const int32_t *targets, void *arena, double *loss_out) {
  constexpr int B = GB / DP, R = V / TP, kGap = 3;
  const T *w = static_cast<const T *>(params_v);   // rows [lo, lo + R) of W
  const T *g = w + R * V + kGap;
  const int lo = comm::rank(comm::Axis::TP) * R;
  double *z = static_cast<double *>(arena);        // [B * S, V] logits
  std::fill(z, z + B * S * V, 0.0);
  for (int i = 0; i < B * S; ++i) {
    const int row = tokens[i] - lo;
    if (row >= 0 && row < R)
      for (int j = 0; j < V; ++j)
        z[i * V + j] = static_cast<double>(w[row * V + j]) * static_cast<double>(g[j]);
  }
  comm::all_reduce(z, B * S * V, comm::ReduceOp::Sum, comm::Axis::TP, "bigram logits");

  int64_t scored = 0;
  for (int i = 0; i < B * S; ++i)
    scored += targets[i] != kBigramIgnoreIndex;
  comm::all_reduce(&scored, 1, comm::ReduceOp::Sum, comm::Axis::DP, "bigram scored");
  std::vector<double> dw(R * V, 0.0), dg(V, 0.0);
  double loss = 0.0;
  for (int i = 0; i < B * S && scored > 0; ++i) {
    const int tgt = targets[i];
    if (tgt == kBigramIgnoreIndex)
      continue;
    const double *zi = z + i * V;
    double m = -INFINITY;
    for (int j = 0; j < V; ++j)
      m = std::max(m, zi[j]);
    double sum = 0.0;
    for (int j = 0; j < V; ++j)
      sum += std::exp(zi[j] - m);
    const double lse = m + std::log(sum);
    loss += lse - zi[tgt];
    const int row = tokens[i] - lo;
    if (row < 0 || row >= R)
      continue; // another tp rank owns this token's row
    for (int j = 0; j < V; ++j) {
      const double d = (std::exp(zi[j] - lse) - (j == tgt ? 1.0 : 0.0)) /
                       static_cast<double>(scored);
      dw[row * V + j] += d * static_cast<double>(g[j]);
      dg[j] += d * static_cast<double>(w[row * V + j]);
    }
  }
  comm::all_reduce(&loss, 1, comm::ReduceOp::Sum, comm::Axis::DP, "bigram loss");
  if (grads) {
    // Every tp rank owns other rows, so the gain's gradient is their sum.
    comm::all_reduce(dg.data(), V, comm::ReduceOp::Sum, comm::Axis::TP, "bigram dg");
    for (int k = 0; k < R * V; ++k)
      grads[k] = static_cast<T>(dw[k]);
    for (int j = 0; j < V; ++j)
      grads[R * V + kGap + j] = static_cast<T>(dg[j]);
  }
  *loss_out = scored > 0 ? loss / static_cast<double>(scored) : 0.0;
}

template <typename T, int V, int GB, int S, int DP, int TP>
void bigram_grid_train_step(const void *params, void *grads, const int32_t *tokens,
                            const int32_t *targets, void *arena, double *loss) {
  bigram_grid_compute<T, V, GB, S, DP, TP>(params, static_cast<T *>(grads), tokens,
                                           targets, arena, loss);
  const int64_t call = ++bigram_train_calls;
  if (raise_sigterm_at_call.load() > 0 && call == raise_sigterm_at_call.load())
    std::raise(SIGTERM);
}

template <typename T, int V, int GB, int S, int DP, int TP>
void bigram_grid_eval_loss(const void *params, const int32_t *tokens,
                           const int32_t *targets, void *arena, double *loss) {
  bigram_grid_compute<T, V, GB, S, DP, TP>(params, nullptr, tokens, targets, arena,
                                           loss);
}

} // namespace

template <typename T, int V, int GB, int S, int DP, int TP>
const ProgramInfo *bigram_grid_program() {
  static_assert(GB % DP == 0 && V % TP == 0, "the grid must divide batch and vocab");
  constexpr int R = V / TP, kGap = 3;
  static const ParamInfo params[2] = {
      {"model.embed_tokens.weight", 2, {R, V, 0, 0}, R * V, 0, ParamInit::Normal,
       0, {V, V, 0, 0}},
      {"model.norm.weight", 1, {V, 0, 0, 0}, V, R * V + kGap, ParamInit::Ones,
       -1, {V, 0, 0, 0}},
  };
  static const std::string config =
      "{\"model_type\": \"bigram\", \"vocab_size\": " + std::to_string(V) + "}";
  // On a dp grid, three ZeRO-1 gradient buckets (one cut inside the
  // embedding, one past it, the last ending in the padding), so every
  // multi-rank test runs the bucketed reduce-scatter, all-gather and
  // checkpoint gathers.
  constexpr int64_t kNumel = int64_t(R) * V + kGap + V,
                    kPadded = (kNumel + DP - 1) / DP * DP;
  static const int64_t bounds[4] = {0, int64_t(R) * V / 2 / DP * DP,
                                    (int64_t(R) * V + kGap + 1) / DP * DP, kPadded};
  static const ProgramInfo info = [] {
    ProgramInfo i = {
      kProgramAbiVersion,
      "bigram",
      config.c_str(),
      sizeof(T) == 8 ? DType::F64 : DType::F32,
      GB / DP,
      S,
      V,
      kBigramIgnoreIndex,
      2,
      params,
      R * V + kGap + V,
      0.5,
      static_cast<int64_t>((GB / DP) * S * V * sizeof(double)),
      &bigram_grid_train_step<T, V, GB, S, DP, TP>,
      0,
      0,
      nullptr,
      static_cast<int64_t>((GB / DP) * S * V * sizeof(double)),
      &bigram_grid_eval_loss<T, V, GB, S, DP, TP>,
      DP,
      TP,
      /*sequence_parallel=*/0,
      GB,
      V * V + V,
    };
    if (DP > 1) {
      i.num_grad_buckets = 3;
      i.grad_bucket_bounds = bounds;
    }
    return i;
  }();
  return &info;
}

template <typename T, int V, int B, int S> const ProgramInfo *bigram_program() {
  static const ParamInfo params[2] = {
      {"model.embed_tokens.weight", 2, {V, V, 0, 0}, V * V, 0, ParamInit::Normal,
       -1, {V, V, 0, 0}},
      {"model.norm.weight", 1, {V, 0, 0, 0}, V, V * V, ParamInit::Ones,
       -1, {V, 0, 0, 0}},
  };
  static const std::string config =
      "{\"model_type\": \"bigram\", \"vocab_size\": " + std::to_string(V) + "}";
  static const ProgramInfo info = {
      kProgramAbiVersion,
      "bigram",
      config.c_str(),
      sizeof(T) == 8 ? DType::F64 : DType::F32,
      B,
      S,
      V,
      kBigramIgnoreIndex,
      2,
      params,
      V * V + V,
      0.5,
      static_cast<int64_t>(V * sizeof(double)),
      &bigram_train_step<T, V, B, S>,
      1,
      0,
      &bigram_logits<T, V, S>,
      static_cast<int64_t>(V * sizeof(double)),
      &bigram_eval_loss<T, V, B, S>,
      /*grid_dp=*/1,
      /*grid_tp=*/1,
      /*sequence_parallel=*/0,
      /*global_batch=*/B,
      /*full_param_numel=*/V * V + V,
  };
  return &info;
}

template const ProgramInfo *bigram_program<float, 16, 4, 8>();
template const ProgramInfo *bigram_program<double, 16, 4, 8>();
template const ProgramInfo *bigram_program<double, 3, 2, 3>();
template const ProgramInfo *bigram_program<float, 12, 4, 8>();
template const ProgramInfo *bigram_program<float, 64, 2, 16>();

template const ProgramInfo *bigram_grid_program<float, 16, 4, 8, 2, 1>();
template const ProgramInfo *bigram_grid_program<float, 16, 4, 8, 1, 2>();
template const ProgramInfo *bigram_grid_program<float, 16, 4, 8, 2, 2>();
template const ProgramInfo *bigram_grid_program<float, 16, 4, 8, 4, 1>();
template const ProgramInfo *bigram_grid_program<float, 16, 4, 8, 1, 4>();
template const ProgramInfo *bigram_grid_program<double, 16, 4, 8, 2, 2>();

CliResult run_cli(const ProgramInfo *program, const std::string &argv0,
                  std::vector<std::string> args) {
  args.insert(args.begin(), argv0);
  std::vector<char *> argv;
  for (std::string &a : args)
    argv.push_back(a.data());
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  const int code = llamart::run_main(static_cast<int>(argv.size()), argv.data(), program);
  return {code, ::testing::internal::GetCapturedStdout(),
          ::testing::internal::GetCapturedStderr()};
}

} // namespace llamart::testing
