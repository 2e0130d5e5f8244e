// Tests of the training driver (runtime/train, runtime/cli) against the hand-written
// bigram program of train_fixture.h: optimizer, schedule and clipping against
// closed forms; the train/verify/generate/info subcommands end to end through
// run_main(), including bit-exact resume and corrupted-checkpoint fallback.
#include "runtime/checkpoint/safetensors.h"
#include "runtime/data/shards.h"
#include "runtime/train/anomaly.h"
#include "runtime/train/checkpoint_dir.h"
#include "runtime/cli/cli.h"
#include "runtime/train/fault_inject.h"
#include "runtime/cli/generate.h"
#include "runtime/train/optimizer.h"
#include "runtime/program/param_store.h"
#include "runtime/program/program.h"
#include "runtime/program/rng.h"
#include "runtime/train/run_lock.h"
#include "runtime/train/schedule.h"
#include "test/unit/train_fixture.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <omp.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using llamart::ParamInfo;
using llamart::ProgramInfo;
using nlohmann::json;
using namespace llamart;
using namespace llamart::cli;
using namespace llamart::train;

namespace {

constexpr int kV = 16;
const ProgramInfo *bigram_f32() { return llamart::testing::bigram_program<float, kV, 4, 8>(); }
const ProgramInfo *bigram_f64() { return llamart::testing::bigram_program<double, kV, 4, 8>(); }

// A fresh directory per test, removed afterwards.
struct TempDir : llamart::testing::TempDir {
  TempDir() : llamart::testing::TempDir("llamart_train_test") {}
};

using llamart::testing::CliResult;

CliResult run_cli(const ProgramInfo *program, std::vector<std::string> args) {
  return llamart::testing::run_cli(program, "bigram-train", std::move(args));
}

std::vector<int32_t> chain_tokens(int64_t n, uint64_t seed) {
  return llamart::testing::bigram_chain_tokens(n, seed, kV);
}

std::string make_dataset(const TempDir &tmp, bool with_val = true) {
  return llamart::testing::make_bigram_dataset(tmp / "data", kV, with_val);
}

// Key order is part of what is checked, so lines keep it.
using ordered_json = nlohmann::ordered_json;

std::vector<ordered_json> read_jsonl(const std::string &path) {
  std::ifstream in(path);
  std::vector<ordered_json> out;
  std::string line;
  while (std::getline(in, line))
    out.push_back(ordered_json::parse(line));
  return out;
}

std::vector<ordered_json> step_entries(const std::vector<ordered_json> &lines) {
  std::vector<ordered_json> out;
  for (const ordered_json &j : lines)
    if (j.contains("loss"))
      out.push_back(j);
  return out;
}

std::string read_bytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> train_args(const std::string &data, const std::string &run,
                                    int steps) {
  return {"train", "--data", data, "--run-dir", run, "--steps", std::to_string(steps),
          "--lr", "0.05", "--warmup", "4", "--quiet"};
}

std::vector<std::string> plus(std::vector<std::string> a,
                              const std::vector<std::string> &b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ---------------------------------------------------------------------------
// LR schedule

TEST(Schedule, WarmupPeakCosineAndEnd) {
  LrSchedule s;
  s.peak_lr = 1e-3;
  s.min_lr_ratio = 0.1;
  s.warmup_steps = 10;
  s.total_steps = 110;
  EXPECT_DOUBLE_EQ(s.at(0), 0.0);
  EXPECT_DOUBLE_EQ(s.at(1), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(5), 5e-4);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);                      // peak at end of warmup
  EXPECT_NEAR(s.at(60), (1e-3 + 1e-4) / 2, 1e-15);       // cosine midpoint
  // A quarter into the decay: min + (peak - min) (1 + cos(pi/4)) / 2.
  EXPECT_NEAR(s.at(35), 1e-4 + 9e-4 * (1 + std::sqrt(0.5)) / 2, 1e-15);
  EXPECT_DOUBLE_EQ(s.at(110), 1e-4);                     // min at the last step
  EXPECT_DOUBLE_EQ(s.at(500), 1e-4);
  for (int64_t step = 11; step < 110; ++step)
    EXPECT_LT(s.at(step + 1), s.at(step)) << step;
}

TEST(Schedule, DefaultWarmupAndValidation) {
  EXPECT_EQ(default_warmup_steps(10), 1);
  EXPECT_EQ(default_warmup_steps(100), 5);
  EXPECT_EQ(default_warmup_steps(1000000), 2000);
  LrSchedule s;
  s.min_lr_ratio = 1.5;
  EXPECT_THROW(s.validate(), std::runtime_error);
}

// ---------------------------------------------------------------------------
// AdamW, clipping, init

// A two-param program table (a 2x2 matrix and a 2-vector gain) for the
// optimizer alone.
struct TinyTable {
  ParamInfo params[2] = {
      {"w", 2, {2, 2, 0, 0}, 4, 0, llamart::ParamInit::Normal, -1, {2, 2, 0, 0}},
      {"g", 1, {2, 0, 0, 0}, 2, 4, llamart::ParamInit::Ones, -1, {2, 0, 0, 0}},
  };
  ProgramInfo program{};
  TinyTable() {
    program.num_params = 2;
    program.params = params;
    program.param_numel = 6;
    program.model_name = "tiny";
    program.grid_dp = program.grid_tp = 1;
    program.full_param_numel = 6;
  }
};

TEST(AdamW, MatchesHandComputedUpdates) {
  TinyTable t;
  AdamWConfig c;
  c.beta1 = 0.9;
  c.beta2 = 0.95;
  c.eps = 1e-8;
  c.weight_decay = 0.1;
  std::vector<double> p = {0.5, -0.25, 1.0, 2.0, 1.0, 0.75};
  const std::vector<double> p0 = p;
  std::vector<double> m(6, 0.0), v(6, 0.0);
  const std::vector<double> g1 = {0.1, -0.2, 0.0, 3.0, 0.5, -1.0};
  const std::vector<double> g2 = {-0.3, 0.1, 0.2, 1.0, -0.5, 2.0};
  const double lr1 = 1e-2, lr2 = 5e-3, scale2 = 0.5;

  adamw_update<double>(t.program, c, 1, lr1, 1.0, p.data(), g1.data(), m.data(), v.data());
  adamw_update<double>(t.program, c, 2, lr2, scale2, p.data(), g2.data(), m.data(), v.data());

  for (int i = 0; i < 6; ++i) {
    const bool decays = i < 4; // only the 2-D param
    const double wd = decays ? 0.1 : 0.0;
    // Step 1: m = 0.1 g, v = 0.05 g^2, bias corrections 0.1 and 0.05, so the
    // step is lr * g / (|g| + eps).
    const double a = g1[i];
    double x = p0[i] * (1 - lr1 * wd) - lr1 * a / (std::fabs(a) + 1e-8);
    // Step 2 with gradient b = 0.5 g2.
    const double b = scale2 * g2[i];
    const double m2 = 0.9 * 0.1 * a + 0.1 * b;
    const double v2 = 0.95 * 0.05 * a * a + 0.05 * b * b;
    const double bc1 = 1 - 0.9 * 0.9, bc2 = 1 - 0.95 * 0.95;
    x = x * (1 - lr2 * wd) - lr2 * (m2 / bc1) / (std::sqrt(v2 / bc2) + 1e-8);
    EXPECT_NEAR(p[i], x, 1e-14) << "element " << i;
    EXPECT_NEAR(m[i], m2, 1e-15);
    EXPECT_NEAR(v[i], v2, 1e-15);
  }
}

TEST(AdamW, ConstantGradientMovesEachWeightByLr) {
  // With a constant gradient the bias-corrected moments are exactly g and g^2,
  // so every step moves a weight by lr * sign(g) (up to eps), plus decay.
  TinyTable t;
  AdamWConfig c;
  c.weight_decay = 0.0;
  std::vector<float> p(6, 0.0f), m(6, 0.0f), v(6, 0.0f);
  const std::vector<float> g = {1.0f, -2.0f, 0.5f, -0.25f, 4.0f, -8.0f};
  for (int step = 1; step <= 3; ++step)
    adamw_update<float>(t.program, c, step, 1e-3, 1.0, p.data(), g.data(), m.data(), v.data());
  for (int i = 0; i < 6; ++i)
    EXPECT_NEAR(p[i], g[i] > 0 ? -3e-3 : 3e-3, 1e-7) << i;
}

TEST(GradClip, NormAndScale) {
  const std::vector<float> g = {3.0f, 4.0f};
  EXPECT_DOUBLE_EQ(grad_l2_norm(g.data(), 2, 1.0), 5.0);
  EXPECT_DOUBLE_EQ(grad_l2_norm(g.data(), 2, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(clip_scale(5.0, 1.0), 1.0 / (5.0 + 1e-6));
  EXPECT_DOUBLE_EQ(clip_scale(0.5, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(clip_scale(50.0, 0.0), 1.0); // clipping off
  // Clipped norm of the scaled gradient is the limit (up to the 1e-6).
  EXPECT_NEAR(5.0 * clip_scale(5.0, 1.0), 1.0, 1e-6);
}

TEST(GradClip, NormIsIdenticalForAnyThreadCount) {
  std::vector<float> g(300001);
  Rng rng(7);
  for (float &x : g)
    x = static_cast<float>(rng.uniform() - 0.5);
  double naive = 0.0;
  for (float x : g)
    naive += static_cast<double>(x) * x;
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = grad_l2_norm(g.data(), static_cast<int64_t>(g.size()), 1.0);
  omp_set_num_threads(3);
  const double three = grad_l2_norm(g.data(), static_cast<int64_t>(g.size()), 1.0);
  omp_set_num_threads(threads);
  EXPECT_EQ(one, three); // bitwise
  EXPECT_NEAR(one, std::sqrt(naive), 1e-9 * std::sqrt(naive));
}

TEST(ParamInit, NormalStatisticsOnesAndDeterminism) {
  const ProgramInfo *p = llamart::testing::bigram_program<float, 64, 2, 16>();
  std::vector<float> a(p->param_numel), b(p->param_numel), c(p->param_numel);
  init_params(*p, 42, a.data());
  init_params(*p, 42, b.data());
  init_params(*p, 43, c.data());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  double sum = 0, sq = 0;
  const int64_t n = 64 * 64;
  for (int64_t i = 0; i < n; ++i) {
    sum += a[i];
    sq += static_cast<double>(a[i]) * a[i];
  }
  const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 4 * 0.5 / std::sqrt(n)); // init_std 0.5
  EXPECT_NEAR(sd, 0.5, 0.03);
  for (int64_t i = n; i < n + 64; ++i)
    EXPECT_EQ(a[i], 1.0f);
  // Uniforms of the generator: the documented xoshiro256** stream is stable.
  Rng r1(99), r2(99);
  for (int i = 0; i < 100; ++i)
    ASSERT_EQ(r1.next_u64(), r2.next_u64());
}

// ---------------------------------------------------------------------------
// train

TEST(Train, LowersLossAndPrintsFinalLosses) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  const CliResult r = run_cli(bigram_f32(), train_args(data, tmp / "run", 150));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto steps = step_entries(read_jsonl(tmp / "run/metrics.jsonl"));
  ASSERT_EQ(steps.size(), 150u);
  const double first = steps.front()["loss"], last = steps.back()["loss"];
  // Random init (std 0.5) starts near log(16) = 2.77; the chain's entropy is ~0.57.
  EXPECT_GT(first, 2.0);
  EXPECT_LT(last, 1.2);
  double final_train = 0, final_val = 0;
  ASSERT_EQ(std::sscanf(r.out.c_str(), "final train loss: %lf\nfinal val loss: %lf",
                        &final_train, &final_val), 2)
      << r.out;
  EXPECT_NEAR(final_train, last, 1e-6);
  EXPECT_LT(final_val, 1.2);
  EXPECT_GT(final_val, 0.4); // cannot beat the chain's entropy by much
}

TEST(Train, MetricsJsonlContentAndAppendOnResume) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  CliResult r = run_cli(bigram_f32(),
                        plus(train_args(data, tmp / "run", 20), {"--eval-every", "5"}));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto lines = read_jsonl(tmp / "run/metrics.jsonl");
  ASSERT_EQ(lines.size(), 24u); // 20 updates + evals at 5, 10, 15, 20
  LrSchedule s;
  s.peak_lr = 0.05;
  s.warmup_steps = 4;
  s.total_steps = 20;
  int64_t expect_step = 1;
  double last_elapsed = 0;
  for (const ordered_json &j : lines) {
    if (j.contains("val_loss")) {
      ASSERT_EQ(j.size(), 2u);
      EXPECT_EQ(j["step"].get<int64_t>() % 5, 0);
      EXPECT_EQ(j["step"].get<int64_t>(), expect_step - 1);
      EXPECT_TRUE(std::isfinite(j["val_loss"].get<double>()));
      continue;
    }
    std::vector<std::string> keys;
    for (const auto &item : j.items())
      keys.push_back(item.key());
    EXPECT_EQ(keys, (std::vector<std::string>{"step", "loss", "lr", "grad_norm",
                                              "tokens_per_s", "elapsed_s"}));
    EXPECT_EQ(j["step"].get<int64_t>(), expect_step);
    EXPECT_DOUBLE_EQ(j["lr"].get<double>(), s.at(expect_step));
    EXPECT_GT(j["grad_norm"].get<double>(), 0.0);
    EXPECT_GT(j["tokens_per_s"].get<double>(), 0.0);
    EXPECT_GE(j["elapsed_s"].get<double>(), last_elapsed);
    last_elapsed = j["elapsed_s"];
    ++expect_step;
  }
  EXPECT_DOUBLE_EQ(lines[3]["lr"].get<double>(), 0.05);      // peak at warmup end
  EXPECT_DOUBLE_EQ(lines.end()[-2]["lr"].get<double>(), 0.005); // 10% at the end

  // Extending the run appends; the existing lines stay as they were.
  r = run_cli(bigram_f32(), plus(train_args(data, tmp / "run", 30), {"--resume"}));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("differ from the checkpoint: --steps 20 -> 30"), std::string::npos)
      << r.err;
  const auto after = read_jsonl(tmp / "run/metrics.jsonl");
  ASSERT_EQ(after.size(), 24u + 10u + 1u); // + steps 21..30 + final eval
  for (size_t i = 0; i < lines.size(); ++i)
    EXPECT_EQ(after[i], lines[i]);
  EXPECT_EQ(after[24]["step"].get<int64_t>(), 21);
  EXPECT_GE(after[24]["elapsed_s"].get<double>(), last_elapsed);
}

// N updates straight == N/2, stop, resume, N/2: same losses, same bits.
void expect_exact_resume(const ProgramInfo *program, const std::vector<std::string> &extra) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  const auto straight = plus(train_args(data, tmp / "a", 24), extra);
  CliResult a = run_cli(program, straight);
  ASSERT_EQ(a.code, 0) << a.err;

  CliResult b1 = run_cli(program, plus(plus(train_args(data, tmp / "b", 24), extra),
                                       {"--stop-at", "12"}));
  ASSERT_EQ(b1.code, 0) << b1.err;
  ASSERT_TRUE(fs::exists(tmp / "b/checkpoints/step_000012/model.safetensors"));
  CliResult b2 = run_cli(program, plus(plus(train_args(data, tmp / "b", 24), extra),
                                       {"--resume"}));
  ASSERT_EQ(b2.code, 0) << b2.err;
  EXPECT_EQ(b2.err.find("warning"), std::string::npos) << b2.err;

  const auto sa = step_entries(read_jsonl(tmp / "a/metrics.jsonl"));
  const auto sb = step_entries(read_jsonl(tmp / "b/metrics.jsonl"));
  ASSERT_EQ(sa.size(), 24u);
  ASSERT_EQ(sb.size(), 24u);
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sb[i]["step"], sa[i]["step"]);
    // Bitwise: JSON doubles round-trip exactly.
    EXPECT_EQ(sb[i]["loss"].get<double>(), sa[i]["loss"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(sb[i]["grad_norm"].get<double>(), sa[i]["grad_norm"].get<double>());
    EXPECT_EQ(sb[i]["lr"].get<double>(), sa[i]["lr"].get<double>());
  }
  for (const char *file : {"model.safetensors", "optimizer.safetensors"})
    EXPECT_EQ(read_bytes(tmp / ("a/checkpoints/step_000024/" + std::string(file))),
              read_bytes(tmp / ("b/checkpoints/step_000024/" + std::string(file))))
        << file;
  EXPECT_EQ(a.out, b2.out); // final train and val loss lines
}

TEST(Train, ResumeIsBitExactF32WithAccumulationAndEval) {
  expect_exact_resume(bigram_f32(), {"--grad-accum", "3", "--eval-every", "5"});
}

TEST(Train, ResumeIsBitExactF64) { expect_exact_resume(bigram_f64(), {}); }

TEST(Train, SigtermCheckpointsThenResumesExactly) {
  TempDir tmp;
  const std::string data = make_dataset(tmp, /*with_val=*/false);
  CliResult a = run_cli(bigram_f32(), train_args(data, tmp / "a", 16));
  ASSERT_EQ(a.code, 0) << a.err;

  // SIGTERM arrives during update 7: the update completes, is checkpointed,
  // and the binary exits 128 + SIGTERM.
  llamart::testing::raise_sigterm_at_call = llamart::testing::bigram_train_calls.load() + 7;
  CliResult b1 = run_cli(bigram_f32(), train_args(data, tmp / "b", 16));
  llamart::testing::raise_sigterm_at_call = 0;
  EXPECT_EQ(b1.code, 128 + SIGTERM) << b1.err;
  EXPECT_EQ(read_bytes(tmp / "b/checkpoints/LATEST"), "step_000007\n");
  CliResult b2 = run_cli(bigram_f32(), plus(train_args(data, tmp / "b", 16), {"--resume"}));
  ASSERT_EQ(b2.code, 0) << b2.err;
  EXPECT_EQ(read_bytes(tmp / "a/checkpoints/step_000016/model.safetensors"),
            read_bytes(tmp / "b/checkpoints/step_000016/model.safetensors"));
}

TEST(Train, CheckpointLayoutStateAndKeepLast) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  CliResult r = run_cli(bigram_f32(), plus(train_args(data, tmp / "run", 12),
                                           {"--checkpoint-every", "3", "--keep-last", "2"}));
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<std::string> names;
  for (const auto &e : fs::directory_iterator(tmp / "run/checkpoints"))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"LATEST", "step_000009", "step_000012"}));
  EXPECT_EQ(read_bytes(tmp / "run/checkpoints/LATEST"), "step_000012\n");

  const std::string dir = tmp / "run/checkpoints/step_000012";
  const json state = verify_checkpoint(dir);
  EXPECT_EQ(state["step"], 12);
  EXPECT_EQ(state["model"]["name"], "bigram");
  EXPECT_EQ(state["model"]["dtype"], "f32");
  EXPECT_EQ(state["model"]["batch"], 4);
  EXPECT_EQ(state["model"]["seq_len"], 8);
  EXPECT_EQ(state["config_json"]["model_type"], "bigram");
  EXPECT_EQ(state["seed"], 1234);
  EXPECT_EQ(state["schedule"]["warmup_steps"], 4);
  EXPECT_EQ(state["schedule"]["total_steps"], 12);
  EXPECT_EQ(state["tokens_seen"], 12 * 4 * 8);
  // 12 updates x 4 windows, all within the first epoch.
  EXPECT_EQ(state["data"]["epoch"], 0);
  EXPECT_EQ(state["data"]["index"], 48);
  EXPECT_EQ(state["rng"].size(), 4u);

  const auto model = llamart::ckpt::read_safetensors(dir + "/model.safetensors");
  ASSERT_EQ(model.tensors.size(), 2u);
  EXPECT_EQ(model.tensors.at("model.embed_tokens.weight").shape,
            (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(model.tensors.at("model.norm.weight").dtype, llamart::ckpt::StDType::F32);
  const auto opt = llamart::ckpt::read_safetensors(dir + "/optimizer.safetensors");
  EXPECT_EQ(opt.tensors.size(), 4u);
  EXPECT_TRUE(opt.tensors.count("model.norm.weight.exp_avg_sq"));
  EXPECT_TRUE(opt.tensors.count("model.embed_tokens.weight.exp_avg"));

  // A fresh run into a directory that has checkpoints is refused.
  r = run_cli(bigram_f32(), train_args(data, tmp / "run", 12));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("already holds checkpoints"), std::string::npos) << r.err;
}

TEST(Train, CorruptCheckpointFallsBackToPrevious) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  CliResult a = run_cli(bigram_f32(), train_args(data, tmp / "a", 15));
  ASSERT_EQ(a.code, 0) << a.err;

  CliResult b = run_cli(bigram_f32(), plus(train_args(data, tmp / "b", 15),
                                           {"--checkpoint-every", "5", "--stop-at", "10"}));
  ASSERT_EQ(b.code, 0) << b.err;
  // Flip one bit of a weight (the last byte of the file is tensor data, so
  // the file still parses: only the checksum can tell).
  const std::string bad = tmp / "b/checkpoints/step_000010/model.safetensors";
  std::string bytes = read_bytes(bad);
  bytes.back() ^= 0x01;
  std::ofstream(bad, std::ios::binary | std::ios::trunc) << bytes;

  b = run_cli(bigram_f32(), plus(train_args(data, tmp / "b", 15), {"--resume"}));
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_NE(b.err.find("warning: " + bad + ": checksum mismatch"), std::string::npos) << b.err;
  EXPECT_NE(b.err.find("falling back to step_000005"), std::string::npos) << b.err;
  // Redone from step 5, the run still ends with the uninterrupted run's bits.
  EXPECT_EQ(read_bytes(tmp / "a/checkpoints/step_000015/model.safetensors"),
            read_bytes(tmp / "b/checkpoints/step_000015/model.safetensors"));
}

TEST(Train, CheckpointOfAnotherModelIsAnError) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  ASSERT_EQ(run_cli(bigram_f32(), train_args(data, tmp / "run", 3)).code, 0);
  // Same names, vocabulary 12 instead of 16.
  const ProgramInfo *other = llamart::testing::bigram_program<float, 12, 4, 8>();
  const CliResult r = run_cli(other, plus(train_args(data, tmp / "run", 6), {"--resume"}));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("model.safetensors: tensor model.embed_tokens.weight has shape "
                       "[16, 16], model bigram expects [12, 12]"),
            std::string::npos)
      << r.err;
}

TEST(Train, InitFromCheckpointStartsAtStepZeroWithTheseWeights) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  ASSERT_EQ(run_cli(bigram_f32(), train_args(data, tmp / "pre", 100)).code, 0);
  const CliResult r = run_cli(bigram_f32(), plus(train_args(data, tmp / "ft", 2),
                                                 {"--init-from-checkpoint", tmp / "pre"}));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto pre = step_entries(read_jsonl(tmp / "pre/metrics.jsonl"));
  const auto ft = step_entries(read_jsonl(tmp / "ft/metrics.jsonl"));
  ASSERT_EQ(ft.size(), 2u);
  EXPECT_EQ(ft[0]["step"], 1);
  // Starting from trained weights, the first loss is near the trained loss,
  // far below a random init's ~2.8.
  EXPECT_LT(ft[0]["loss"].get<double>(), pre.back()["loss"].get<double>() + 0.3);
}

// ---------------------------------------------------------------------------
// verify

// Random weights of the f64 bigram, written as `dtype` safetensors.
std::vector<double> write_weights(const std::string &path, bool as_f32,
                                  const std::vector<std::string> &drop = {},
                                  bool add_extra = false) {
  const ProgramInfo *p = bigram_f64();
  std::vector<double> w(p->param_numel);
  init_params(*p, 5, w.data());
  for (int j = 0; j < kV; ++j) // gains away from 1 so their gradient matters
    w[kV * kV + j] = 0.5 + 0.07 * j;
  if (as_f32) // exactly representable weights, so f32 storage loses nothing
    for (double &x : w)
      x = static_cast<float>(x);
  llamart::ckpt::File f;
  if (as_f32) {
    std::vector<float> wf(w.begin(), w.end());
    f.tensors["model.embed_tokens.weight"] =
        llamart::ckpt::Tensor::from_f32({kV, kV}, wf.data());
    f.tensors["model.norm.weight"] = llamart::ckpt::Tensor::from_f32({kV}, wf.data() + kV * kV);
  } else {
    add_param_tensors(*p, w.data(), "", f);
  }
  for (const auto &name : drop)
    f.tensors.erase(name);
  if (add_extra)
    f.tensors["lm_head.weight"] = llamart::ckpt::Tensor::from_f64({kV, kV}, w.data());
  llamart::ckpt::write_safetensors(path, f);
  return w;
}

// input_ids [rows, 9]; the last target of row 0 is -1 (ignored).
std::vector<int64_t> write_batch(const std::string &path, bool as_i64, int64_t rows = 4) {
  std::vector<int64_t> ids(static_cast<size_t>(rows * 9));
  const auto toks = chain_tokens(rows * 9, 11);
  for (size_t i = 0; i < ids.size(); ++i)
    ids[i] = toks[i];
  ids[8] = -1;
  llamart::ckpt::File f;
  if (as_i64) {
    llamart::ckpt::Tensor t;
    t.dtype = llamart::ckpt::StDType::I64;
    t.shape = {rows, 9};
    t.data.resize(ids.size() * 8);
    std::memcpy(t.data.data(), ids.data(), t.data.size());
    f.tensors["input_ids"] = t;
  } else {
    std::vector<int32_t> i32(ids.begin(), ids.end());
    f.tensors["input_ids"] = llamart::ckpt::Tensor::from_i32({rows, 9}, i32.data());
  }
  llamart::ckpt::write_safetensors(path, f);
  return ids;
}

// The fixture's loss at params w, by calling its train_step directly.
double fixture_loss(const std::vector<double> &w, const std::vector<int64_t> &ids) {
  const ProgramInfo *p = bigram_f64();
  std::vector<int32_t> tokens, targets;
  for (int b = 0; b < 4; ++b)
    for (int t = 0; t < 8; ++t) {
      tokens.push_back(static_cast<int32_t>(ids[b * 9 + t]));
      targets.push_back(static_cast<int32_t>(ids[b * 9 + t + 1]));
    }
  std::vector<double> grads(w.size()), arena(kV);
  double loss = 0;
  p->train_step(w.data(), grads.data(), tokens.data(), targets.data(), arena.data(), &loss);
  return loss;
}

void expect_verify_matches_finite_differences(bool f32_weights, bool i64_batch) {
  TempDir tmp;
  const auto w = write_weights(tmp / "w.safetensors", f32_weights);
  const auto ids = write_batch(tmp / "i.safetensors", i64_batch);
  const CliResult r = run_cli(bigram_f64(), {"verify", "--weights", tmp / "w.safetensors",
                                             "--batch-file", tmp / "i.safetensors",
                                             "--out", tmp / "g.safetensors"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto g = llamart::ckpt::read_safetensors(tmp / "g.safetensors");
  ASSERT_EQ(g.tensors.size(), 3u);
  const auto &loss_t = g.tensors.at("loss");
  EXPECT_TRUE(loss_t.shape.empty());
  EXPECT_EQ(loss_t.dtype, llamart::ckpt::StDType::F64);
  EXPECT_NEAR(loss_t.to_f64()[0], fixture_loss(w, ids), 1e-14);

  const auto dw = g.tensors.at("model.embed_tokens.weight").to_f64();
  const auto dg = g.tensors.at("model.norm.weight").to_f64();
  std::vector<double> grad(dw);
  grad.insert(grad.end(), dg.begin(), dg.end());
  ASSERT_EQ(grad.size(), w.size());
  const double h = 1e-6;
  double max_abs = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    auto plus_w = w, minus_w = w;
    plus_w[i] += h;
    minus_w[i] -= h;
    const double fd = (fixture_loss(plus_w, ids) - fixture_loss(minus_w, ids)) / (2 * h);
    EXPECT_NEAR(grad[i], fd, 1e-8) << "param element " << i;
    max_abs = std::max(max_abs, std::fabs(grad[i]));
  }
  EXPECT_GT(max_abs, 1e-3); // the check compared real gradients, not zeros
}

TEST(Verify, GradientsMatchFiniteDifferences) {
  expect_verify_matches_finite_differences(false, false);
}

TEST(Verify, ConvertsF32WeightsAndInt64Batches) {
  expect_verify_matches_finite_differences(true, true);
}

TEST(Verify, RejectsMissingExtraMisshapenAndWrongBatch) {
  TempDir tmp;
  write_batch(tmp / "i.safetensors", false);
  write_batch(tmp / "i3.safetensors", false, 3);
  auto verify = [&](const std::string &weights, const std::string &batch) {
    return run_cli(bigram_f64(), {"verify", "--weights", weights, "--batch-file", batch,
                                  "--out", tmp / "g.safetensors"});
  };
  write_weights(tmp / "missing.safetensors", false, {"model.norm.weight"});
  CliResult r = verify(tmp / "missing.safetensors", tmp / "i.safetensors");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("missing.safetensors: missing tensor model.norm.weight"),
            std::string::npos) << r.err;

  write_weights(tmp / "extra.safetensors", false, {}, true);
  r = verify(tmp / "extra.safetensors", tmp / "i.safetensors");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("extra.safetensors: unexpected tensor lm_head.weight"),
            std::string::npos) << r.err;

  write_weights(tmp / "ok.safetensors", false);
  r = verify(tmp / "ok.safetensors", tmp / "i3.safetensors");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("i3.safetensors: input_ids has shape [3, 9], model bigram needs [4, 9]"),
            std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "g.safetensors"));

  r = run_cli(bigram_f64(), {"verify", "--weights", tmp / "ok.safetensors"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--batch-file is required"), std::string::npos) << r.err;
}

// ---------------------------------------------------------------------------
// sampling and generate

TEST(Sampling, GreedyTopKTopPAndFrequencies) {
  const double logits[4] = {0.0, 1.0, 2.0, 2.0};
  Rng rng(3);
  SamplingConfig greedy{0.0, 0, 1.0};
  EXPECT_EQ(sample_token(logits, 4, greedy, rng), 2); // lowest index among ties
  SamplingConfig k1{1.0, 1, 1.0};
  for (int i = 0; i < 50; ++i)
    EXPECT_EQ(sample_token(logits, 4, k1, rng), 2);

  // Plain softmax sampling: frequencies within 5 sigma of the probabilities.
  const double l3[3] = {0.0, 1.0, 2.0};
  const double z = 1 + std::exp(1.0) + std::exp(2.0);
  const double prob[3] = {1 / z, std::exp(1.0) / z, std::exp(2.0) / z};
  SamplingConfig full{1.0, 0, 1.0};
  const int n = 200000;
  int count[3] = {0, 0, 0};
  for (int i = 0; i < n; ++i)
    ++count[sample_token(l3, 3, full, rng)];
  for (int k = 0; k < 3; ++k)
    EXPECT_NEAR(count[k] / double(n), prob[k], 5 * std::sqrt(prob[k] * (1 - prob[k]) / n));

  // top_k 2 renormalizes over {1, 2}; top_p 0.5 keeps only the 0.665 token.
  SamplingConfig k2{1.0, 2, 1.0};
  int c2[3] = {0, 0, 0};
  for (int i = 0; i < n; ++i)
    ++c2[sample_token(l3, 3, k2, rng)];
  EXPECT_EQ(c2[0], 0);
  const double p1 = std::exp(1.0) / (std::exp(1.0) + std::exp(2.0));
  EXPECT_NEAR(c2[1] / double(n), p1, 5 * std::sqrt(p1 * (1 - p1) / n));
  SamplingConfig p05{1.0, 0, 0.5};
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(sample_token(l3, 3, p05, rng), 2);
}

TEST(Generate, GreedyIsDeterministicAndFollowsTheArgmaxChain) {
  TempDir tmp;
  {
    std::ofstream corpus(tmp / "corpus.txt");
    const char *words[] = {"abc", "bca", "cab", "dab", "bad", "cede", "ace", "dead", "bead"};
    Rng rng(1);
    for (int line = 0; line < 300; ++line) {
      for (int w = 0; w < 8; ++w)
        corpus << words[rng.below(9)] << (w < 7 ? " " : "\n");
    }
  }
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + (tmp / "corpus.txt") + " --model_prefix=" + (tmp / "tok") +
      " --model_type=bpe --vocab_size=30 --hard_vocab_limit=false"
      " --character_coverage=1.0 --minloglevel=2");
  ASSERT_TRUE(status.ok()) << status.ToString();

  // A V = 64 bigram with random weights; the tokenizer has fewer pieces.
  using Prog = const ProgramInfo *;
  Prog p = llamart::testing::bigram_program<float, 64, 2, 16>();
  std::vector<float> w(p->param_numel);
  init_params(*p, 9, w.data());
  llamart::ckpt::File f;
  add_param_tensors(*p, w.data(), "", f);
  llamart::ckpt::write_safetensors(tmp / "model.safetensors", f);

  GenerateOptions o;
  o.checkpoint = tmp / "model.safetensors";
  o.tokenizer = tmp / "tok.model";
  o.prompt = "abc dab";
  o.max_tokens = 40; // longer than seq_len 16: the window slides
  o.sampling.temperature = 0.0;
  const GenerateResult a = run_generate(*p, o);
  o.seed = 777; // irrelevant when greedy
  const GenerateResult b = run_generate(*p, o);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.text.rfind("abc dab", 0), 0u) << a.text;

  // For a bigram model the greedy continuation is the argmax chain of W.
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(tmp / "tok.model").ok());
  const int pieces = sp.GetPieceSize();
  std::vector<int32_t> expect(a.ids.begin(), a.ids.begin() + a.prompt_tokens);
  EXPECT_EQ(expect.front(), sp.bos_id());
  for (int i = 0; i < 40; ++i) {
    const int prev = expect.back();
    int best = 0;
    for (int j = 1; j < pieces; ++j)
      if (w[prev * 64 + j] > w[prev * 64 + best])
        best = j;
    expect.push_back(best);
    if (best == sp.eos_id())
      break;
  }
  EXPECT_EQ(a.ids, expect);

  // Through the command line: the same text on stdout, tokens/s on stderr.
  const CliResult r = run_cli(p, {"generate", "--checkpoint", tmp / "model.safetensors",
                                  "--tokenizer", tmp / "tok.model", "--prompt", "abc dab",
                                  "--max-tokens", "40", "--temperature", "0"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, a.text + "\n");
  EXPECT_NE(r.err.find("tokens/s"), std::string::npos);
}

// ---------------------------------------------------------------------------
// command line

TEST(Cli, UsageErrorsExitTwoWithOneLine) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{}, "usage:"},
      {{"fly"}, "unknown command 'fly'"},
      {{"train", "--data", "/nonexistent", "--steps", "5"}, "--data: /nonexistent is not a directory"},
      {{"train", "--steps", "5"}, "--data is required"},
      {{"train", "--data", "x", "--steps", "five"}, "--steps: expected an integer, got 'five'"},
      {{"train", "--data", "x", "--steps", "5", "--bogus"}, "unknown flag --bogus"},
      {{"train", "--data", "x", "--steps", "5", "--steps", "6"}, "--steps: given twice"},
      {{"train", "--data", "x", "--steps"}, "--steps: missing value"},
      {{"generate", "--checkpoint", "c", "--tokenizer", "t", "--prompt", "p", "--top-p", "0"},
       "--top-p: must be in (0, 1]"},
  };
  for (const Case &c : cases) {
    const CliResult r = run_cli(bigram_f32(), c.args);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
  }
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  const CliResult r = run_cli(bigram_f32(), {"train", "--data", data, "--steps", "5",
                                             "--beta2", "1.5"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--beta2: must be in [0, 1)"), std::string::npos) << r.err;
}

TEST(Cli, InfoPrintsModelFacts) {
  CliResult r = run_cli(bigram_f64(), {"info"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("model: bigram\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dtype: f64\n"), std::string::npos);
  EXPECT_NE(r.out.find("params: 272\n"), std::string::npos);
  EXPECT_NE(r.out.find("train_arena_bytes: 128\n"), std::string::npos);
  r = run_cli(bigram_f32(), {"info", "--json"});
  ASSERT_EQ(r.code, 0);
  const json j = json::parse(r.out);
  EXPECT_EQ(j["batch"], 4);
  EXPECT_EQ(j["seq_len"], 8);
  EXPECT_EQ(j["dtype"], "f32");
}

// ---------------------------------------------------------------------------
// reliability: the spike detector, fault injection, skipped updates, rollback,
// crash leftovers, corrupt checkpoints, the run lock (docs/reliability.md)

// The z-score the detector should compute, written independently: long
// double, population standard deviation from the definition, the floor.
double reference_z(const std::vector<double> &window, double x, double floor) {
  long double mean = 0;
  for (double v : window)
    mean += v;
  mean /= static_cast<long double>(window.size());
  long double var = 0;
  for (double v : window)
    var += (v - mean) * (v - mean);
  var /= static_cast<long double>(window.size());
  const long double sd = std::max<long double>(std::sqrt(var), floor);
  return static_cast<double>((x - mean) / sd);
}

// Feeds accepted updates (loss, grad norm) into a detector.
void feed(AnomalyDetector &d, const std::vector<std::pair<double, double>> &updates,
          int64_t &step) {
  for (const auto &[loss, norm] : updates)
    ASSERT_FALSE(d.record(++step, loss, norm, d.judge(loss, norm)));
}

TEST(Anomaly, ZScoresMatchAnIndependentReference) {
  SpikeConfig c;
  c.window = 8;
  c.zscore = 6;
  AnomalyDetector d(c);
  const std::vector<std::pair<double, double>> ten = {
      {3.1, 0.9}, {3.0, 1.1}, {2.95, 0.8}, {2.9, 1.3}, {2.85, 1.0},
      {2.9, 0.95}, {2.8, 1.2}, {2.75, 0.85}, {2.7, 1.05}, {2.72, 0.99}};
  int64_t step = 0;
  feed(d, ten, step);
  ASSERT_EQ(d.window_size(), 8u); // the newest 8
  std::vector<double> losses, logs;
  for (size_t i = 2; i < ten.size(); ++i) {
    losses.push_back(ten[i].first);
    logs.push_back(std::log(ten[i].second));
  }
  const Verdict v = d.judge(2.9, 1.7);
  EXPECT_EQ(v.reason, SkipReason::None);
  EXPECT_NEAR(v.loss_z, reference_z(losses, 2.9, 0), 1e-12);
  EXPECT_NEAR(v.grad_norm_z, reference_z(logs, std::log(1.7), 0), 1e-12);

  // Just above and just below the threshold, on each statistic alone.
  long double mean = 0, var = 0;
  for (double x : losses)
    mean += x;
  mean /= 8;
  for (double x : losses)
    var += (x - mean) * (x - mean);
  const double sd = static_cast<double>(std::sqrt(var / 8));
  const double m = static_cast<double>(mean);
  EXPECT_EQ(d.judge(m + 6.01 * sd, 1.0).reason, SkipReason::Spike);
  EXPECT_EQ(d.judge(m + 5.99 * sd, 1.0).reason, SkipReason::None);
  // Falling fast is not a spike.
  EXPECT_EQ(d.judge(m - 50 * sd, 1.0).reason, SkipReason::None);
  EXPECT_EQ(d.judge(2.8, 1e4).reason, SkipReason::Spike);   // grad norm only
  EXPECT_EQ(d.judge(2.8, 1e-4).reason, SkipReason::None);   // a tiny norm is fine
}

TEST(Anomaly, WarmUpNonFiniteFloorsAndOff) {
  SpikeConfig c;
  c.window = 4;
  AnomalyDetector d(c);
  int64_t step = 0;
  // Until the window is full nothing is a spike, and no z-score is reported.
  feed(d, {{2.0, 1.0}, {2.0, 1.0}, {2.0, 1.0}}, step);
  Verdict v = d.judge(1e6, 1e6);
  EXPECT_EQ(v.reason, SkipReason::None);
  EXPECT_TRUE(std::isnan(v.loss_z));
  // Non-finite values are always skipped, warm or not, spikes on or off.
  EXPECT_EQ(d.judge(NAN, 1.0).reason, SkipReason::NonFinite);
  EXPECT_EQ(d.judge(2.0, INFINITY).reason, SkipReason::NonFinite);
  EXPECT_EQ(d.judge(-INFINITY, 1.0).reason, SkipReason::NonFinite);
  feed(d, {{2.0, 1.0}}, step);
  // A flat window: the floor (0.1% of the mean loss; 0.001 in log norm)
  // turns noise-sized moves into small z-scores.
  v = d.judge(2.0 * 1.0005, 1.0);
  EXPECT_NEAR(v.loss_z, 0.5, 1e-9);
  EXPECT_EQ(v.reason, SkipReason::None);
  EXPECT_EQ(d.judge(2.0 * 1.01, 1.0).reason, SkipReason::Spike);             // z = 10
  EXPECT_NEAR(d.judge(2.0, std::exp(0.005)).grad_norm_z, 5.0, 1e-9);
  EXPECT_EQ(d.judge(2.0, std::exp(0.007)).reason, SkipReason::Spike);        // z = 7
  // A zero gradient norm neither crashes nor poisons the window.
  feed(d, {{2.0, 0.0}}, step);
  EXPECT_TRUE(std::isfinite(d.judge(2.0, 1.0).grad_norm_z));

  for (SpikeConfig off : {SpikeConfig{0, 6.0, 3}, SpikeConfig{32, 0.0, 3}}) {
    AnomalyDetector quiet(off);
    int64_t s = 0;
    for (int i = 0; i < 40; ++i)
      feed(quiet, {{2.0, 1.0}}, s);
    EXPECT_EQ(quiet.judge(1e9, 1e9).reason, SkipReason::None);
    EXPECT_EQ(quiet.judge(NAN, 1.0).reason, SkipReason::NonFinite);
  }
}

TEST(Anomaly, BurstsOfNearbySkipsAskForRollback) {
  SpikeConfig c;
  c.window = 4;
  c.max_skips_before_rollback = 3;
  AnomalyDetector d(c);
  const Verdict skip{SkipReason::Spike, 100.0, 100.0}, good{};
  int64_t step = 0;
  feed(d, {{2.0, 1.0}, {2.0, 1.0}, {2.0, 1.0}, {2.0, 1.0}}, step);
  // skip, good, skip, good, good, skip: fewer than R = 3 good updates
  // between skips keep one burst going; its third skip asks for a rollback.
  EXPECT_FALSE(d.record(5, 50.0, 1.0, skip));
  EXPECT_FALSE(d.record(6, 2.0, 1.0, good));
  EXPECT_FALSE(d.record(7, 50.0, 1.0, skip));
  EXPECT_FALSE(d.record(8, 2.0, 1.0, good));
  EXPECT_FALSE(d.record(9, 2.0, 1.0, good));
  EXPECT_EQ(d.burst_skips(), 2);
  EXPECT_TRUE(d.record(10, 50.0, 1.0, skip));
  EXPECT_EQ(d.burst_first_step(), 5);
  EXPECT_EQ(d.window_size(), 4u); // skipped values never entered the window
  d.end_burst();
  // R good updates in a row end a burst: the next skip starts a new one.
  EXPECT_FALSE(d.record(11, 50.0, 1.0, skip));
  for (int64_t s = 12; s <= 14; ++s)
    EXPECT_FALSE(d.record(s, 2.0, 1.0, good));
  EXPECT_EQ(d.burst_skips(), 0);
  EXPECT_FALSE(d.record(15, 50.0, 1.0, skip));
  EXPECT_EQ(d.burst_first_step(), 15);

  c.max_skips_before_rollback = 0; // never
  AnomalyDetector never(c);
  for (int64_t s = 1; s <= 20; ++s)
    EXPECT_FALSE(never.record(s, NAN, NAN, {SkipReason::NonFinite}));
}

TEST(Anomaly, StateRoundTripsBitExactly) {
  SpikeConfig c;
  c.window = 6;
  AnomalyDetector d(c);
  int64_t step = 0;
  // Values whose shortest decimal forms are long or extreme.
  feed(d, {{0.1 + 0.2, 1.0 / 3.0}, {2.0 / 3.0, 4.9e-324}, {1e300, 7.0 / 9.0},
           {std::nextafter(2.5, 3.0), 1e-300}, {M_PI, M_E}, {1.0 / 7.0, 123456.789}},
       step);
  ASSERT_FALSE(d.record(7, 9.0, 9.0, {SkipReason::Spike}));
  const std::string text = d.to_json().dump();
  const AnomalyDetector back = AnomalyDetector::from_json(json::parse(text), "state.json");
  EXPECT_EQ(back.to_json().dump(), text);
  EXPECT_EQ(back.burst_skips(), 1);
  EXPECT_EQ(back.burst_first_step(), 7);
  for (double x : {0.3, 5.0, 1e300}) {
    const Verdict a = d.judge(x, 2.0), b = back.judge(x, 2.0);
    EXPECT_EQ(std::memcmp(&a.loss_z, &b.loss_z, sizeof(double)), 0) << x;
    EXPECT_EQ(std::memcmp(&a.grad_norm_z, &b.grad_norm_z, sizeof(double)), 0) << x;
  }
  // A smaller window under new flags keeps the newest values.
  SpikeConfig small = c;
  small.window = 4;
  EXPECT_EQ(back.with_config(small).window_size(), 4u);

  json bad = json::parse(text);
  bad["losses"].push_back(1.0);
  try {
    AnomalyDetector::from_json(bad, "ck/state.json");
    FAIL() << "accepted losses and log norms of different lengths";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("ck/state.json: malformed \"anomaly\""),
              std::string::npos)
        << e.what();
  }
}

TEST(FaultInject, ParsesListsAndNamesBadItems) {
  const std::vector<Fault> f = parse_faults("nan@3,spike@5,spike@5,nan@12");
  ASSERT_EQ(f.size(), 4u);
  EXPECT_EQ(f[0].kind, FaultKind::NaN);
  EXPECT_EQ(f[0].attempt, 3);
  EXPECT_EQ(faults_at(f, 5), (std::vector<FaultKind>{FaultKind::Spike, FaultKind::Spike}));
  EXPECT_TRUE(faults_at(f, 4).empty());
  for (const char *bad : {"", "nan", "nan@0", "nan@-2", "boom@3", "nan@x", "nan@3,",
                          "spike@99999999999999999999"}) {
    try {
      parse_faults(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const std::runtime_error &e) {
      EXPECT_EQ(std::string(e.what()).rfind("--inject: '", 0), 0u) << e.what();
    }
  }
  // The effects: one NaN element; loss and every gradient times 1e4.
  std::vector<float> g = {1, -2, 3, 4};
  double loss = 2.0;
  apply_fault(FaultKind::NaN, g.data(), 4, loss);
  EXPECT_TRUE(std::isnan(g[2]));
  EXPECT_EQ(loss, 2.0);
  g = {1, -2, 3, 4};
  apply_fault(FaultKind::Spike, g.data(), 4, loss);
  EXPECT_EQ(g, (std::vector<float>{1e4f, -2e4f, 3e4f, 4e4f}));
  EXPECT_EQ(loss, 2e4);
}

std::vector<ordered_json> records_with(const std::string &path, const char *key) {
  std::vector<ordered_json> out;
  for (const ordered_json &j : read_jsonl(path))
    if (j.contains(key))
      out.push_back(j);
  return out;
}

std::vector<int64_t> checkpoint_steps(const std::string &root) {
  std::vector<int64_t> out;
  for (const CheckpointRef &c : list_checkpoints(root))
    out.push_back(c.step);
  return out;
}

TEST(Train, NonFiniteUpdateIsSkippedAndChangesNothing) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  ASSERT_EQ(run_cli(bigram_f32(), plus(train_args(data, tmp / "a", 12), {"--stop-at", "6"})).code, 0);
  const CliResult b = run_cli(bigram_f32(), plus(train_args(data, tmp / "b", 12),
                                                 {"--stop-at", "7", "--inject", "nan@7"}));
  ASSERT_EQ(b.code, 0) << b.err; // no longer fatal
  EXPECT_NE(b.err.find("warning: step 7: update skipped (nonfinite"), std::string::npos) << b.err;
  // Parameters and AdamW moments after the skipped update 7 are those after 6.
  for (const char *f : {"/model.safetensors", "/optimizer.safetensors"})
    EXPECT_EQ(read_bytes(tmp / ("a/checkpoints/step_000006" + std::string(f))),
              read_bytes(tmp / ("b/checkpoints/step_000007" + std::string(f))))
        << f;
  const json state = verify_checkpoint(tmp / "b/checkpoints/step_000007");
  EXPECT_EQ(state["step"], 7);                // the step counter advanced
  EXPECT_EQ(state["optimizer"]["updates"], 6); // the optimizer did not
  EXPECT_EQ(state["data"]["index"], 7 * 4);   // the batch was consumed
  EXPECT_EQ(state["reliability"]["skipped_nonfinite"], 1);
  const auto skipped = records_with(tmp / "b/metrics.jsonl", "skipped");
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_EQ(skipped[0].begin().key(), "step");
  EXPECT_EQ(skipped[0]["step"], 7);
  EXPECT_EQ(skipped[0]["skipped"], "nonfinite");
  EXPECT_TRUE(skipped[0]["grad_norm"].is_null()); // NaN is not JSON
  EXPECT_EQ(skipped[0]["data_index"], 6 * 4);     // where its batch began
  EXPECT_EQ(skipped[0]["attempt"], 7);
  // And the run goes on.
  const CliResult b2 = run_cli(bigram_f32(), plus(train_args(data, tmp / "b", 12), {"--resume"}));
  ASSERT_EQ(b2.code, 0) << b2.err;
  EXPECT_EQ(verify_checkpoint(tmp / "b/checkpoints/step_000012")["optimizer"]["updates"], 11);
}

TEST(Train, SpikesAreSkippedOnceTheWindowIsWarm) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  const std::vector<std::string> window = {"--spike-window", "8"};
  CliResult r = run_cli(bigram_f32(), plus(train_args(data, tmp / "clean", 60), window));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(records_with(tmp / "clean/metrics.jsonl", "skipped").empty())
      << "the detector fired on clean training";
  // spike@5 comes before 8 accepted updates: not judged (and clipping keeps
  // it harmless); spike@30 is caught, by its loss and its gradient norm.
  r = run_cli(bigram_f32(), plus(plus(train_args(data, tmp / "f", 60), window),
                                 {"--inject", "spike@5,spike@30"}));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto skipped = records_with(tmp / "f/metrics.jsonl", "skipped");
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_EQ(skipped[0]["step"], 30);
  EXPECT_EQ(skipped[0]["skipped"], "spike");
  EXPECT_GT(skipped[0]["loss_z"].get<double>(), 6.0);
  EXPECT_GT(skipped[0]["grad_norm_z"].get<double>(), 6.0);
  // Window 0 turns spike checks off.
  r = run_cli(bigram_f32(), plus(train_args(data, tmp / "off", 60),
                                 {"--spike-window", "0", "--inject", "spike@30"}));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(records_with(tmp / "off/metrics.jsonl", "skipped").empty());
}

TEST(Train, BurstRollsBackToTheCheckpointBeforeIt) {
  TempDir tmp;
  const std::string data = make_dataset(tmp, /*with_val=*/false);
  const std::vector<std::string> flags = {"--spike-window", "8", "--checkpoint-every", "5",
                                          "--keep-last", "0"};
  ASSERT_EQ(run_cli(bigram_f32(), plus(plus(train_args(data, tmp / "a", 20), flags),
                                       {"--stop-at", "10"})).code, 0);
  // Spikes on attempts 12, 13, 14: the third asks for a rollback to step 10.
  // SIGTERM during attempt 14 stops the run right after the rollback, which
  // then saves the rolled-back state as step 10.
  llamart::testing::raise_sigterm_at_call = llamart::testing::bigram_train_calls.load() + 14;
  const CliResult b = run_cli(bigram_f32(), plus(plus(train_args(data, tmp / "b", 20), flags),
                                                 {"--inject", "spike@12,spike@13,spike@14"}));
  llamart::testing::raise_sigterm_at_call = 0;
  EXPECT_EQ(b.code, 128 + SIGTERM) << b.err;
  EXPECT_NE(b.err.find("step 14: 3 updates skipped since step 12; rolled back to"),
            std::string::npos) << b.err;
  // Parameters and moments are exactly the checkpoint's...
  for (const char *f : {"/model.safetensors", "/optimizer.safetensors"})
    EXPECT_EQ(read_bytes(tmp / ("a/checkpoints/step_000010" + std::string(f))),
              read_bytes(tmp / ("b/checkpoints/step_000010" + std::string(f))))
        << f;
  // ...the data stream is not: it continues after the batch of attempt 14.
  const json state = verify_checkpoint(tmp / "b/checkpoints/step_000010");
  EXPECT_EQ(state["step"], 10);
  EXPECT_EQ(state["data"]["index"], 14 * 4);
  EXPECT_EQ(state["reliability"]["attempts"], 14);
  EXPECT_EQ(state["reliability"]["rollbacks"], 1);
  EXPECT_EQ(state["reliability"]["skipped_spike"], 3);
  EXPECT_EQ(state["anomaly"]["burst_skips"], 0);
  const auto rb = records_with(tmp / "b/metrics.jsonl", "rollback_to");
  ASSERT_EQ(rb.size(), 1u);
  EXPECT_EQ(rb[0]["step"], 14);
  EXPECT_EQ(rb[0]["rollback_to"], 10);
  EXPECT_EQ(rb[0]["checkpoint_data_index"], 40);
  EXPECT_EQ(rb[0]["data_index"], 56);
  EXPECT_EQ(checkpoint_steps(tmp / "b/checkpoints"), (std::vector<int64_t>{5, 10}));

  // The run then continues from step 10 on fresh batches to the end.
  const CliResult b2 = run_cli(bigram_f32(), plus(plus(train_args(data, tmp / "b", 20), flags),
                                                  {"--inject", "spike@12,spike@13,spike@14", "--resume"}));
  ASSERT_EQ(b2.code, 0) << b2.err;
  const auto steps = step_entries(read_jsonl(tmp / "b/metrics.jsonl"));
  EXPECT_EQ(steps.back()["step"], 20);
  EXPECT_EQ(verify_checkpoint(tmp / "b/checkpoints/step_000020")["optimizer"]["updates"], 20);
}

TEST(Train, RollbackTargetSurvivesRotationDuringABurst) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  // Checkpoints after every update, two kept: the ones written after the
  // skips at 12 and 13 would rotate step 11, the rollback target, away.
  const CliResult r = run_cli(bigram_f32(), plus(train_args(data, tmp / "run", 20),
                                                 {"--spike-window", "8", "--checkpoint-every", "1",
                                                  "--keep-last", "2", "--inject",
                                                  "spike@12,spike@13,spike@14"}));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto rb = records_with(tmp / "run/metrics.jsonl", "rollback_to");
  ASSERT_EQ(rb.size(), 1u);
  EXPECT_EQ(rb[0]["rollback_to"], 11);
  EXPECT_EQ(rb[0]["discarded_checkpoints"], 2); // 12 and 13
  EXPECT_EQ(checkpoint_steps(tmp / "run/checkpoints"), (std::vector<int64_t>{19, 20}));
}

TEST(Train, UnrecoverableBurstsStopWithAMessage) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  const CliResult r = run_cli(bigram_f32(), plus(train_args(data, tmp / "run", 20),
                                                 {"--spike-window", "8", "--inject",
                                                  "nan@12,spike@13,nan@14"}));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("step 14: 3 updates skipped since step 12 and " + (tmp / "run/checkpoints") +
                       " holds no checkpoint before step 12 to roll back to: training is unstable"),
            std::string::npos)
      << r.err;
  // --max-skips-before-rollback 0: skip, never roll back, never stop.
  const CliResult r2 = run_cli(bigram_f32(), plus(train_args(data, tmp / "run0", 20),
                                                  {"--spike-window", "8", "--inject",
                                                   "nan@12,spike@13,nan@14",
                                                   "--max-skips-before-rollback", "0"}));
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_EQ(records_with(tmp / "run0/metrics.jsonl", "skipped").size(), 3u);

  // Bursts that keep coming back after rollbacks to the same checkpoint: the
  // fourth rollback to step 10 is refused (attempts 12-14, 16-18, 20-22 and
  // 24-26 are steps 12-14 each time).
  const CliResult r3 = run_cli(
      bigram_f32(), plus(train_args(data, tmp / "again", 30),
                         {"--spike-window", "8", "--checkpoint-every", "5", "--inject",
                          "spike@12,spike@13,spike@14,spike@16,spike@17,spike@18,"
                          "spike@20,spike@21,spike@22,spike@24,spike@25,spike@26"}));
  EXPECT_EQ(r3.code, 1);
  EXPECT_NE(r3.err.find("step 14: 3 updates skipped since step 12 after 3 rollbacks to " +
                        (tmp / "again/checkpoints/step_000010") +
                        ": training diverges from there whatever the data"),
            std::string::npos)
      << r3.err;
  EXPECT_EQ(records_with(tmp / "again/metrics.jsonl", "rollback_to").size(), 3u);
}

// Straight == split + resume, with skips, a rollback and a split point inside
// a burst: the detector's window and burst are part of the checkpoint.
void expect_exact_resume_with_faults(const ProgramInfo *program, int64_t split) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  const std::vector<std::string> flags = {"--spike-window", "8", "--checkpoint-every", "4",
                                          "--grad-accum", "2", "--inject",
                                          "nan@6,spike@15,nan@16,spike@18,spike@27"};
  ASSERT_EQ(run_cli(program, plus(train_args(data, tmp / "a", 30), flags)).code, 0);
  ASSERT_EQ(run_cli(program, plus(plus(train_args(data, tmp / "b", 30), flags),
                                  {"--stop-at", std::to_string(split)})).code, 0);
  const CliResult b2 = run_cli(program, plus(plus(train_args(data, tmp / "b", 30), flags),
                                             {"--resume"}));
  ASSERT_EQ(b2.code, 0) << b2.err;
  auto replayable = [&](const std::string &run) {
    std::vector<std::string> out;
    for (ordered_json j : read_jsonl(tmp / (run + "/metrics.jsonl"))) {
      if (j.contains("val_loss"))
        continue;
      for (const char *k : {"elapsed_s", "tokens_per_s", "checkpoint"})
        j.erase(k);
      out.push_back(j.dump());
    }
    return out;
  };
  const auto a = replayable("a"), b = replayable("b");
  EXPECT_EQ(a, b);
  EXPECT_EQ(records_with(tmp / "a/metrics.jsonl", "rollback_to").size(), 1u);
  for (const char *f : {"/model.safetensors", "/optimizer.safetensors", "/state.json"}) {
    std::string fa = read_bytes(tmp / ("a/checkpoints/step_000030" + std::string(f)));
    std::string fb = read_bytes(tmp / ("b/checkpoints/step_000030" + std::string(f)));
    if (std::string(f) == "/state.json") {
      json ja = json::parse(fa), jb = json::parse(fb);
      ja.erase("elapsed_s");
      jb.erase("elapsed_s");
      fa = ja.dump();
      fb = jb.dump();
    }
    EXPECT_EQ(fa, fb) << f;
  }
}

// Skips at 15 and 16 are a burst of two; 16 is the split point in the first
// case, and the third skip (18) triggers the rollback after the resume.
TEST(Train, ResumeIsBitExactWithSkipsAndRollbackF32) {
  expect_exact_resume_with_faults(bigram_f32(), 16);
}

TEST(Train, ResumeIsBitExactWithSkipsAndRollbackF64) {
  expect_exact_resume_with_faults(bigram_f64(), 10);
}

TEST(Checkpoint, ResumeTakesTheNewestCompleteOneAndRemovesLeftovers) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  const std::vector<std::string> every2 = {"--checkpoint-every", "2", "--keep-last", "0"};
  ASSERT_EQ(run_cli(bigram_f32(), plus(train_args(data, tmp / "a", 8), every2)).code, 0);
  ASSERT_EQ(run_cli(bigram_f32(), plus(plus(train_args(data, tmp / "b", 8), every2),
                                       {"--stop-at", "6"})).code, 0);
  // What kills at various moments leave: a temporary checkpoint (half a
  // model file), a LATEST.tmp, a checkpoint half deleted by rotation, and a
  // LATEST one behind (killed between the rename and the LATEST update).
  const std::string root = tmp / "b/checkpoints";
  fs::create_directories(root + "/.tmp-step_000008-99999");
  std::ofstream(root + "/.tmp-step_000008-99999/model.safetensors.tmp.99999") << "half";
  std::ofstream(root + "/LATEST.tmp.4242") << "step_000008";
  fs::create_directories(root + "/.old-step_000002-777");
  std::ofstream(root + "/LATEST", std::ios::trunc) << "step_000004\n";

  // Not --quiet: the notes below are progress messages.
  std::vector<std::string> args = plus(plus(train_args(data, tmp / "b", 8), every2), {"--resume"});
  args.erase(std::find(args.begin(), args.end(), "--quiet"));
  const CliResult r = run_cli(bigram_f32(), args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("removed 3 leftovers of interrupted checkpoint writes"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("LATEST: names 'step_000004', but step_000006 is the newest complete "
                       "checkpoint"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("resumed from " + root + "/step_000006 at step 6"), std::string::npos)
      << r.err;
  for (const char *gone : {"/.tmp-step_000008-99999", "/LATEST.tmp.4242", "/.old-step_000002-777"})
    EXPECT_FALSE(fs::exists(root + gone)) << gone;
  EXPECT_EQ(read_bytes(tmp / "a/checkpoints/step_000008/model.safetensors"),
            read_bytes(root + "/step_000008/model.safetensors"));
}

TEST(Checkpoint, CorruptOnesAreMovedAsideAndKeepLastKeepsExactlyK) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  const std::vector<std::string> flags = {"--checkpoint-every", "2", "--keep-last", "3"};
  ASSERT_EQ(run_cli(bigram_f32(), plus(train_args(data, tmp / "run", 16),
                                       plus(flags, {"--stop-at", "12"}))).code, 0);
  const std::string root = tmp / "run/checkpoints";
  ASSERT_EQ(checkpoint_steps(root), (std::vector<int64_t>{8, 10, 12}));
  for (const char *step : {"/step_000010", "/step_000012"}) {
    const std::string path = root + step + "/optimizer.safetensors";
    std::string bytes = read_bytes(path);
    bytes[bytes.size() / 2] ^= 0x40;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }
  CliResult r = run_cli(bigram_f32(), plus(train_args(data, tmp / "run", 16),
                                           plus(flags, {"--resume", "--stop-at", "10"})));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find(root + "/step_000012/optimizer.safetensors: checksum mismatch"),
            std::string::npos) << r.err;
  EXPECT_NE(r.err.find("falling back to step_000008"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("moved " + root + "/step_000012 to " + root + "/step_000012.corrupt"),
            std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(root + "/step_000010.corrupt/optimizer.safetensors"));
  // Out of rotation's sight: step 10 redone, and nothing stale from the
  // abandoned steps 10 and 12 counted among the 3 kept.
  EXPECT_EQ(checkpoint_steps(root), (std::vector<int64_t>{8, 10}));
  r = run_cli(bigram_f32(), plus(train_args(data, tmp / "run", 16), plus(flags, {"--resume"})));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
  EXPECT_EQ(checkpoint_steps(root), (std::vector<int64_t>{12, 14, 16}));
}

TEST(Checkpoint, StateJsonProtectsItself) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  ASSERT_EQ(run_cli(bigram_f32(), train_args(data, tmp / "run", 4)).code, 0);
  const std::string dir = tmp / "run/checkpoints/step_000004";
  const std::string path = dir + "/state.json";
  const json good = json::parse(read_bytes(path));
  auto write = [&](const json &j) {
    std::ofstream(path, std::ios::trunc) << j.dump(2) << "\n";
  };
  auto rejects = [&](const json &j, const std::string &why) {
    write(j);
    try {
      verify_checkpoint(dir);
      ADD_FAILURE() << "accepted: " << why;
    } catch (const std::runtime_error &e) {
      EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
    }
  };
  // Valid JSON, plausible values: only the self-checksum can tell.
  json j = good;
  j["data"]["index"] = 20;
  rejects(j, "a changed data position");
  j = good;
  j["step"] = 5;
  rejects(j, "a changed step");
  j = good;
  j["version"] = 1; // cannot switch the check off
  j["data"]["index"] = 20;
  rejects(j, "version 1 with a checksum");
  j = good;
  j["step"] = "four";
  j.erase("state_checksum");
  rejects(j, "no checksum");
  // Wall-clock time is outside the checksum (equal states, equal checksums).
  j = good;
  j["elapsed_s"] = 12345.0;
  write(j);
  EXPECT_NO_THROW(verify_checkpoint(dir));

  // Version 1 (before skipped updates) still loads: every step was applied.
  j = good;
  for (const char *k : {"state_checksum", "reliability", "anomaly"})
    j.erase(k);
  j["optimizer"].erase("updates");
  j["version"] = 1;
  write(j);
  EXPECT_NO_THROW(verify_checkpoint(dir));
  const TrainState s = state_from_json(j, path);
  EXPECT_EQ(s.optimizer_updates, 4);
  EXPECT_EQ(s.attempts, 4);
  EXPECT_EQ(s.anomaly.window_size(), 0u);
  const CliResult r = run_cli(bigram_f32(), plus(train_args(data, tmp / "run", 6), {"--resume"}));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(verify_checkpoint(tmp / "run/checkpoints/step_000006")["optimizer"]["updates"], 6);
}

TEST(RunLock, ASecondTrainerOnTheSameRunDirIsRefused) {
  TempDir tmp;
  const std::string data = make_dataset(tmp);
  fs::create_directories(tmp / "run");
  {
    const RunDirLock held(tmp / "run");
    const CliResult r = run_cli(bigram_f32(), train_args(data, tmp / "run", 2));
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("--run-dir: " + (tmp / "run") + " is in use by another training "
                         "process (pid " + std::to_string(getpid()) + ")"),
              std::string::npos)
        << r.err;
    EXPECT_FALSE(fs::exists(tmp / "run/checkpoints"));
  }
  const CliResult r = run_cli(bigram_f32(), train_args(data, tmp / "run", 2));
  EXPECT_EQ(r.code, 0) << r.err;
}

// docs/formats.md describes the program ABI of runtime/program/program.h: it
// must name the version the runtime checks, so that a bump shows in the docs.
TEST(ProgramAbi, DocsNameTheCurrentVersion) {
  const std::string path = std::string(LLAMA_SOURCE_DIR) + "/docs/formats.md";
  std::ifstream f(path);
  ASSERT_TRUE(f) << "cannot read " << path;
  std::stringstream text;
  text << f.rdbuf();
  const std::string want =
      "Version " + std::to_string(llamart::kProgramAbiVersion) + " (`kProgramAbiVersion`)";
  EXPECT_NE(text.str().find(want), std::string::npos)
      << path << " does not say \"" << want << "\"";
}

} // namespace
