// LlamaConfig: presets against the published parameter counts
// (/work/shared/REFERENCE.md, LLaMA paper Table 2), an independent
// closed-form count, the parameter table, HF config.json round trip, Meta
// params.json import with Meta's FFN rule, and the error messages.
#include "models/LlamaConfig.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <stdexcept>

#include <unistd.h>

#include <gtest/gtest.h>

using namespace llama;

namespace {

// Closed form written out from the architecture, independent of paramCount:
// embed V*H; per layer q,o: H*(h*d), k,v: H*(kv*d), SwiGLU 3*H*F, two norms H;
// final norm H; lm_head V*H unless tied.
int64_t closedFormParams(int64_t V, int64_t H, int64_t F, int64_t L, int64_t heads,
                         int64_t kvHeads, int64_t headDim, bool tied) {
  const int64_t attention = 2 * H * heads * headDim + 2 * H * kvHeads * headDim;
  const int64_t layer = attention + 3 * H * F + 2 * H;
  return V * H + L * layer + H + (tied ? 0 : V * H);
}

// Runs fn, which must throw std::runtime_error whose message contains every
// fragment; returns the message for further checks.
std::string expectError(const std::function<void()> &fn, std::vector<std::string> fragments) {
  try {
    fn();
  } catch (const std::runtime_error &e) {
    const std::string msg = e.what();
    for (const std::string &frag : fragments)
      EXPECT_NE(msg.find(frag), std::string::npos) << "'" << frag << "' not in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line error: " << msg;
    return msg;
  }
  ADD_FAILURE() << "expected std::runtime_error";
  return "";
}

// A fresh directory per test, removed afterwards.
class TempDir {
public:
  TempDir() {
    const auto *info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           ("models_test_" + std::to_string(::getpid()) + "_" + info->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  ~TempDir() { std::filesystem::remove_all(dir_); }
  std::string write(const std::string &name, const std::string &text) const {
    const auto path = dir_ / name;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path) << text;
    return path.string();
  }
  std::string path(const std::string &name) const { return (dir_ / name).string(); }

private:
  std::filesystem::path dir_;
};

} // namespace

// ---- FFN width and presets ---------------------------------------------------

TEST(LlamaFfnWidth, PaperSizes) {
  // 256 * ceil(8*dim/3 / 256), worked by hand: 4096 -> 10922.67 -> 43 * 256.
  EXPECT_EQ(llamaFfnWidth(4096), 11008);
  EXPECT_EQ(llamaFfnWidth(5120), 13824);
  EXPECT_EQ(llamaFfnWidth(6656), 17920);
  EXPECT_EQ(llamaFfnWidth(8192), 22016);
  EXPECT_EQ(llamaFfnWidth(384), 1024); // 8*384/3 = 1024 exactly: no rounding up
  EXPECT_EQ(llamaFfnWidth(96), 256);   // 256 exactly
  EXPECT_EQ(llamaFfnWidth(97), 512);   // 258.67 -> next multiple
  EXPECT_EQ(llamaFfnWidth(1), 256);
  EXPECT_THROW(llamaFfnWidth(0), std::runtime_error);
}

TEST(LlamaFfnWidth, MatchesFloatFormulaOverRange) {
  // Reference in doubles (exact enough for these magnitudes), against the
  // integer implementation.
  for (int64_t dim = 1; dim <= 20000; ++dim) {
    const double raw = 2.0 / 3.0 * 4.0 * static_cast<double>(dim);
    const int64_t ref = 256 * static_cast<int64_t>(std::ceil(raw / 256.0 - 1e-9));
    ASSERT_EQ(llamaFfnWidth(dim), ref) << "dim " << dim;
  }
}

struct PaperRow {
  const char *preset;
  int64_t dim, heads, layers, params;
};

TEST(Presets, LlamaPaperCountsExact) {
  const PaperRow rows[] = {{"llama-7b", 4096, 32, 32, 6738415616},
                           {"llama-13b", 5120, 40, 40, 13015864320},
                           {"llama-33b", 6656, 52, 60, 32528943616},
                           {"llama-65b", 8192, 64, 80, 65285660672}};
  for (const PaperRow &r : rows) {
    SCOPED_TRACE(r.preset);
    const LlamaConfig c = preset(r.preset);
    EXPECT_EQ(c.name, r.preset);
    EXPECT_EQ(c.hidden_size, r.dim);
    EXPECT_EQ(c.num_heads, r.heads);
    EXPECT_EQ(c.num_kv_heads, r.heads);
    EXPECT_EQ(c.num_layers, r.layers);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.vocab_size, 32000);
    EXPECT_EQ(c.rms_norm_eps, 1e-6);
    EXPECT_EQ(c.rope_theta, 1e4);
    EXPECT_EQ(c.max_position_embeddings, 2048);
    EXPECT_FALSE(c.tie_word_embeddings);
    // Independent closed form with the paper's FFN width, and the published count.
    const int64_t ffn = llamaFfnWidth(r.dim);
    EXPECT_EQ(c.intermediate_size, ffn);
    EXPECT_EQ(closedFormParams(32000, r.dim, ffn, r.layers, r.heads, r.heads, r.dim / r.heads,
                               false),
              r.params);
    EXPECT_EQ(paramCount(c), r.params);
  }
  EXPECT_EQ(preset("llama-7b").intermediate_size, 11008);
}

TEST(Presets, Llama2_7b) {
  const LlamaConfig c = preset("llama2-7b");
  LlamaConfig expected = preset("llama-7b");
  expected.name = "llama2-7b";
  expected.rms_norm_eps = 1e-5;
  expected.max_position_embeddings = 4096;
  EXPECT_EQ(c, expected);
  EXPECT_EQ(paramCount(c), 6738415616);
}

TEST(Presets, TinyLlamaGqa) {
  const LlamaConfig c = preset("tinyllama-1.1b");
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.intermediate_size, 5632);
  EXPECT_EQ(c.num_layers, 22);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(closedFormParams(32000, 2048, 5632, 22, 32, 4, 64, false), 1100048384);
  EXPECT_EQ(paramCount(c), 1100048384);
}

TEST(Presets, TinyAndMicro) {
  const LlamaConfig t = preset("tiny");
  EXPECT_EQ(t.vocab_size, 8192);
  EXPECT_EQ(t.hidden_size, 384);
  EXPECT_EQ(t.intermediate_size, 1024);
  EXPECT_EQ(t.num_layers, 5);
  EXPECT_EQ(t.num_heads, 6);
  EXPECT_EQ(t.num_kv_heads, 6);
  EXPECT_EQ(t.head_dim, 64);
  EXPECT_EQ(t.max_position_embeddings, 1024);
  EXPECT_EQ(closedFormParams(8192, 384, 1024, 5, 6, 6, 64, false), 15143040);
  EXPECT_EQ(paramCount(t), 15143040);

  const LlamaConfig m = preset("micro");
  EXPECT_EQ(m.vocab_size, 64);
  EXPECT_EQ(m.hidden_size, 16);
  EXPECT_EQ(m.num_layers, 2);
  EXPECT_EQ(m.num_heads, 4);
  EXPECT_EQ(m.num_kv_heads, 2);
  EXPECT_EQ(m.head_dim, 4);
  EXPECT_EQ(m.intermediate_size, 48);
  EXPECT_EQ(m.max_position_embeddings, 64);
  // By hand: embed 1024 + per layer (q 256 + k 128 + v 128 + o 256 + 3*768 + 32 = 3104) * 2
  // + final norm 16 + lm_head 1024.
  EXPECT_EQ(paramCount(m), 1024 + 2 * 3104 + 16 + 1024);
}

TEST(Presets, AllValidAndNamed) {
  const std::vector<std::string> names = presetNames();
  EXPECT_EQ(names.size(), 13u);
  for (const std::string &n : names) {
    SCOPED_TRACE(n);
    const LlamaConfig c = preset(n);
    EXPECT_EQ(c.name, n);
    EXPECT_NO_THROW(validate(c));
  }
}

// The Llama 3 family against the counts of Meta's published checkpoints
// (model.safetensors.index.json metadata / model cards) and the closed form.
TEST(Presets, Llama3CountsExact) {
  struct Row {
    const char *preset;
    int64_t dim, ffn, heads, layers;
    bool tied;
    double ropeFactor;
    int64_t params;
  };
  const Row rows[] = {{"llama3.2-1b", 2048, 8192, 32, 16, true, 32.0, 1235814400},
                      {"llama3.2-3b", 3072, 8192, 24, 28, true, 32.0, 3212749824},
                      {"llama3.1-8b", 4096, 14336, 32, 32, false, 8.0, 8030261248},
                      {"llama3.1-70b", 8192, 28672, 64, 80, false, 8.0, 70553706496},
                      {"llama3.1-405b", 16384, 53248, 128, 126, false, 8.0, 405853388800}};
  for (const Row &r : rows) {
    SCOPED_TRACE(r.preset);
    const LlamaConfig c = preset(r.preset);
    EXPECT_EQ(c.vocab_size, 128256);
    EXPECT_EQ(c.num_kv_heads, 8);
    EXPECT_EQ(c.head_dim, r.dim / r.heads);
    EXPECT_EQ(c.rope_theta, 500000.0);
    EXPECT_EQ(c.rms_norm_eps, 1e-5);
    EXPECT_EQ(c.max_position_embeddings, 131072);
    EXPECT_EQ(c.rope_scaling.type, RopeType::Llama3);
    EXPECT_EQ(c.rope_scaling.factor, r.ropeFactor);
    EXPECT_EQ(c.rope_scaling.low_freq_factor, 1.0);
    EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0);
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
    EXPECT_EQ(c.tie_word_embeddings, r.tied);
    EXPECT_EQ(closedFormParams(128256, r.dim, r.ffn, r.layers, r.heads, 8, r.dim / r.heads, r.tied),
              r.params);
    EXPECT_EQ(paramCount(c), r.params);
  }
}

// Meta's Llama 3 params.json files (as published) give the same shapes and
// counts as the presets (Meta checkpoints keep `output` apart: untied).
TEST(MetaParams, Llama3PublishedFiles) {
  TempDir tmp;
  struct Row {
    const char *preset, *json;
    double factor;
  };
  const Row rows[] = {
      {"llama3.1-8b", R"({"dim": 4096, "ffn_dim_multiplier": 1.3, "multiple_of": 1024, "n_heads": 32, "n_kv_heads": 8, "n_layers": 32, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": true, "vocab_size": 128256})", 8.0},
      {"llama3.1-70b", R"({"dim": 8192, "ffn_dim_multiplier": 1.3, "multiple_of": 4096, "n_heads": 64, "n_kv_heads": 8, "n_layers": 80, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": true, "vocab_size": 128256})", 8.0},
      {"llama3.1-405b", R"({"dim": 16384, "ffn_dim_multiplier": 1.2, "multiple_of": 4096, "n_heads": 128, "n_kv_heads": 8, "n_layers": 126, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": true, "vocab_size": 128256})", 8.0},
      {"llama3.2-1b", R"({"dim": 2048, "ffn_dim_multiplier": 1.5, "multiple_of": 256, "n_heads": 32, "n_kv_heads": 8, "n_layers": 16, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": true, "rope_scaling_factor": 32, "vocab_size": 128256})", 32.0},
      {"llama3.2-3b", R"({"dim": 3072, "ffn_dim_multiplier": 1.0, "multiple_of": 256, "n_heads": 24, "n_kv_heads": 8, "n_layers": 28, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": true, "vocab_size": 128256})", 8.0}};
  for (const Row &r : rows) {
    SCOPED_TRACE(r.preset);
    const LlamaConfig c = loadMetaParams(tmp.write(std::string(r.preset) + ".json", r.json));
    LlamaConfig p = preset(r.preset);
    EXPECT_EQ(c.intermediate_size, p.intermediate_size);
    EXPECT_EQ(c.num_kv_heads, 8);
    EXPECT_EQ(c.head_dim, p.head_dim);
    EXPECT_EQ(c.rope_scaling.type, RopeType::Llama3);
    EXPECT_EQ(c.rope_scaling.factor, r.factor); // 8 unless the file says otherwise
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
    p.tie_word_embeddings = false;
    EXPECT_EQ(paramCount(c), paramCount(p));
  }
}

TEST(Presets, UnknownListsKnown) {
  expectError([] { preset("llama-8b"); },
              {"unknown preset 'llama-8b'", "known: llama-7b, llama-13b", "micro"});
}

// ---- Parameter table --------------------------------------------------------

TEST(ParamTable, SumsToCountForEveryPreset) {
  for (const std::string &n : presetNames()) {
    SCOPED_TRACE(n);
    const LlamaConfig c = preset(n);
    int64_t sum = 0;
    std::set<std::string> seen;
    for (const ParamSpec &p : paramTable(c)) {
      int64_t numel = 1;
      for (int64_t d : p.shape)
        numel *= d;
      sum += numel;
      EXPECT_TRUE(seen.insert(p.name).second) << "duplicate " << p.name;
    }
    EXPECT_EQ(sum, paramCount(c));
    EXPECT_EQ(seen.size(), static_cast<size_t>(9 * c.num_layers + (c.tie_word_embeddings ? 2 : 3)));
  }
}

TEST(ParamTable, MicroOrderNamesShapesGqa) {
  const auto table = paramTable(preset("micro"));
  // V=64, H=16, F=48, 4 heads * 4 = 16 q rows, 2 kv heads * 4 = 8 kv rows.
  const std::vector<ParamSpec> layer0 = {
      {"model.layers.0.self_attn.q_proj.weight", {16, 16}, false},
      {"model.layers.0.self_attn.k_proj.weight", {8, 16}, false},
      {"model.layers.0.self_attn.v_proj.weight", {8, 16}, false},
      {"model.layers.0.self_attn.o_proj.weight", {16, 16}, false},
      {"model.layers.0.mlp.gate_proj.weight", {48, 16}, false},
      {"model.layers.0.mlp.up_proj.weight", {48, 16}, false},
      {"model.layers.0.mlp.down_proj.weight", {16, 48}, false},
      {"model.layers.0.input_layernorm.weight", {16}, true},
      {"model.layers.0.post_attention_layernorm.weight", {16}, true}};
  ASSERT_EQ(table.size(), 21u);
  EXPECT_EQ(table[0].name, "model.embed_tokens.weight");
  EXPECT_EQ(table[0].shape, (std::vector<int64_t>{64, 16}));
  EXPECT_FALSE(table[0].isNormWeight);
  for (size_t i = 0; i < layer0.size(); ++i) {
    EXPECT_EQ(table[1 + i].name, layer0[i].name);
    EXPECT_EQ(table[1 + i].shape, layer0[i].shape) << layer0[i].name;
    EXPECT_EQ(table[1 + i].isNormWeight, layer0[i].isNormWeight) << layer0[i].name;
  }
  EXPECT_EQ(table[10].name, "model.layers.1.self_attn.q_proj.weight");
  EXPECT_EQ(table[19].name, "model.norm.weight");
  EXPECT_TRUE(table[19].isNormWeight);
  EXPECT_EQ(table[20].name, "lm_head.weight");
  EXPECT_EQ(table[20].shape, (std::vector<int64_t>{64, 16}));
}

TEST(ParamTable, TiedDropsLmHeadAndCountsOnce) {
  LlamaConfig c = preset("tiny");
  c.tie_word_embeddings = true;
  EXPECT_EQ(paramCount(c), closedFormParams(8192, 384, 1024, 5, 6, 6, 64, true));
  EXPECT_EQ(paramCount(c), 15143040 - 8192 * 384);
  const auto table = paramTable(c);
  EXPECT_EQ(table.back().name, "model.norm.weight");
  for (const ParamSpec &p : table)
    EXPECT_NE(p.name, "lm_head.weight");
}

TEST(ParamTable, ExplicitHeadDimDifferentFromHiddenOverHeads) {
  // head_dim * heads != hidden is legal (HF head_dim field): q is [h*d, H], o is [H, h*d].
  LlamaConfig c = preset("micro");
  c.head_dim = 6;
  const auto table = paramTable(c);
  EXPECT_EQ(table[1].shape, (std::vector<int64_t>{24, 16}));
  EXPECT_EQ(table[2].shape, (std::vector<int64_t>{12, 16}));
  EXPECT_EQ(table[4].shape, (std::vector<int64_t>{16, 24}));
  EXPECT_EQ(paramCount(c), closedFormParams(64, 16, 48, 2, 4, 2, 6, false));
}

TEST(ParamCount, NonEmbedding) {
  const LlamaConfig c = preset("llama-7b");
  EXPECT_EQ(nonEmbeddingParamCount(c), 6738415616 - 32000 * 4096);
  LlamaConfig tied = preset("tiny");
  tied.tie_word_embeddings = true;
  EXPECT_EQ(nonEmbeddingParamCount(tied), paramCount(tied));
}

// ---- Validation -------------------------------------------------------------

TEST(Validate, RejectsBadShapes) {
  auto broken = [](std::function<void(LlamaConfig &)> edit) {
    LlamaConfig c = preset("micro");
    edit(c);
    return [c] { validate(c); };
  };
  expectError(broken([](LlamaConfig &c) { c.num_kv_heads = 3; }),
              {"config 'micro'", "num_key_value_heads (3) must divide num_attention_heads (4)"});
  expectError(broken([](LlamaConfig &c) { c.head_dim = 5; }), {"head_dim", "even"});
  expectError(broken([](LlamaConfig &c) { c.hidden_size = 0; }), {"hidden_size must be > 0"});
  expectError(broken([](LlamaConfig &c) { c.vocab_size = -5; }), {"vocab_size must be > 0"});
  expectError(broken([](LlamaConfig &c) { c.num_layers = 0; }), {"num_hidden_layers"});
  expectError(broken([](LlamaConfig &c) { c.intermediate_size = 0; }), {"intermediate_size"});
  // A fuzzed config.json with ~3e8 layers made paramTable try to reserve
  // 189 GB; the layer count is bounded instead.
  expectError(broken([](LlamaConfig &c) { c.num_layers = 300000000; }),
              {"num_hidden_layers must be at most 4096 (got 300000000)"});
  LlamaConfig deepest = preset("micro");
  deepest.num_layers = kMaxLayers;
  EXPECT_EQ(paramTable(deepest).size(), size_t(9 * kMaxLayers + 3));
  expectError(broken([](LlamaConfig &c) { c.max_position_embeddings = 0; }),
              {"max_position_embeddings"});
  expectError(broken([](LlamaConfig &c) { c.rms_norm_eps = 0; }), {"rms_norm_eps"});
  expectError(broken([](LlamaConfig &c) { c.rms_norm_eps = std::nan(""); }), {"rms_norm_eps"});
  expectError(broken([](LlamaConfig &c) { c.rope_theta = -1; }), {"rope_theta"});
  expectError(broken([](LlamaConfig &c) { c.init_std = 0; }), {"initializer_range"});
  expectError(broken([](LlamaConfig &c) { c.eos_token_id = 64; }), {"eos_token_id (64)"});
  expectError(broken([](LlamaConfig &c) {
                c.vocab_size = int64_t(1) << 40;
                c.hidden_size = int64_t(1) << 30;
                c.head_dim = int64_t(1) << 28;
              }),
              {"overflows"});
  // Every public consumer validates, so a bad config never reaches IR.
  LlamaConfig c = preset("micro");
  c.num_kv_heads = 3;
  EXPECT_THROW(paramCount(c), std::runtime_error);
  EXPECT_THROW(paramTable(c), std::runtime_error);
  EXPECT_THROW(toHFConfigJson(c), std::runtime_error);
}

TEST(Validate, DeriveHeadDim) {
  LlamaConfig c = preset("llama-7b");
  c.hidden_size = 2048;
  deriveHeadDim(c);
  EXPECT_EQ(c.head_dim, 64);
  c.num_heads = 30;
  expectError([&] { deriveHeadDim(c); },
              {"num_attention_heads (30) must divide hidden_size (2048)"});
}

// ---- HF config.json -----------------------------------------------------------

TEST(HFConfig, RoundTripEveryPreset) {
  TempDir tmp;
  for (const std::string &n : presetNames()) {
    SCOPED_TRACE(n);
    const LlamaConfig c = preset(n);
    const std::string path = tmp.write(n + "/config.json", toHFConfigJson(c));
    EXPECT_EQ(loadHFConfig(path), c);
    EXPECT_EQ(loadConfigFile(path), c);
  }
}

TEST(HFConfig, RoundTripUnusualValues) {
  // Doubles that do not print exactly at default precision, tied, GQA,
  // explicit head_dim, no BOS token.
  LlamaConfig c = preset("micro");
  c.name = "odd";
  c.rms_norm_eps = 1.0 / 3.0 * 1e-5;
  c.rope_theta = 500000.0;
  c.init_std = 0.1 / 7.0;
  c.head_dim = 6;
  c.tie_word_embeddings = true;
  c.bos_token_id = -1;
  c.eos_token_id = 63;
  TempDir tmp;
  const std::string text = toHFConfigJson(c);
  EXPECT_NE(text.find("\"architectures\""), std::string::npos);
  EXPECT_NE(text.find("\"LlamaForCausalLM\""), std::string::npos);
  EXPECT_NE(text.find("\"model_type\": \"llama\""), std::string::npos);
  EXPECT_NE(text.find("\"hidden_act\": \"silu\""), std::string::npos);
  EXPECT_NE(text.find("\"torch_dtype\": \"float32\""), std::string::npos);
  EXPECT_EQ(loadHFConfig(tmp.write("config.json", text)), c);
}

// A real-world file as published (TinyLlama-1.1B-intermediate-step-1431k-3T).
const char *kTinyLlamaConfig = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 5632,
  "max_position_embeddings": 2048,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 22,
  "num_key_value_heads": 4,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.31.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

TEST(HFConfig, PublishedTinyLlama) {
  TempDir tmp;
  const LlamaConfig c = loadHFConfig(tmp.write("TinyLlama-1.1B/config.json", kTinyLlamaConfig));
  LlamaConfig expected = preset("tinyllama-1.1b");
  expected.name = "TinyLlama-1.1B"; // from the folder: the file has no _name_or_path
  EXPECT_EQ(c, expected);
}

TEST(HFConfig, DefaultsForOptionalFields) {
  TempDir tmp;
  const LlamaConfig c = loadHFConfig(tmp.write("m.json", R"({
    "vocab_size": 100, "hidden_size": 48, "intermediate_size": 128,
    "num_hidden_layers": 3, "num_attention_heads": 6, "head_dim": null, "rms_norm_eps": 1e-6})"));
  EXPECT_EQ(c.name, "m");
  EXPECT_EQ(c.num_kv_heads, 6); // absent -> num_attention_heads
  EXPECT_EQ(c.head_dim, 8);     // null -> hidden / heads
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.init_std, 0.02);
}

TEST(HFConfig, TransformersV5RopeParametersAndEosList) {
  TempDir tmp;
  const LlamaConfig c = loadHFConfig(tmp.write("m.json", R"({
    "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
    "bos_token_id": 998, "eos_token_id": [999, 997]})"));
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.eos_token_id, 999);
  EXPECT_EQ(c.bos_token_id, 998);
}

// Meta's published Llama-3.2-1B config.json: llama3 RoPE scaling, tied
// embeddings, explicit head_dim; equal to the preset but for the name.
TEST(HFConfig, PublishedLlama32With_rope_scaling) {
  TempDir tmp;
  const LlamaConfig c = loadHFConfig(tmp.write("Llama-3.2-1B/config.json", R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
  "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256})"));
  LlamaConfig expected = preset("llama3.2-1b");
  expected.name = "Llama-3.2-1B";
  EXPECT_EQ(c, expected);
}

// Every rope type survives config.json: written by toHFConfigJson, read back
// equal (optional yarn fields only when given); the older "type" spelling
// and transformers 5's rope_parameters read the same.
TEST(HFConfig, RopeScalingRoundTrips) {
  TempDir tmp;
  LlamaConfig base = preset("micro");
  std::vector<RopeScaling> cases(5);
  cases[1].type = RopeType::Linear;
  cases[1].factor = 2.0;
  cases[2].type = RopeType::Dynamic;
  cases[2].factor = 4.0;
  cases[3].type = RopeType::Yarn;
  cases[3].factor = 4.0;
  cases[3].beta_fast = 16.0;
  cases[3].mscale = 0.707;
  cases[3].mscale_all_dim = 1.0;
  cases[3].original_max_position_embeddings = 16;
  cases[3].truncate = false;
  cases[4].type = RopeType::Llama3;
  cases[4].factor = 8.0;
  cases[4].low_freq_factor = 1.0;
  cases[4].high_freq_factor = 4.0;
  cases[4].original_max_position_embeddings = 32;
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(ropeTypeName(cases[i].type));
    LlamaConfig c = base;
    c.rope_scaling = cases[i];
    const std::string path = tmp.write("c" + std::to_string(i) + ".json", toHFConfigJson(c));
    EXPECT_EQ(loadHFConfig(path), c);
  }
  const LlamaConfig older = loadHFConfig(tmp.write("old.json", R"({"vocab_size": 64,
    "hidden_size": 16, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 4,
    "rms_norm_eps": 1e-5, "rope_scaling": {"type": "linear", "factor": 2.0}})"));
  EXPECT_EQ(older.rope_scaling, cases[1]);
  const LlamaConfig v5 = loadHFConfig(tmp.write("v5.json", R"({"vocab_size": 64,
    "hidden_size": 16, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 4,
    "rms_norm_eps": 1e-5, "rope_parameters": {"rope_type": "dynamic", "factor": 4.0, "rope_theta": 5e5}})"));
  EXPECT_EQ(v5.rope_scaling, cases[2]);
  EXPECT_EQ(v5.rope_theta, 5e5);
}

// Closed-form properties of the frequencies (the float64 Python
// transcription of the published formulas checks every value, through the
// IR: test/integration/torch_reference.sh).
TEST(RopeScaling, FrequenciesFollowTheirRules) {
  LlamaConfig c = preset("llama3.1-8b");
  LlamaConfig plain = c;
  plain.rope_scaling = RopeScaling{};
  const std::vector<double> base = ropeInverseFrequencies(plain, 2048);
  ASSERT_EQ(base.size(), 64u);
  for (size_t i = 0; i < base.size(); ++i)
    EXPECT_EQ(base[i], std::pow(500000.0, -double(2 * i) / 128.0));
  // llama3: wavelengths under 8192/4 keep their frequency, over 8192 are
  // divided by 8, between them interpolated (so strictly between).
  const std::vector<double> l3 = ropeInverseFrequencies(c, 2048);
  int kept = 0, divided = 0, smoothed = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    const double wave = 2 * M_PI / base[i];
    if (wave < 2048.0) {
      EXPECT_EQ(l3[i], base[i]);
      ++kept;
    } else if (wave > 8192.0) {
      EXPECT_DOUBLE_EQ(l3[i], base[i] / 8.0);
      ++divided;
    } else {
      EXPECT_LT(l3[i], base[i]);
      EXPECT_GT(l3[i], base[i] / 8.0);
      ++smoothed;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(smoothed, 0);
  EXPECT_EQ(ropeAttentionFactor(c), 1.0);
  // linear: every frequency over the factor.
  c.rope_scaling = RopeScaling{};
  c.rope_scaling.type = RopeType::Linear;
  c.rope_scaling.factor = 4.0;
  const std::vector<double> lin = ropeInverseFrequencies(c, 2048);
  for (size_t i = 0; i < base.size(); ++i)
    EXPECT_DOUBLE_EQ(lin[i], base[i] / 4.0);
  // dynamic NTK: plain up to max_position_embeddings (HF's rule at the
  // training length), a larger base past it.
  c.rope_scaling.type = RopeType::Dynamic;
  EXPECT_EQ(ropeInverseFrequencies(c, c.max_position_embeddings), base);
  const std::vector<double> ntk = ropeInverseFrequencies(c, 2 * c.max_position_embeddings);
  const double grown = 500000.0 * std::pow(4.0 * 2.0 - 3.0, 128.0 / 126.0);
  EXPECT_DOUBLE_EQ(ntk[1], std::pow(grown, -2.0 / 128.0));
  // yarn: the attention factor 0.1 ln(s) + 1, or the mscale ratio.
  c.rope_scaling.type = RopeType::Yarn;
  EXPECT_DOUBLE_EQ(ropeAttentionFactor(c), 0.1 * std::log(4.0) + 1.0);
  c.rope_scaling.mscale = 2.0;
  c.rope_scaling.mscale_all_dim = 1.0;
  EXPECT_DOUBLE_EQ(ropeAttentionFactor(c),
                   (0.2 * std::log(4.0) + 1.0) / (0.1 * std::log(4.0) + 1.0));
  c.rope_scaling.attention_factor = 0.5;
  EXPECT_EQ(ropeAttentionFactor(c), 0.5);
  // The highest frequency extrapolates (unchanged), the lowest interpolates.
  const std::vector<double> y = ropeInverseFrequencies(c, 2048);
  EXPECT_EQ(y.front(), base.front());
  EXPECT_DOUBLE_EQ(y.back(), base.back() / 4.0);
}

TEST(HFConfig, Errors) {
  TempDir tmp;
  const std::string missing = tmp.path("nope/config.json");
  expectError([&] { loadHFConfig(missing); }, {missing + ": cannot open"});

  const std::string bad = tmp.write("bad.json", "{\"hidden_size\": 4096,,}");
  expectError([&] { loadHFConfig(bad); }, {bad + ": not valid JSON ("});
  // Found by test/fuzz/config_fuzz: a number past the double range made
  // nlohmann throw out_of_range, which escaped as a non-runtime_error.
  const std::string huge = tmp.write("huge.json", "{\"hidden_size\": 1e400}");
  expectError([&] { loadHFConfig(huge); }, {huge + ": not valid JSON ("});

  const std::string array = tmp.write("array.json", "[1, 2]");
  expectError([&] { loadHFConfig(array); }, {array + ": expected a JSON object"});

  auto replaced = [&](const std::string &name, const std::string &from, const std::string &to) {
    std::string t = kTinyLlamaConfig;
    t.replace(t.find(from), from.size(), to);
    return tmp.write(name, t);
  };
  const std::string noHidden = replaced("nohidden.json", "\"hidden_size\": 2048,", "");
  expectError([&] { loadHFConfig(noHidden); }, {noHidden + ": missing field 'hidden_size'"});
  const std::string rope = replaced("rope.json", "\"rope_scaling\": null",
                                    R"("rope_scaling": {"type": "longrope", "factor": 2.0})");
  expectError([&] { loadHFConfig(rope); },
              {rope + ": rope_scaling.rope_type 'longrope' is not supported"});
  const std::string extra = replaced("extra.json", "\"rope_scaling\": null",
                                     R"("rope_scaling": {"type": "linear", "factor": 2.0, "beta_fast": 3})");
  expectError([&] { loadHFConfig(extra); },
              {extra + ": rope_scaling.beta_fast is not defined for rope_type 'linear'"});
  const std::string noOriginal = replaced(
      "noorig.json", "\"rope_scaling\": null",
      R"("rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0})");
  expectError([&] { loadHFConfig(noOriginal); },
              {noOriginal + ": missing field 'rope_scaling.original_max_position_embeddings'"});
  const std::string badBand = replaced(
      "band.json", "\"rope_scaling\": null",
      R"("rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0, "original_max_position_embeddings": 8192})");
  expectError([&] { loadHFConfig(badBand); },
              {badBand + ": rope_scaling (llama3): needs 0 < low_freq_factor < high_freq_factor"});
  const std::string noFactor = replaced("nofactor.json", "\"rope_scaling\": null",
                                        R"("rope_scaling": {"rope_type": "dynamic"})");
  expectError([&] { loadHFConfig(noFactor); }, {"missing field 'rope_scaling.factor'"});
  const std::string heads = replaced("heads.json", "\"num_attention_heads\": 32",
                                     "\"num_attention_heads\": 30");
  expectError([&] { loadHFConfig(heads); },
              {heads + ": num_attention_heads (30) must divide hidden_size (2048)"});
  const std::string kv = replaced("kv.json", "\"num_key_value_heads\": 4",
                                  "\"num_key_value_heads\": 5");
  expectError([&] { loadHFConfig(kv); },
              {kv + ": num_key_value_heads (5) must divide num_attention_heads (32)"});
  const std::string type = replaced("type.json", "\"hidden_size\": 2048", "\"hidden_size\": \"2048\"");
  expectError([&] { loadHFConfig(type); }, {type + ": field 'hidden_size' must be an integer"});
  const std::string frac = replaced("frac.json", "\"hidden_size\": 2048", "\"hidden_size\": 2048.5");
  expectError([&] { loadHFConfig(frac); }, {"must be an integer"});
  const std::string mistral = replaced("mistral.json", "\"model_type\": \"llama\"",
                                       "\"model_type\": \"mistral\"");
  expectError([&] { loadHFConfig(mistral); }, {mistral + ": model_type 'mistral'"});
  const std::string gelu = replaced("gelu.json", "\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"");
  expectError([&] { loadHFConfig(gelu); }, {"hidden_act 'gelu'"});
  const std::string bias = replaced("bias.json", "\"attention_bias\": false", "\"attention_bias\": true");
  expectError([&] { loadHFConfig(bias); }, {"attention_bias"});
  const std::string yarn = replaced("yarn.json", "\"rope_scaling\": null",
                                    R"("rope_parameters": {"rope_type": "yarn", "factor": -4.0})");
  expectError([&] { loadHFConfig(yarn); }, {"rope_scaling (yarn): factor must be finite and > 0"});
  const std::string eps = replaced("eps.json", "\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": 0");
  expectError([&] { loadHFConfig(eps); }, {eps + ": rms_norm_eps"});
  // Float that is an exact integer is accepted (some tools write 2048.0).
  const std::string f = replaced("float.json", "\"hidden_size\": 2048", "\"hidden_size\": 2048.0");
  EXPECT_EQ(loadHFConfig(f).hidden_size, 2048);
}

// ---- Meta params.json ----------------------------------------------------------

TEST(MetaParams, Llama7BFfn11008) {
  TempDir tmp;
  // As shipped with the original LLaMA 7B (vocab -1: from the tokenizer).
  const std::string path = tmp.write(
      "7B/params.json",
      R"({"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-06, "vocab_size": -1})");
  MetaParamsOptions opts;
  opts.vocabSize = 32000;
  const LlamaConfig c = loadMetaParams(path, opts);
  LlamaConfig expected = preset("llama-7b");
  expected.name = "7B";
  EXPECT_EQ(c, expected);
  EXPECT_EQ(c.intermediate_size, 11008);
  EXPECT_EQ(paramCount(c), 6738415616);
  EXPECT_EQ(loadConfigFile(path, opts), expected);
}

TEST(MetaParams, Llama2_70BGqaMultiplier) {
  TempDir tmp;
  const std::string path = tmp.write(
      "70B/params.json",
      R"({"dim": 8192, "multiple_of": 4096, "ffn_dim_multiplier": 1.3, "n_heads": 64, "n_kv_heads": 8, "n_layers": 80, "norm_eps": 1e-05, "vocab_size": -1})");
  MetaParamsOptions opts;
  opts.vocabSize = 32000;
  opts.maxPositionEmbeddings = 4096;
  const LlamaConfig c = loadMetaParams(path, opts);
  // Meta's rule by hand: int(2*32768/3) = 21845; int(1.3*21845) = 28398; -> 7*4096.
  EXPECT_EQ(c.intermediate_size, 28672);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(paramCount(c), closedFormParams(32000, 8192, 28672, 80, 64, 8, 128, false));
  EXPECT_EQ(paramCount(c), 68976648192); // Llama-2-70b-hf's published count
}

TEST(MetaParams, Llama3StyleThetaAndVocab) {
  TempDir tmp;
  const std::string path = tmp.write(
      "params.json",
      R"({"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256, "multiple_of": 1024, "ffn_dim_multiplier": 1.3, "norm_eps": 1e-05, "rope_theta": 500000.0})");
  const LlamaConfig c = loadMetaParams(path);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.intermediate_size, 14336); // Llama 3 8B
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.max_position_embeddings, 2048);
}

TEST(MetaParams, Errors) {
  TempDir tmp;
  const std::string noVocab = tmp.write(
      "a.json", R"({"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-06, "vocab_size": -1})");
  expectError([&] { loadMetaParams(noVocab); }, {noVocab + ": vocab_size is -1", "--vocab-size"});
  expectError([&] { loadConfigFile(noVocab); }, {"--vocab-size"});

  const std::string fixed = tmp.write(
      "b.json", R"({"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-06, "vocab_size": 32000})");
  MetaParamsOptions conflict;
  conflict.vocabSize = 32001;
  expectError([&] { loadMetaParams(fixed, conflict); }, {"conflicts with --vocab-size 32001"});

  const std::string heads = tmp.write(
      "c.json", R"({"dim": 4096, "multiple_of": 256, "n_heads": 30, "n_layers": 32, "norm_eps": 1e-06, "vocab_size": 32000})");
  expectError([&] { loadMetaParams(heads); }, {heads + ": n_heads (30) must divide dim (4096)"});

  const std::string kv = tmp.write(
      "d.json", R"({"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_kv_heads": 5, "n_layers": 32, "norm_eps": 1e-06, "vocab_size": 32000})");
  expectError([&] { loadMetaParams(kv); }, {kv + ": num_key_value_heads (5) must divide"});

  const std::string noEps = tmp.write(
      "e.json", R"({"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "vocab_size": 32000})");
  expectError([&] { loadMetaParams(noEps); }, {noEps + ": missing field 'norm_eps'"});

  const std::string unscaled = tmp.write(
      "f.json", R"({"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-06, "vocab_size": 32000, "rope_scaling_factor": 32})");
  expectError([&] { loadMetaParams(unscaled); },
              {unscaled + ": rope_scaling_factor / high_freq_factor are given but use_scaled_rope is not true"});

  const std::string neither = tmp.write("g.json", R"({"n_layers": 2})");
  expectError([&] { loadConfigFile(neither); }, {neither + ": neither an HF config.json"});
}

TEST(Describe, OneLine) {
  const std::string s = describe(preset("llama-7b"));
  EXPECT_EQ(s, "llama-7b: 32 layers, hidden 4096, ffn 11008, 32 heads (32 kv, head_dim 128), "
               "vocab 32000, max pos 2048, 6.74B params");
  EXPECT_NE(describe(preset("tiny")).find("15.14M params"), std::string::npos);
}
