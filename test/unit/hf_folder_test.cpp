// Interop with Hugging Face folders and evaluation (runtime/checkpoint/hf_folder,
// runtime/interop/hf_weights, runtime/cli/{export,eval,eval_tasks}), against the hand-written
// bigram program of train_fixture.h: shard plans against transformers' rule
// worked out by hand, export/import round trips bit for bit, bf16/f16
// rounding against a brute-force nearest-value search, every import error,
// and log-likelihoods / losses against direct evaluations of the bigram
// model's formula.
#include "runtime/checkpoint/half.h"
#include "runtime/checkpoint/hf_folder.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/data/shards.h"
#include "runtime/train/checkpoint_dir.h"
#include "runtime/cli/cli.h"
#include "runtime/cli/eval.h"
#include "runtime/cli/eval_tasks.h"
#include "runtime/cli/export.h"
#include "runtime/interop/hf_weights.h"
#include "runtime/program/param_store.h"
#include "runtime/program/rng.h"
#include "test/unit/train_fixture.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using llamart::ProgramInfo;
using nlohmann::json;
using namespace llamart;
using namespace llamart::cli;
using namespace llamart::interop;
using namespace llamart::train;
namespace ckpt = llamart::ckpt;

namespace {

constexpr int kV = 16, kB = 4, kS = 8;
const ProgramInfo *bigram() { return llamart::testing::bigram_program<float, kV, kB, kS>(); }
const ProgramInfo *bigram64() { return llamart::testing::bigram_program<double, kV, kB, kS>(); }

// A fresh directory per test, removed afterwards.
struct TempDir : llamart::testing::TempDir {
  TempDir() : llamart::testing::TempDir("llamart_hf_test") {}
};

std::string read_bytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const std::string &path, const std::string &text) {
  std::ofstream(path, std::ios::binary) << text;
}

// Runs f and returns the message it throws ("" when it does not throw).
std::string error_of(const std::function<void()> &f) {
  try {
    f();
  } catch (const std::exception &e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR(statement, fragment)                                        \
  do {                                                                           \
    const std::string msg_ = error_of([&] { statement; });                       \
    EXPECT_NE(msg_.find(fragment), std::string::npos)                            \
        << "message: '" << msg_ << "', expected to contain '" << (fragment) << "'"; \
  } while (0)

// Random params for the bigram program, away from the Ones init of the gain
// so that a mix-up of the two tensors shows.
std::vector<float> random_params(const ProgramInfo &p, uint64_t seed) {
  std::vector<float> w(static_cast<size_t>(p.param_numel));
  Rng rng(seed);
  for (float &x : w) {
    double a, b;
    rng.normal_pair(a, b);
    x = static_cast<float>(a * 0.7);
  }
  return w;
}

std::string write_weights(const TempDir &tmp, const ProgramInfo &p, const std::vector<float> &w) {
  ckpt::File f;
  add_param_tensors(p, w.data(), "", f);
  const std::string path = tmp / "weights.safetensors";
  ckpt::write_safetensors(path, f);
  return path;
}

ckpt::Tensor f32_tensor(std::vector<int64_t> shape, const std::vector<float> &v) {
  return ckpt::Tensor::from_f32(std::move(shape), v.data());
}

// An HF folder for the bigram program by hand: config.json = the program's,
// tensors as given in one model.safetensors.
std::string hand_folder(const TempDir &tmp, const std::string &name,
                        std::map<std::string, ckpt::Tensor> tensors,
                        const std::string &config = bigram()->config_json) {
  const std::string dir = tmp / name;
  fs::create_directories(dir);
  write_text(dir + "/config.json", config);
  ckpt::File f;
  f.tensors = std::move(tensors);
  ckpt::write_safetensors(dir + "/model.safetensors", f);
  return dir;
}

// bf16 by brute force: the nearest of the two bf16 neighbours of x (the
// truncation and the next value up in magnitude), ties to the even one.
uint16_t nearest_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  const uint16_t lo = static_cast<uint16_t>(bits >> 16), hi = static_cast<uint16_t>(lo + 1);
  const double dlo = std::fabs(double(ckpt::bf16_to_float(lo)) - x);
  const double dhi = std::fabs(double(ckpt::bf16_to_float(hi)) - x);
  if (dlo != dhi)
    return dlo < dhi ? lo : hi;
  return (lo & 1) ? hi : lo;
}

// ---------------------------------------------------------------------------
// Folder layout

TEST(HfFolder, ShardPlanFollowsTransformersRule) {
  auto spec = [](const char *name, int64_t floats) {
    return ckpt::HfTensorSpec{name, ckpt::StDType::F32, {floats}};
  };
  // 16, 16, 16, 40, 4 bytes with a 32-byte limit: a and b share a shard, c
  // does not fit with them, d is alone (larger than the limit), e cannot
  // join d (the shard is over the limit already).
  const std::vector<ckpt::HfTensorSpec> specs = {spec("a", 4), spec("b", 4), spec("c", 4),
                                                 spec("d", 10), spec("e", 1)};
  EXPECT_EQ(ckpt::plan_hf_shards(specs, 32),
            (std::vector<std::vector<size_t>>{{0, 1}, {2}, {3}, {4}}));
  EXPECT_EQ(ckpt::plan_hf_shards(specs, 1000),
            (std::vector<std::vector<size_t>>{{0, 1, 2, 3, 4}}));
  EXPECT_EQ(ckpt::plan_hf_shards(specs, 1).size(), 5u);
  EXPECT_EQ(spec("x", 10).bytes(), 40u);
  EXPECT_EQ((ckpt::HfTensorSpec{"y", ckpt::StDType::BF16, {3, 5}}).bytes(), 30u);
  EXPECT_EQ(ckpt::hf_shard_file_name(1, 5), "model-00002-of-00005.safetensors");
  EXPECT_ERROR(ckpt::plan_hf_shards(specs, 0), "at least 1 byte");
}

TEST(HfFolder, WritesShardsAndIndexThatFindReadsBack) {
  TempDir tmp;
  std::vector<ckpt::HfTensorSpec> specs;
  std::vector<std::vector<float>> values;
  for (int i = 0; i < 5; ++i) {
    specs.push_back({"t" + std::to_string(i), ckpt::StDType::F32, {2, i + 1}});
    values.emplace_back();
    for (int k = 0; k < 2 * (i + 1); ++k)
      values.back().push_back(float(i * 100 + k));
  }
  int made = 0;
  const auto make = [&](size_t i) {
    ++made;
    return f32_tensor(specs[i].shape, values[i]);
  };
  // 8, 16, 24, 32, 40 bytes, limit 40: {t0,t1} {t2} {t3} {t4}.
  const ckpt::HfWriteResult r = ckpt::write_hf_weights(tmp / "", specs, make, 40, {{"format", "pt"}});
  EXPECT_EQ(made, 5);
  EXPECT_EQ(r.num_files, 4u);
  EXPECT_EQ(r.total_bytes, 120u);
  const json index = json::parse(read_bytes(tmp / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 120);
  EXPECT_EQ(index["weight_map"]["t1"], "model-00001-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["t4"], "model-00004-of-00004.safetensors");
  EXPECT_FALSE(fs::exists(tmp / "model.safetensors"));

  const ckpt::HfWeights found = ckpt::find_hf_weights(tmp / "");
  EXPECT_EQ(found.index_path, tmp / "model.safetensors.index.json");
  ASSERT_EQ(found.files.size(), 4u);
  EXPECT_EQ(found.files[0].tensors, (std::vector<std::string>{"t0", "t1"}));
  const ckpt::File shard = ckpt::read_safetensors(found.files[0].path);
  EXPECT_EQ(shard.metadata.at("format"), "pt");
  EXPECT_EQ(shard.tensors.at("t1").to_f64(), (std::vector<double>{100, 101, 102, 103}));

  // Everything in one file: model.safetensors, no index.
  TempDir one;
  fs::create_directories(one / "x");
  EXPECT_EQ(ckpt::write_hf_weights(one / "x", specs, make, ckpt::kHfDefaultShardBytes, {})
                .num_files, 1u);
  EXPECT_TRUE(fs::exists(one / "x/model.safetensors"));
  EXPECT_FALSE(fs::exists(one / "x/model.safetensors.index.json"));
  EXPECT_FALSE(ckpt::is_hf_model_folder(one / "x")); // no config.json yet
  write_text(one / "x/config.json", "{}");
  EXPECT_TRUE(ckpt::is_hf_model_folder(one / "x"));
  const ckpt::HfWeights single = ckpt::find_hf_weights(one / "x");
  EXPECT_EQ(single.index_path, "");
  ASSERT_EQ(single.files.size(), 1u);
  EXPECT_TRUE(single.files[0].tensors.empty());
}

TEST(HfFolder, BadIndexesNameTheProblem) {
  TempDir tmp;
  write_text(tmp / "model-1.safetensors", "");
  const std::string index = tmp / "model.safetensors.index.json";
  write_text(index, R"({"metadata": {}})");
  EXPECT_ERROR(ckpt::find_hf_weights(tmp / ""), "missing \"weight_map\" object");
  write_text(index, R"({"weight_map": {"a": "../model-1.safetensors"}})");
  EXPECT_ERROR(ckpt::find_hf_weights(tmp / ""), "which is not a file in");
  write_text(index, R"({"weight_map": {"a": "model-2.safetensors"}})");
  EXPECT_ERROR(ckpt::find_hf_weights(tmp / ""),
               "weight_map names model-2.safetensors (for a), which does not exist");
  write_text(index, R"({"weight_map": {"a": 3}})");
  EXPECT_ERROR(ckpt::find_hf_weights(tmp / ""), "weight_map entry for a is not a file name");
  write_text(index, "[1]");
  EXPECT_ERROR(ckpt::find_hf_weights(tmp / ""), "expected a JSON object");
  fs::remove(index);
  EXPECT_ERROR(ckpt::find_hf_weights(tmp / ""), "holds neither model.safetensors nor");
}

TEST(HfConfig, ComparesShapeAndMathFieldsWithHfDefaults) {
  const json program = {{"model_type", "llama"}, {"vocab_size", 32000},
                        {"hidden_size", 4096},   {"num_attention_heads", 32},
                        {"num_key_value_heads", 32}, {"head_dim", 128},
                        {"rms_norm_eps", 1e-5},  {"rope_theta", 10000.0},
                        {"tie_word_embeddings", false}, {"intermediate_size", 11008},
                        {"num_hidden_layers", 32}, {"rope_scaling", nullptr}};
  // HF defaults: KV heads = heads, head_dim = hidden / heads, theta 1e4,
  // untied; integers written as floats are the same numbers.
  json folder = {{"model_type", "llama"},        {"vocab_size", 32000.0},
                 {"hidden_size", 4096},          {"num_attention_heads", 32},
                 {"rms_norm_eps", 0.00001},      {"intermediate_size", 11008},
                 {"num_hidden_layers", 32},      {"torch_dtype", "bfloat16"},
                 {"max_position_embeddings", 4096}};
  EXPECT_NO_THROW(ckpt::check_hf_config_compatible(folder, "f/config.json", program, "7b"));

  json changed = folder;
  changed["num_hidden_layers"] = 40;
  EXPECT_ERROR(ckpt::check_hf_config_compatible(changed, "f/config.json", program, "7b"),
               "f/config.json: num_hidden_layers is 40, but model 7b was compiled with 32");
  changed = folder;
  changed["num_key_value_heads"] = 8;
  EXPECT_ERROR(ckpt::check_hf_config_compatible(changed, "f/config.json", program, "7b"),
               "num_key_value_heads is 8, but model 7b was compiled with 32");
  changed = folder;
  changed["tie_word_embeddings"] = true;
  EXPECT_ERROR(ckpt::check_hf_config_compatible(changed, "f/config.json", program, "7b"),
               "tie_word_embeddings is true, but model 7b was compiled with false");
  changed = folder;
  changed["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500000.0}};
  EXPECT_ERROR(ckpt::check_hf_config_compatible(changed, "f/config.json", program, "7b"),
               "rope_theta is 500000.0, but model 7b was compiled with 10000.0");
  changed = folder;
  changed["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_ERROR(ckpt::check_hf_config_compatible(changed, "f/config.json", program, "7b"),
               "rope_scaling is {");
  changed = folder;
  changed.erase("hidden_size");
  EXPECT_ERROR(ckpt::check_hf_config_compatible(changed, "f/config.json", program, "7b"),
               "hidden_size is missing, but model 7b was compiled with 4096");
  // A program that states few fields (hand-written MLIR) checks only those.
  EXPECT_NO_THROW(ckpt::check_hf_config_compatible(folder, "f", {{"vocab_size", 32000}}, "x"));
  EXPECT_NO_THROW(ckpt::check_hf_config_compatible(folder, "f", json::object(), "x"));
}

// ---------------------------------------------------------------------------
// Export and import through the program's parameter table

TEST(HfExport, RoundTripsBitExactlySingleAndSharded) {
  TempDir tmp;
  const ProgramInfo &p = *bigram();
  const std::vector<float> w = random_params(p, 3);
  ExportOptions o;
  o.checkpoint = write_weights(tmp, p, w);
  o.out = tmp / "hf";
  const ExportResult r = run_export(p, o);
  EXPECT_EQ(r.weight_files, 1u);
  EXPECT_EQ(r.weight_bytes, uint64_t(p.param_numel) * 4);
  EXPECT_FALSE(fs::exists(tmp / "hf.tmp." + std::to_string(getpid())));

  const json config = json::parse(read_bytes(tmp / "hf/config.json"));
  EXPECT_EQ(config["torch_dtype"], "float32");
  EXPECT_EQ(config["model_type"], "bigram");
  EXPECT_EQ(config["vocab_size"], kV);
  const ckpt::File f = ckpt::read_safetensors(tmp / "hf/model.safetensors");
  EXPECT_EQ(f.metadata.at("format"), "pt");
  ASSERT_EQ(f.tensors.size(), 2u);
  const ckpt::Tensor &emb = f.tensors.at("model.embed_tokens.weight");
  EXPECT_EQ(emb.dtype, ckpt::StDType::F32);
  EXPECT_EQ(emb.shape, (std::vector<int64_t>{kV, kV}));
  EXPECT_EQ(std::memcmp(emb.data.data(), w.data(), kV * kV * 4), 0);

  std::vector<float> back(w.size(), -1.0f);
  EXPECT_EQ(load_model_weights<float>(p, tmp / "hf", back.data(), {}), tmp / "hf");
  EXPECT_EQ(back, w);

  // Sharded (1000 bytes: the 1024-byte embedding alone, then the gain), and
  // imported by an f64 program: widening is exact.
  o.checkpoint = tmp / "hf";
  o.out = tmp / "sharded";
  o.shard_bytes = 1000;
  EXPECT_EQ(run_export(p, o).weight_files, 2u);
  EXPECT_TRUE(fs::exists(tmp / "sharded/model-00002-of-00002.safetensors"));
  std::vector<double> wide(w.size());
  load_model_weights<double>(*bigram64(), tmp / "sharded", wide.data(), {});
  for (size_t i = 0; i < w.size(); ++i)
    ASSERT_EQ(wide[i], double(w[i])) << i;

  // "DIR/" names DIR (the temporary folder is its sibling); "." names no
  // folder to create, and an unrelated folder is never replaced.
  o.shard_bytes = ckpt::kHfDefaultShardBytes;
  o.out = tmp / "slash/";
  run_export(p, o);
  EXPECT_EQ(read_bytes(tmp / "slash/model.safetensors"), read_bytes(tmp / "hf/model.safetensors"));
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp / "slash"), fs::directory_iterator()), 3);
  o.out = ".";
  EXPECT_ERROR(run_export(p, o), "--out: '.' does not name a folder to create");
  o.out = tmp / ".";
  EXPECT_ERROR(run_export(p, o), "exists and is not an earlier export (no config.json); refusing");
  EXPECT_TRUE(fs::exists(tmp / "weights.safetensors"));

  // Exporting again over an earlier export replaces it.
  o.out = tmp / "sharded";
  EXPECT_EQ(run_export(p, o).weight_files, 1u);
  EXPECT_FALSE(fs::exists(tmp / "sharded/model.safetensors.index.json"));
  EXPECT_EQ(read_bytes(tmp / "sharded/model.safetensors"), read_bytes(tmp / "hf/model.safetensors"));
}

TEST(HfExport, HalfPrecisionRoundsToNearestEven) {
  TempDir tmp;
  const ProgramInfo &p = *bigram();
  std::vector<float> w = random_params(p, 4);
  // Exact ties (x = halfway between two bf16 values) must go to the even one.
  w[0] = 1.0f + 0x1p-8f;      // between 1 and 1 + 2^-7: down to 1 (even)
  w[1] = 1.0f + 3 * 0x1p-8f;  // between 1 + 2^-7 and 1 + 2^-6: up (even)
  w[2] = -(1.0f + 0x1p-8f);
  ExportOptions o;
  o.checkpoint = write_weights(tmp, p, w);
  o.out = tmp / "bf16";
  o.dtype = ExportDType::BF16;
  run_export(p, o);
  EXPECT_EQ(json::parse(read_bytes(tmp / "bf16/config.json"))["torch_dtype"], "bfloat16");
  const ckpt::File f = ckpt::read_safetensors(tmp / "bf16/model.safetensors");
  const ckpt::Tensor &emb = f.tensors.at("model.embed_tokens.weight");
  ASSERT_EQ(emb.dtype, ckpt::StDType::BF16);
  const uint16_t *h = reinterpret_cast<const uint16_t *>(emb.data.data());
  EXPECT_EQ(ckpt::bf16_to_float(h[0]), 1.0f);
  EXPECT_EQ(ckpt::bf16_to_float(h[1]), 1.0f + 0x1p-6f);
  EXPECT_EQ(ckpt::bf16_to_float(h[2]), -1.0f);
  for (int i = 0; i < kV * kV; ++i)
    ASSERT_EQ(h[i], nearest_bf16(w[i])) << i;

  // Importing the bf16 folder widens exactly.
  std::vector<float> back(w.size());
  load_model_weights<float>(p, tmp / "bf16", back.data(), {});
  for (int i = 0; i < kV * kV; ++i)
    ASSERT_EQ(back[i], ckpt::bf16_to_float(nearest_bf16(w[i])));

  // f16: values k / 1024 in [-2, 2] are exact in binary16 and come back as is;
  // a value beyond 65504 is refused rather than turned into infinity.
  for (size_t i = 0; i < w.size(); ++i)
    w[i] = float(int(i % 4097) - 2048) / 1024.0f;
  o.checkpoint = write_weights(tmp, p, w);
  o.out = tmp / "f16";
  o.dtype = ExportDType::F16;
  run_export(p, o);
  std::fill(back.begin(), back.end(), 0.0f);
  load_model_weights<float>(p, tmp / "f16", back.data(), {});
  EXPECT_EQ(back, w);
  w[5] = 70000.0f;
  o.checkpoint = write_weights(tmp, p, w);
  o.out = tmp / "f16b";
  EXPECT_ERROR(run_export(p, o), "tensor model.embed_tokens.weight holds values beyond float16's range");
  EXPECT_FALSE(fs::exists(tmp / "f16b"));
}

TEST(HfImport, ErrorsNameTheTensorAndTheFile) {
  TempDir tmp;
  const ProgramInfo &p = *bigram();
  const std::vector<float> w = random_params(p, 5);
  const std::vector<float> emb(w.begin(), w.begin() + kV * kV), gain(w.begin() + kV * kV, w.end());
  std::vector<float> dest(w.size());
  auto load = [&](const std::string &dir) { load_model_weights<float>(p, dir, dest.data(), {}); };
  auto base = [&] {
    std::map<std::string, ckpt::Tensor> t;
    t["model.embed_tokens.weight"] = f32_tensor({kV, kV}, emb);
    t["model.norm.weight"] = f32_tensor({kV}, gain);
    return t;
  };

  auto t = base();
  t.erase("model.norm.weight");
  std::string dir = hand_folder(tmp, "missing", t);
  EXPECT_ERROR(load(dir), dir + "/model.safetensors: missing tensor model.norm.weight (model bigram expects it)");

  t = base();
  t["model.layers.0.mlp.up_proj.weight"] = f32_tensor({1}, {1.0f});
  dir = hand_folder(tmp, "extra", t);
  EXPECT_ERROR(load(dir), dir + "/model.safetensors: unexpected tensor model.layers.0.mlp.up_proj.weight");

  t = base();
  t["model.norm.weight"] = f32_tensor({kV - 1}, std::vector<float>(kV - 1, 1.0f));
  dir = hand_folder(tmp, "shape", t);
  EXPECT_ERROR(load(dir), "tensor model.norm.weight has shape [15], model bigram expects [16]");

  t = base();
  const std::vector<int32_t> ints(kV, 1);
  t["model.norm.weight"] = ckpt::Tensor::from_i32({kV}, ints.data());
  dir = hand_folder(tmp, "ints", t);
  EXPECT_ERROR(load(dir), "tensor model.norm.weight is an integer tensor");

  dir = hand_folder(tmp, "config", base(), R"({"model_type": "bigram", "vocab_size": 17})");
  EXPECT_ERROR(load(dir), dir + "/config.json: vocab_size is 17, but model bigram was compiled with 16");

  // Tolerated like transformers does: RoPE buffers, and a tied model's
  // lm_head when it equals the embedding (the bigram program is "tied": it
  // has an embedding and no lm_head).
  t = base();
  t["model.layers.0.self_attn.rotary_emb.inv_freq"] = f32_tensor({2}, {1.0f, 0.01f});
  t["lm_head.weight"] = f32_tensor({kV, kV}, emb);
  dir = hand_folder(tmp, "tolerated", t);
  std::fill(dest.begin(), dest.end(), 0.0f);
  load(dir);
  EXPECT_EQ(dest, w);
  std::vector<float> other = emb;
  other[7] += 1.0f;
  t["lm_head.weight"] = f32_tensor({kV, kV}, other);
  dir = hand_folder(tmp, "untied", t);
  EXPECT_ERROR(load(dir), "tensor lm_head.weight differs from model.embed_tokens.weight, but model bigram ties them");

  // Index and shards disagreeing.
  dir = hand_folder(tmp, "index", base());
  fs::rename(dir + "/model.safetensors", dir + "/model-00001-of-00001.safetensors");
  write_text(dir + "/model.safetensors.index.json",
             R"({"weight_map": {"model.embed_tokens.weight": "model-00001-of-00001.safetensors"}})");
  EXPECT_ERROR(load(dir), "model-00001-of-00001.safetensors: holds tensor model.norm.weight, which " +
                              dir + "/model.safetensors.index.json does not map to this file");
  write_text(dir + "/model.safetensors.index.json",
             R"({"weight_map": {"model.embed_tokens.weight": "model-00001-of-00001.safetensors",
                                "model.norm.weight": "model-00001-of-00001.safetensors",
                                "lm_head.weight": "model-00001-of-00001.safetensors"}})");
  EXPECT_ERROR(load(dir), "model-00001-of-00001.safetensors: missing tensor lm_head.weight (" + dir +
                              "/model.safetensors.index.json maps it to this file)");
}

TEST(HfExport, TokenizerFilesAndUsageErrors) {
  TempDir tmp;
  {
    std::ofstream corpus(tmp / "corpus.txt");
    Rng rng(2);
    const char *words[] = {"ab", "ba", "abc", "cab", "bca"};
    for (int line = 0; line < 200; ++line)
      for (int k = 0; k < 6; ++k)
        corpus << words[rng.below(5)] << (k < 5 ? " " : "\n");
  }
  ASSERT_TRUE(sentencepiece::SentencePieceTrainer::Train(
                  "--input=" + (tmp / "corpus.txt") + " --model_prefix=" + (tmp / "tok") +
                  " --model_type=bpe --vocab_size=12 --hard_vocab_limit=false"
                  " --character_coverage=1.0 --minloglevel=2")
                  .ok());
  const ProgramInfo &p = *bigram();
  ExportOptions o;
  o.checkpoint = write_weights(tmp, p, random_params(p, 6));
  o.out = tmp / "hf";
  o.tokenizer = tmp / "tok.model";
  run_export(p, o);
  EXPECT_EQ(read_bytes(tmp / "hf/tokenizer.model"), read_bytes(tmp / "tok.model"));
  const json tc = json::parse(read_bytes(tmp / "hf/tokenizer_config.json"));
  EXPECT_EQ(tc["tokenizer_class"], "LlamaTokenizer");
  EXPECT_EQ(tc["add_bos_token"], true);
  EXPECT_EQ(tc["add_eos_token"], false);
  // spm_train's defaults: unk 0, bos 1, eos 2, no pad.
  EXPECT_EQ(tc["bos_token"], "<s>");
  EXPECT_EQ(tc["eos_token"], "</s>");
  EXPECT_EQ(tc["unk_token"], "<unk>");
  EXPECT_TRUE(tc["pad_token"].is_null());
  EXPECT_EQ(tc["added_tokens_decoder"]["1"]["content"], "<s>");
  EXPECT_EQ(tc["added_tokens_decoder"]["1"]["special"], true);
  const json sm = json::parse(read_bytes(tmp / "hf/special_tokens_map.json"));
  EXPECT_EQ(sm["eos_token"]["content"], "</s>");
  EXPECT_FALSE(sm.contains("pad_token"));

  // Through the command line.
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"bigram", "export"});
    std::vector<char *> argv;
    for (std::string &a : args)
      argv.push_back(a.data());
    ::testing::internal::CaptureStdout();
    ::testing::internal::CaptureStderr();
    const int code = llamart::run_main(int(argv.size()), argv.data(), &p);
    ::testing::internal::GetCapturedStdout();
    return std::make_pair(code, ::testing::internal::GetCapturedStderr());
  };
  auto r = cli({"--checkpoint", o.checkpoint, "--format", "hf", "--out", tmp / "c",
                "--dtype", "bf16", "--shard-size", "500"});
  EXPECT_EQ(r.first, 0) << r.second;
  EXPECT_TRUE(fs::exists(tmp / "c/model-00001-of-00002.safetensors"));
  r = cli({"--checkpoint", o.checkpoint, "--format", "onnx", "--out", tmp / "d"});
  EXPECT_EQ(r.first, 2);
  EXPECT_NE(r.second.find("--format: unknown format 'onnx' (supported: hf)"), std::string::npos);
  r = cli({"--checkpoint", o.checkpoint, "--format", "hf", "--out", tmp / "d", "--dtype", "f8"});
  EXPECT_EQ(r.first, 2);
  EXPECT_NE(r.second.find("--dtype: expected f32, bf16 or f16, got 'f8'"), std::string::npos);
  r = cli({"--checkpoint", o.checkpoint, "--format", "hf", "--out", tmp / "corpus.txt"});
  EXPECT_EQ(r.first, 1);
  EXPECT_NE(r.second.find("exists and is not a directory"), std::string::npos) << r.second;

  EXPECT_EQ(parse_byte_size("1048576"), 1048576u);
  EXPECT_EQ(parse_byte_size("5GB"), 5000000000u);
  EXPECT_EQ(parse_byte_size("2MiB"), 2097152u);
  EXPECT_ERROR(parse_byte_size("0"), "--shard-size");
  EXPECT_ERROR(parse_byte_size("12TB"), "--shard-size");
  EXPECT_ERROR(parse_byte_size("99999999999999999999"), "--shard-size");
}

// ---------------------------------------------------------------------------
// Evaluation

// log softmax(W[prev] * g)[next] of the bigram model, directly.
double bigram_logprob(const std::vector<float> &w, int prev, int next, int vocab) {
  const float *row = w.data() + prev * vocab;
  const float *g = w.data() + vocab * vocab;
  double total = 0.0;
  for (int j = 0; j < vocab; ++j)
    total += std::exp(double(row[j]) * double(g[j]));
  return double(row[next]) * double(g[next]) - std::log(total);
}

TEST(Eval, LossIsTheTokenMeanOverEveryWindow) {
  TempDir tmp;
  const ProgramInfo &p = *bigram();
  const std::vector<float> w = random_params(p, 7);
  const std::string weights = write_weights(tmp, p, w);
  // 95 tokens: 11 windows of 9 tokens (stride 8), i.e. 2 full batches of 4
  // and one of 3 windows padded with an unscored row.
  std::vector<int32_t> toks;
  Rng rng(8);
  for (int i = 0; i < 95; ++i)
    toks.push_back(int32_t(rng.below(kV)));
  fs::create_directories(tmp / "data");
  llamart::data::write_shard(tmp / "data/val_00000.tok", toks, kV);

  auto expected = [&](int windows) {
    double sum = 0.0;
    for (int win = 0; win < windows; ++win)
      for (int t = 0; t < kS; ++t)
        sum -= bigram_logprob(w, toks[win * kS + t], toks[win * kS + t + 1], kV);
    return sum / (windows * kS);
  };
  EvalLossOptions o;
  o.checkpoint = weights;
  o.data_dir = tmp / "data";
  EvalLossResult r = run_eval_loss(p, o);
  EXPECT_EQ(r.windows, 11);
  EXPECT_EQ(r.tokens, 11 * kS);
  EXPECT_NEAR(r.loss, expected(11), 1e-6 * expected(11));
  EXPECT_DOUBLE_EQ(r.perplexity, std::exp(r.loss));
  o.batches = 2;
  r = run_eval_loss(p, o);
  EXPECT_EQ(r.windows, 8);
  EXPECT_NEAR(r.loss, expected(8), 1e-6 * expected(8));
  o.split = "test";
  EXPECT_ERROR(run_eval_loss(p, o), "no test_*.tok shards");
}

TEST(Eval, ContinuationLogLikelihoodsMatchTheBigramFormula) {
  const ProgramInfo &p = *llamart::testing::bigram_program<float, 64, 2, 16>();
  std::vector<float> w(static_cast<size_t>(p.param_numel));
  init_params(p, 10, w.data());
  for (int j = 0; j < 64; ++j) // gains away from 1
    w[64 * 64 + j] = 1.0f + 0.03f * float(j % 7);
  std::vector<ContinuationRequest> reqs = {
      {{1, 5, 9}, {4}},
      {{1}, {7, 7, 3}},
      {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, {21, 22, 23}},
      {{63}, std::vector<int32_t>(16, 30)}, // exactly seq_len continuation tokens
  };
  const std::vector<double> got = score_continuations<float>(p, w.data(), reqs);
  ASSERT_EQ(got.size(), reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    double want = 0.0;
    int prev = reqs[i].context.back();
    for (int32_t t : reqs[i].continuation) {
      want += bigram_logprob(w, prev, t, 64);
      prev = t;
    }
    EXPECT_NEAR(got[i], want, 1e-5 * std::fabs(want)) << "request " << i;
  }
  reqs = {{{1}, std::vector<int32_t>(17, 3)}};
  EXPECT_ERROR(score_continuations<float>(p, w.data(), reqs), "more than seq_len 16");
  reqs = {{{}, {3}}};
  EXPECT_ERROR(score_continuations<float>(p, w.data(), reqs), "empty context");
  reqs = {{{1}, {64}}};
  EXPECT_ERROR(score_continuations<float>(p, w.data(), reqs), "token 64 is outside the vocabulary [0, 64)");
}

TEST(Eval, TasksFollowTheHarnessSplitAndPickTheArgmax) {
  TempDir tmp;
  {
    std::ofstream corpus(tmp / "corpus.txt");
    const char *words[] = {"abc", "bca", "cab", "dab", "bad", "cede", "ace", "dead", "bead"};
    Rng rng(1);
    for (int line = 0; line < 300; ++line)
      for (int k = 0; k < 8; ++k)
        corpus << words[rng.below(9)] << (k < 7 ? " " : "\n");
  }
  ASSERT_TRUE(sentencepiece::SentencePieceTrainer::Train(
                  "--input=" + (tmp / "corpus.txt") + " --model_prefix=" + (tmp / "tok") +
                  " --model_type=bpe --vocab_size=30 --hard_vocab_limit=false"
                  " --character_coverage=1.0 --minloglevel=2")
                  .ok());
  const ProgramInfo &p = *llamart::testing::bigram_program<float, 64, 2, 16>();
  std::vector<float> w(static_cast<size_t>(p.param_numel));
  init_params(p, 11, w.data());
  ckpt::File f;
  add_param_tensors(p, w.data(), "", f);
  ckpt::write_safetensors(tmp / "w.safetensors", f);
  write_text(tmp / "tasks.jsonl",
             "{\"context\": \"abc dab \", \"choices\": [\"bad\", \"cede ace\", \"dead\"], \"label\": 1}\n"
             "\n"
             "{\"context\": \"bead\", \"choices\": [\" ace\", \" bca cab dab\"], \"label\": 0}\n"
             "{\"context\": \"\", \"choices\": [\"cab\", \"dead bead\"], \"label\": 1}\n");

  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(tmp / "tok.model").ok());
  auto enc = [&](const std::string &s) {
    std::vector<int> ids;
    EXPECT_TRUE(sp.Encode(s, &ids).ok());
    return std::vector<int32_t>(ids.begin(), ids.end());
  };
  struct Item {
    std::string context;
    std::vector<std::string> choices;
    int label;
  };
  const std::vector<Item> items = {{"abc dab ", {"bad", "cede ace", "dead"}, 1},
                                   {"bead", {" ace", " bca cab dab"}, 0},
                                   {"", {"cab", "dead bead"}, 1}};
  for (Normalize norm : {Normalize::None, Normalize::Length}) {
    TaskOptions o;
    o.checkpoint = tmp / "w.safetensors";
    o.tokenizer = tmp / "tok.model";
    o.tasks = tmp / "tasks.jsonl";
    o.normalize = norm;
    o.details = tmp / "details.jsonl";
    const TaskResult r = run_eval_tasks(p, o);
    ASSERT_EQ(r.total, 3);
    int correct = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      // The harness split, done here by hand: "abc dab " + "bad" ->
      // context "abc dab", continuation " bad".
      std::string ctx = items[i].context;
      std::string space;
      while (!ctx.empty() && ctx.back() == ' ') {
        space += ' ';
        ctx.pop_back();
      }
      int best = 0;
      std::vector<double> scores;
      for (size_t c = 0; c < items[i].choices.size(); ++c) {
        const std::vector<int32_t> ctx_ids = enc(ctx);
        const std::vector<int32_t> whole = enc(ctx + space + items[i].choices[c]);
        std::vector<int32_t> context = {int32_t(sp.bos_id())};
        context.insert(context.end(), ctx_ids.begin(), ctx_ids.end());
        const std::vector<int32_t> cont(whole.begin() + ctx_ids.size(), whole.end());
        const ChoiceResult &got = r.items[i].choices[c];
        EXPECT_EQ(got.context, context) << i << " " << c;
        EXPECT_EQ(got.continuation, cont) << i << " " << c;
        double ll = 0.0;
        int prev = context.back();
        for (int32_t t : cont) {
          ll += bigram_logprob(w, prev, t, 64);
          prev = t;
        }
        EXPECT_NEAR(got.loglik, ll, 1e-5 * std::fabs(ll));
        scores.push_back(norm == Normalize::Length ? ll / double(cont.size()) : ll);
        if (scores.back() > scores[best])
          best = int(c);
      }
      EXPECT_EQ(r.items[i].predicted, best) << i;
      EXPECT_EQ(r.items[i].line, i == 0 ? 1 : int(i) + 2);
      correct += best == items[i].label;
    }
    EXPECT_EQ(r.correct, correct);
    std::ifstream details(tmp / "details.jsonl");
    std::string line;
    int lines = 0;
    while (std::getline(details, line))
      EXPECT_EQ(json::parse(line)["predicted"], r.items[lines++].predicted);
    EXPECT_EQ(lines, 3);
  }
}

TEST(Eval, TaskFileErrorsNameTheLine) {
  TempDir tmp;
  const std::string path = tmp / "t.jsonl";
  const std::pair<const char *, const char *> cases[] = {
      {"{\"context\": 1, \"choices\": [\"a\"], \"label\": 0}", ":1: \"context\" must be a string"},
      {"{\"context\": \"x\", \"choices\": [], \"label\": 0}", ":1: \"choices\" must be a non-empty list"},
      {"{\"context\": \"x\", \"choices\": [\"a\", 2], \"label\": 0}", "\"choices\" must be a non-empty list"},
      {"{\"context\": \"x\", \"choices\": [\"a\"], \"label\": \"0\"}", "\"label\" must be an integer"},
      {"{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"label\": 2}",
       "\"label\" 2 is not the index of one of the 2 choices"},
      {"{\"context\": \"x\"", ":1: not a JSON object"},
      {"", "holds no task items"},
  };
  for (const auto &[text, message] : cases) {
    write_text(path, text);
    EXPECT_ERROR(read_task_file(path), message);
  }
  write_text(path, "{\"context\": \"x\", \"choices\": [\"a\"], \"label\": 0}\n\n[1]\n");
  EXPECT_ERROR(read_task_file(path), path + ":3: not a JSON object");
}

} // namespace
