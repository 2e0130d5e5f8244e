// Meta checkpoint folders (runtime/checkpoint/{torch_pickle,torch_zip,
// meta_folder}, runtime/interop/hf_weights' load_meta_folder_weights) against
// files written by real PyTorch (meta_folder_fixtures.py: torch.save over 2
// and 4 model-parallel files, f32/bf16/f16, views, zip64, big-endian) and
// the HF layout of the same files computed the way transformers'
// convert_llama_weights_to_hf.py computes it: loading the Meta folder must
// give bit for bit the parameters that loading the HF folder gives. The
// unpickler is also driven directly with hand-assembled pickles, and every
// broken input must be a one-line error naming the file.
#include "runtime/checkpoint/half.h"
#include "runtime/checkpoint/meta_folder.h"
#include "runtime/checkpoint/torch_pickle.h"
#include "runtime/checkpoint/torch_zip.h"
#include "runtime/train/checkpoint_dir.h"
#include "runtime/interop/hf_weights.h"
#include "test/unit/train_fixture.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using llamart::ParamInfo;
using llamart::ProgramInfo;
using nlohmann::json;
using namespace llamart;
using namespace llamart::interop;
using namespace llamart::train;
namespace ckpt = llamart::ckpt;

namespace {

// --- fixtures ------------------------------------------------------------------

// The PyTorch-written inputs: under $LLAMA_META_FIXTURES when ctest's setup
// test made them, else written once per process into a temp dir.
class Fixtures {
public:
  static const std::string &dir() {
    static Fixtures f;
    return f.dir_;
  }
  ~Fixtures() {
    if (owned_)
      fs::remove_all(dir_);
  }

private:
  Fixtures() {
    if (const char *env = std::getenv("LLAMA_META_FIXTURES"); env && *env) {
      dir_ = env;
    } else {
      dir_ = (fs::temp_directory_path() / ("llamart_meta_fixtures_" + std::to_string(getpid())))
                 .string();
      owned_ = true;
      const std::string cmd = std::string(LLAMA_TEST_PYTHON) + " " + LLAMA_META_FIXTURE_SCRIPT +
                              " " + dir_ + " > " + dir_ + ".log 2>&1";
      if (std::system(cmd.c_str()) != 0)
        ADD_FAILURE() << "fixture script failed: " << cmd;
      fs::remove(dir_ + ".log");
    }
    if (!fs::exists(fs::path(dir_) / "done"))
      ADD_FAILURE() << dir_ << " holds no complete fixtures";
  }
  std::string dir_;
  bool owned_ = false;
};

std::string fixture(const std::string &name) { return (fs::path(Fixtures::dir()) / name).string(); }

struct TempDir : llamart::testing::TempDir {
  TempDir() : llamart::testing::TempDir("llamart_meta_test") {}
};

// Runs f and returns the message it throws ("" when it does not throw).
std::string error_of(const std::function<void()> &f) {
  try {
    f();
  } catch (const std::exception &e) {
    return e.what();
  }
  return "";
}

// A one-line error that contains `fragment`.
#define EXPECT_ERROR(statement, fragment)                                           \
  do {                                                                              \
    const std::string msg_ = error_of([&] { statement; });                          \
    EXPECT_NE(msg_.find(fragment), std::string::npos)                               \
        << "message: '" << msg_ << "', expected to contain '" << (fragment) << "'"; \
    EXPECT_EQ(msg_.find('\n'), std::string::npos) << "not one line: " << msg_;     \
  } while (0)

// --- a LLaMA parameter table, as llama-compile lays it out ----------------------

struct LlamaShape {
  int64_t vocab, dim, layers, heads, kv_heads, ffn;
  double eps = 1e-5, theta = 10000.0;
};

// The parameters and HF config.json of a LLaMA of that shape; no step
// functions: loading weights needs only the table.
class LlamaProgram {
public:
  explicit LlamaProgram(const LlamaShape &s, std::string config = "") {
    const int64_t hd = s.dim / s.heads;
    auto add = [&](const std::string &name, std::vector<int64_t> shape) {
      names_.push_back(std::make_unique<std::string>(name));
      ParamInfo p{};
      p.name = names_.back()->c_str();
      p.rank = static_cast<int32_t>(shape.size());
      p.numel = 1;
      for (size_t d = 0; d < shape.size(); ++d) {
        p.shape[d] = p.full_shape[d] = shape[d];
        p.numel *= shape[d];
      }
      p.offset = numel_;
      p.shard_dim = -1;
      numel_ += p.numel;
      params_.push_back(p);
    };
    add("model.embed_tokens.weight", {s.vocab, s.dim});
    for (int64_t l = 0; l < s.layers; ++l) {
      const std::string pre = "model.layers." + std::to_string(l) + ".";
      add(pre + "self_attn.q_proj.weight", {s.heads * hd, s.dim});
      add(pre + "self_attn.k_proj.weight", {s.kv_heads * hd, s.dim});
      add(pre + "self_attn.v_proj.weight", {s.kv_heads * hd, s.dim});
      add(pre + "self_attn.o_proj.weight", {s.dim, s.heads * hd});
      add(pre + "mlp.gate_proj.weight", {s.ffn, s.dim});
      add(pre + "mlp.up_proj.weight", {s.ffn, s.dim});
      add(pre + "mlp.down_proj.weight", {s.dim, s.ffn});
      add(pre + "input_layernorm.weight", {s.dim});
      add(pre + "post_attention_layernorm.weight", {s.dim});
    }
    add("model.norm.weight", {s.dim});
    add("lm_head.weight", {s.vocab, s.dim});
    config_ = config.empty() ? json{{"model_type", "llama"},
                                    {"hidden_act", "silu"},
                                    {"vocab_size", s.vocab},
                                    {"hidden_size", s.dim},
                                    {"intermediate_size", s.ffn},
                                    {"num_hidden_layers", s.layers},
                                    {"num_attention_heads", s.heads},
                                    {"num_key_value_heads", s.kv_heads},
                                    {"head_dim", hd},
                                    {"rms_norm_eps", s.eps},
                                    {"rope_theta", s.theta},
                                    {"tie_word_embeddings", false}}
                                   .dump()
                             : config;
    info_ = ProgramInfo{};
    info_.abi_version = llamart::kProgramAbiVersion;
    info_.model_name = "metatest";
    info_.config_json = config_.c_str();
    info_.dtype = llamart::DType::F32;
    info_.vocab_size = s.vocab;
    info_.num_params = static_cast<int32_t>(params_.size());
    info_.params = params_.data();
    info_.param_numel = numel_;
    info_.full_param_numel = numel_;
    info_.grid_dp = info_.grid_tp = 1;
  }
  const ProgramInfo &operator*() const { return info_; }
  int64_t numel() const { return numel_; }

private:
  std::vector<std::unique_ptr<std::string>> names_;
  std::vector<ParamInfo> params_;
  std::string config_;
  int64_t numel_ = 0;
  ProgramInfo info_;
};

// The shapes meta_folder_fixtures.py writes.
const LlamaShape kGqa{24, 16, 2, 4, 2, 48};
const LlamaShape kMha{20, 32, 1, 4, 4, 96, 1e-6};
const LlamaShape kLlama3{40, 32, 2, 8, 4, 112, 1e-5, 500000.0};

template <typename T>
std::vector<T> load(const LlamaProgram &program, const std::string &path) {
  std::vector<T> params(static_cast<size_t>(program.numel()), T(-7));
  load_model_weights<T>(*program, path, params.data(), {});
  return params;
}

void copy_dir(const std::string &from, const std::string &to) {
  fs::copy(from, to, fs::copy_options::recursive);
}

void write_text(const std::string &path, const std::string &text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

std::string read_text(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// --- Meta folder == HF folder of the same weights --------------------------------

struct Case {
  const char *meta;
  const char *hf;
  LlamaShape shape;
};

void PrintTo(const Case &c, std::ostream *os) { *os << c.meta << " vs " << c.hf; }

class MetaEqualsHf : public ::testing::TestWithParam<Case> {};

TEST_P(MetaEqualsHf, BitIdenticalParameters) {
  const Case &c = GetParam();
  const LlamaProgram program(c.shape);
  const std::vector<float> from_hf = load<float>(program, fixture(c.hf));
  const std::vector<float> from_meta = load<float>(program, fixture(c.meta));
  ASSERT_EQ(from_hf.size(), from_meta.size());
  size_t differ = 0;
  for (size_t i = 0; i < from_hf.size(); ++i)
    differ += std::memcmp(&from_hf[i], &from_meta[i], sizeof(float)) != 0;
  EXPECT_EQ(differ, 0u) << "of " << from_hf.size() << " parameters";
  // Every parameter was written (the fill value -7 never survives).
  for (float v : from_meta)
    ASSERT_NE(v, -7.0f);
  // The same through a double program: widening is exact either way.
  const std::vector<double> hf64 = load<double>(program, fixture(c.hf));
  const std::vector<double> meta64 = load<double>(program, fixture(c.meta));
  EXPECT_TRUE(hf64 == meta64);
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, MetaEqualsHf,
    ::testing::Values(Case{"f32_mp2", "f32_mp2_hf", kGqa}, Case{"bf16_mp2", "bf16_mp2_hf", kGqa},
                      Case{"f16_mp2", "f16_mp2_hf", kGqa}, Case{"f32_mp1", "f32_mp1_hf", kMha},
                      Case{"llama3_mp4", "llama3_mp4_hf", kLlama3},
                      Case{"views", "f32_mp1_hf", kMha}, Case{"zip64", "f32_mp2_hf", kGqa},
                      Case{"bigendian", "bf16_mp2_hf", kGqa},
                      Case{"zipcomment", "f32_mp2_hf", kGqa}),
    [](const ::testing::TestParamInfo<Case> &info) { return std::string(info.param.meta); });

// The half-precision folders hold half-precision data (so the comparison
// above is one of exact widening, not of two float32 copies), and every value
// widens to the float32 torch computed.
TEST(MetaFolder, HalfPrecisionWidensExactly) {
  for (const auto &[meta, dtype] :
       {std::pair{"bf16_mp2", ckpt::StDType::BF16}, std::pair{"f16_mp2", ckpt::StDType::F16}}) {
    const ckpt::MetaFolder folder(fixture(meta));
    const ckpt::File hf = ckpt::read_safetensors(fixture(std::string(meta) + "_hf") +
                                                 "/model.safetensors");
    ASSERT_EQ(folder.tensors().size(), hf.tensors.size()) << meta;
    size_t values = 0;
    for (size_t i = 0; i < folder.tensors().size(); ++i) {
      const ckpt::Tensor t = folder.read(i);
      const ckpt::Tensor &ref = hf.tensors.at(folder.tensors()[i].hf_name);
      ASSERT_EQ(t.dtype, dtype) << meta << " " << folder.tensors()[i].meta_name;
      ASSERT_EQ(t.shape, ref.shape);
      for (int64_t e = 0; e < t.numel(); ++e, ++values) {
        uint16_t h;
        std::memcpy(&h, t.data.data() + 2 * e, 2);
        float want;
        std::memcpy(&want, ref.data.data() + 4 * e, 4);
        const float got =
            dtype == ckpt::StDType::BF16 ? ckpt::bf16_to_float(h) : ckpt::f16_to_float(h);
        ASSERT_EQ(got, want) << meta << " " << folder.tensors()[i].meta_name << "[" << e << "]";
      }
    }
    EXPECT_GT(values, 1000u);
  }
}

// What the folder reports: HF names, the layouts it recognized, rope.freqs
// dropped, merged shapes.
TEST(MetaFolder, TensorTable) {
  const ckpt::MetaFolder two(fixture("f32_mp2"));
  EXPECT_EQ(two.num_shards(), 2u);
  EXPECT_EQ(two.tensors().size(), 1u + 2 * 9 + 2); // rope.freqs left out
  std::map<std::string, const ckpt::MetaTensor *> by_meta;
  for (const ckpt::MetaTensor &t : two.tensors())
    by_meta[t.meta_name] = &t;
  EXPECT_EQ(by_meta.count("rope.freqs"), 0u);
  const ckpt::MetaTensor &embed = *by_meta.at("tok_embeddings.weight");
  EXPECT_EQ(embed.hf_name, "model.embed_tokens.weight");
  EXPECT_EQ(embed.split_dim, 1); // ParallelEmbedding
  EXPECT_EQ(embed.shape, (std::vector<int64_t>{24, 16}));
  const ckpt::MetaTensor &wk = *by_meta.at("layers.1.attention.wk.weight");
  EXPECT_EQ(wk.hf_name, "model.layers.1.self_attn.k_proj.weight");
  EXPECT_EQ(wk.split_dim, 0);
  EXPECT_EQ(wk.rope_heads, 2); // n_kv_heads
  EXPECT_EQ(wk.shape, (std::vector<int64_t>{8, 16}));
  EXPECT_EQ(by_meta.at("layers.0.attention.wq.weight")->rope_heads, 4);
  EXPECT_EQ(by_meta.at("layers.0.attention.wv.weight")->rope_heads, 0);
  EXPECT_EQ(by_meta.at("layers.0.feed_forward.w2.weight")->split_dim, 1);
  EXPECT_EQ(by_meta.at("layers.0.feed_forward.w2.weight")->shape,
            (std::vector<int64_t>{16, 48}));
  EXPECT_EQ(by_meta.at("layers.0.ffn_norm.weight")->split_dim, -1);
  EXPECT_EQ(by_meta.at("output.weight")->hf_name, "lm_head.weight");

  const ckpt::MetaFolder four(fixture("llama3_mp4"));
  EXPECT_EQ(four.num_shards(), 4u);
  for (const ckpt::MetaTensor &t : four.tensors())
    if (t.meta_name == "tok_embeddings.weight")
      EXPECT_EQ(t.split_dim, 0); // VocabParallelEmbedding
  EXPECT_DOUBLE_EQ(four.params().rope_theta, 500000.0);
  EXPECT_EQ(four.params().ffn_hidden_size(), 112);

  const ckpt::File all = two.read_all();
  EXPECT_EQ(all.tensors.size(), two.tensors().size());
  EXPECT_TRUE(all.tensors.count("model.layers.0.post_attention_layernorm.weight"));
}

// The permutation, worked out by hand for head_dim 4 (Meta row h*4 + 2i + j
// -> HF row h*4 + 2j + i: rows 0 1 2 3 -> 0 2 1 3), against the reference
// HF file (so the reference is what transformers' permute gives) and against
// MetaFolder's q_proj, over both model-parallel files.
TEST(MetaFolder, RopePermutationOfRowIndices) {
  const ckpt::MetaFolder folder(fixture("f32_mp2"));
  const ckpt::File hf = ckpt::read_safetensors(fixture("f32_mp2_hf") + "/model.safetensors");
  const ckpt::TorchFile f0(folder.shard_path(0)), f1(folder.shard_path(1));
  const ckpt::Tensor q0 = f0.read(*f0.find("layers.0.attention.wq.weight"));
  const ckpt::Tensor q1 = f1.read(*f1.find("layers.0.attention.wq.weight"));
  const ckpt::Tensor &q = hf.tensors.at("model.layers.0.self_attn.q_proj.weight");
  ckpt::Tensor ours;
  for (size_t i = 0; i < folder.tensors().size(); ++i)
    if (folder.tensors()[i].meta_name == "layers.0.attention.wq.weight")
      ours = folder.read(i);
  ASSERT_EQ(ours.data.size(), q.data.size());
  const size_t row = 16 * 4; // 16 f32 columns
  auto meta_row = [&](int64_t m) { // rows 0-7 in file 0, 8-15 in file 1
    const ckpt::Tensor &src = m < 8 ? q0 : q1;
    return src.data.data() + static_cast<size_t>(m % 8) * row;
  };
  const int64_t meta_row_of_hf[16] = {0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15};
  for (int64_t r = 0; r < 16; ++r) {
    const uint8_t *want = meta_row(meta_row_of_hf[r]);
    EXPECT_EQ(std::memcmp(q.data.data() + static_cast<size_t>(r) * row, want, row), 0)
        << "reference HF row " << r;
    EXPECT_EQ(std::memcmp(ours.data.data() + static_cast<size_t>(r) * row, want, row), 0)
        << "MetaFolder row " << r;
  }
}

// --- names and params.json --------------------------------------------------------

TEST(MetaNames, MapBothWays) {
  const std::pair<const char *, const char *> pairs[] = {
      {"tok_embeddings.weight", "model.embed_tokens.weight"},
      {"norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
      {"layers.0.attention.wq.weight", "model.layers.0.self_attn.q_proj.weight"},
      {"layers.7.attention.wk.weight", "model.layers.7.self_attn.k_proj.weight"},
      {"layers.10.attention.wv.weight", "model.layers.10.self_attn.v_proj.weight"},
      {"layers.79.attention.wo.weight", "model.layers.79.self_attn.o_proj.weight"},
      {"layers.1.feed_forward.w1.weight", "model.layers.1.mlp.gate_proj.weight"},
      {"layers.1.feed_forward.w2.weight", "model.layers.1.mlp.down_proj.weight"},
      {"layers.1.feed_forward.w3.weight", "model.layers.1.mlp.up_proj.weight"},
      {"layers.2.attention_norm.weight", "model.layers.2.input_layernorm.weight"},
      {"layers.2.ffn_norm.weight", "model.layers.2.post_attention_layernorm.weight"},
  };
  for (const auto &[meta, hf] : pairs) {
    EXPECT_EQ(ckpt::meta_to_hf_name(meta), hf);
    EXPECT_EQ(ckpt::hf_to_meta_name(hf), meta);
  }
  for (const char *odd : {"rope.freqs", "layers.01.attention.wq.weight", "layers..ffn_norm.weight",
                          "layers.x.ffn_norm.weight", "layers.1.attention.wq.bias", "layers.1",
                          "model.layers.0.self_attn.q_proj.weight", ""})
    EXPECT_EQ(ckpt::meta_to_hf_name(odd), "") << odd;
  EXPECT_EQ(ckpt::hf_to_meta_name("model.layers.0.self_attn.rotary_emb.inv_freq"), "");
}

// Meta's FFN rule against the published sizes of real models.
TEST(MetaParams, FfnHiddenSizeOfPublishedModels) {
  auto ffn = [](int64_t dim, int64_t multiple_of, std::optional<double> mult) {
    ckpt::MetaParams p;
    p.dim = dim;
    p.multiple_of = multiple_of;
    p.ffn_dim_multiplier = mult;
    return *p.ffn_hidden_size();
  };
  EXPECT_EQ(ffn(4096, 256, std::nullopt), 11008); // LLaMA 7B, Llama 2 7B
  EXPECT_EQ(ffn(5120, 256, std::nullopt), 13824); // 13B
  EXPECT_EQ(ffn(6656, 256, std::nullopt), 17920); // LLaMA 33B
  EXPECT_EQ(ffn(8192, 4096, 1.3), 28672);         // Llama 2 70B
  EXPECT_EQ(ffn(4096, 1024, 1.3), 14336);         // Llama 3 8B
  ckpt::MetaParams none;
  EXPECT_FALSE(none.ffn_hidden_size());
}

TEST(MetaParams, ReadAndReject) {
  TempDir tmp;
  const std::string path = tmp / "params.json";
  write_text(path, R"({"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32,
                       "norm_eps": 1e-05, "vocab_size": -1})");
  const ckpt::MetaParams p = ckpt::read_meta_params(path);
  EXPECT_EQ(p.dim, 4096);
  EXPECT_EQ(p.n_kv_heads, 32);
  EXPECT_EQ(p.vocab_size, -1);
  EXPECT_EQ(p.head_dim(), 128);
  EXPECT_DOUBLE_EQ(p.rope_theta, 10000.0);
  EXPECT_FALSE(p.use_scaled_rope);

  const std::pair<const char *, const char *> bad[] = {
      {R"({"n_heads": 2, "n_layers": 1, "norm_eps": 1e-5, "vocab_size": 8})", "missing field 'dim'"},
      {R"({"dim": 16, "n_heads": 3, "n_layers": 1, "norm_eps": 1e-5, "vocab_size": 8})",
       "n_heads (3) must divide dim (16)"},
      {R"({"dim": 12, "n_heads": 4, "n_layers": 1, "norm_eps": 1e-5, "vocab_size": 8})",
       "head_dim dim / n_heads = 3 is odd (RoPE rotates pairs)"},
      {R"({"dim": 16, "n_heads": 4, "n_kv_heads": 3, "n_layers": 1, "norm_eps": 1e-5,
           "vocab_size": 8})",
       "n_kv_heads (3) must divide n_heads (4)"},
      {R"({"dim": "16", "n_heads": 4, "n_layers": 1, "norm_eps": 1e-5, "vocab_size": 8})",
       "field 'dim' must be an integer"},
      {R"({"dim": 16, "n_heads": 4, "n_layers": 0, "norm_eps": 1e-5, "vocab_size": 8})",
       "field 'n_layers' must be > 0"},
      {R"({"dim": 16, "n_heads": 4, "n_layers": 1, "vocab_size": 8})", "missing field 'norm_eps'"},
      {R"({"dim": 16, "n_heads": 4, "n_layers": 1, "norm_eps": -1, "vocab_size": 8})",
       "field 'norm_eps' must be a number > 0"},
      {R"({"dim": 16, "n_heads": 4, "n_layers": 1, "norm_eps": 1e-5, "vocab_size": 8,
           "use_scaled_rope": 1})",
       "field 'use_scaled_rope' must be true or false"},
      {R"({"dim": 16, "n_heads": 4, "n_layers": 1, "norm_eps": 1e-5, "vocab_size": 8,
           "multiple_of": 0})",
       "field 'multiple_of' must be in 1..2^31"},
      {R"([1, 2])", "expected a JSON object"},
      {R"({"dim": 16,)", "not valid JSON"},
  };
  for (const auto &[text, fragment] : bad) {
    write_text(path, text);
    EXPECT_ERROR(ckpt::read_meta_params(path), path + ": " + fragment);
  }
}

// params.json against the program: each field named on both sides.
TEST(MetaParams, CompatibilityWithTheProgram) {
  const std::string params = fixture("f32_mp2") + "/params.json";
  const ckpt::MetaParams p = ckpt::read_meta_params(params);
  const LlamaProgram program(kGqa);
  const json good = json::parse((*program).config_json);
  EXPECT_NO_THROW(ckpt::check_meta_params_compatible(p, params, good, "m"));
  EXPECT_NO_THROW(ckpt::check_meta_params_compatible(p, params, json::object(), "m"));

  struct Edit {
    const char *key;
    json value;
    const char *fragment;
  };
  const Edit edits[] = {
      {"hidden_size", 32, "dim is 16, but model m was compiled with hidden_size 32"},
      {"num_hidden_layers", 3, "n_layers is 2, but model m was compiled with num_hidden_layers 3"},
      {"num_attention_heads", 8, "n_heads is 4, but model m was compiled with num_attention_heads 8"},
      {"num_key_value_heads", 4,
       "n_kv_heads is 2, but model m was compiled with num_key_value_heads 4"},
      {"head_dim", 8, "dim / n_heads is 4, but model m was compiled with head_dim 8"},
      {"vocab_size", 32, "vocab_size is 24, but model m was compiled with vocab_size 32"},
      {"intermediate_size", 40, "the FFN size from dim, multiple_of and ffn_dim_multiplier is 48"},
      {"rms_norm_eps", 1e-6, "norm_eps is 1e-05, but model m was compiled with rms_norm_eps 1e-06"},
      {"rope_theta", 500000.0, "rope_theta is 10000.0, but model m was compiled with rope_theta"},
      {"rope_scaling", json{{"rope_type", "llama3"}, {"factor", 8.0}},
       "use_scaled_rope is false, but model m was compiled with rope_scaling"},
      {"tie_word_embeddings", true,
       "a Meta LLaMA checkpoint has tie_word_embeddings false, but model m was compiled with true"},
      {"hidden_act", "gelu", "a Meta LLaMA checkpoint has hidden_act \"silu\", but model m was compiled with \"gelu\""},
  };
  for (const Edit &e : edits) {
    json program = good;
    program[e.key] = e.value;
    EXPECT_ERROR(ckpt::check_meta_params_compatible(p, params, program, "m"),
                 params + ": " + e.fragment);
  }
  // n_kv_heads against HF's default when the program states no KV heads.
  json mha = good;
  mha.erase("num_key_value_heads");
  EXPECT_ERROR(ckpt::check_meta_params_compatible(p, params, mha, "m"),
               "n_kv_heads is 2, but model m was compiled with num_attention_heads 4");
  // vocab_size -1 (the tokenizer's) is left to the tensor shapes.
  ckpt::MetaParams no_vocab = p;
  no_vocab.vocab_size = -1;
  json other_vocab = good;
  other_vocab["vocab_size"] = 99;
  EXPECT_NO_THROW(ckpt::check_meta_params_compatible(no_vocab, params, other_vocab, "m"));
  // use_scaled_rope (Llama 3.1+) is llama3 RoPE scaling, in either spelling
  // of its type; another type is a mismatch.
  ckpt::MetaParams scaled = p;
  scaled.use_scaled_rope = true;
  json llama3 = good;
  llama3["rope_scaling"] = json{{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_NO_THROW(ckpt::check_meta_params_compatible(scaled, params, llama3, "m"));
  llama3["rope_scaling"] = json{{"type", "llama3"}, {"factor", 8.0}};
  EXPECT_NO_THROW(ckpt::check_meta_params_compatible(scaled, params, llama3, "m"));
  json yarn = good;
  yarn["rope_scaling"] = json{{"rope_type", "yarn"}, {"factor", 8.0}};
  EXPECT_ERROR(ckpt::check_meta_params_compatible(scaled, params, yarn, "m"),
               params + ": use_scaled_rope is true, but model m was compiled with rope_scaling");
  EXPECT_ERROR(ckpt::check_meta_params_compatible(scaled, params, good, "m"),
               params + ": use_scaled_rope is true, but model m was compiled with rope_scaling null");
}

// --- load_model_weights on broken folders ------------------------------------------

TEST(MetaFolderErrors, BrokenArchives) {
  const LlamaProgram program(kGqa);
  std::vector<float> dest(static_cast<size_t>(program.numel()));
  auto load_dir = [&](const std::string &dir) {
    load_model_weights<float>(*program, dir, dest.data(), {});
  };
  EXPECT_ERROR(load_dir(fixture("err_deflate")),
               "err_deflate/consolidated.01.pth: record consolidated.01/");
  EXPECT_ERROR(load_dir(fixture("err_deflate")), "is compressed (method 8)");
  EXPECT_ERROR(load_dir(fixture("err_long")),
               "err_long/consolidated.00.pth: data.pkl byte ");
  EXPECT_ERROR(load_dir(fixture("err_long")), "unsupported global torch.LongStorage");
  EXPECT_ERROR(load_dir(fixture("err_norm")),
               "err_norm/consolidated.01.pth: tensor layers.1.ffn_norm.weight differs from");
  EXPECT_ERROR(load_dir(fixture("err_legacy")),
               "err_legacy/consolidated.00.pth: not a zip archive");
  EXPECT_ERROR(load_dir(fixture("err_extra")),
               "err_extra/consolidated.01.pth: tensor layers.0.attention.bias is not in");
  EXPECT_ERROR(load_dir(fixture("err_crc")),
               "err_crc/consolidated.01.pth: record consolidated.01/data/3 fails its CRC-32 check");

  TempDir tmp;
  // A model-parallel file missing from the sequence.
  copy_dir(fixture("f32_mp2"), tmp / "gap");
  fs::rename(tmp / "gap/consolidated.01.pth", tmp / "gap/consolidated.02.pth");
  EXPECT_ERROR(load_dir(tmp / "gap"), "gap/consolidated.01.pth: missing");
  // Truncated at every eighth of its length: always an error naming it.
  const std::string bytes = read_text(fixture("f32_mp2") + "/consolidated.01.pth");
  for (size_t cut = 0; cut < 8; ++cut) {
    const std::string dir = tmp / ("cut" + std::to_string(cut));
    copy_dir(fixture("f32_mp2"), dir);
    write_text(dir + "/consolidated.01.pth", bytes.substr(0, bytes.size() * cut / 8));
    EXPECT_ERROR(load_dir(dir), dir + "/consolidated.01.pth: ");
  }
  // Broken params.json.
  copy_dir(fixture("f32_mp2"), tmp / "badjson");
  write_text(tmp / "badjson/params.json", "{\"dim\": 16");
  EXPECT_ERROR(load_dir(tmp / "badjson"), "badjson/params.json: not valid JSON");
  // params.json against the program.
  copy_dir(fixture("f32_mp2"), tmp / "heads");
  json params = json::parse(read_text(tmp / "heads/params.json"));
  params["n_heads"] = 8;
  params["n_kv_heads"] = 4;
  params["dim"] = 32;
  write_text(tmp / "heads/params.json", params.dump());
  EXPECT_ERROR(load_dir(tmp / "heads"),
               "heads/params.json: dim is 32, but model metatest was compiled with hidden_size 16");
}

// params.json that disagrees with the tensors: the rows of wk do not make
// n_kv_heads heads.
TEST(MetaFolderErrors, ParamsDisagreeWithTensors) {
  TempDir tmp;
  copy_dir(fixture("f32_mp2"), tmp / "kv");
  json params = json::parse(read_text(tmp / "kv/params.json"));
  params["n_kv_heads"] = 4;
  write_text(tmp / "kv/params.json", params.dump());
  EXPECT_ERROR(ckpt::MetaFolder(tmp / "kv"),
               "kv/consolidated.00.pth: tensor layers.0.attention.wk.weight has 8 rows over 2 "
               "file(s), but " + tmp / "kv/params.json" + " says n_kv_heads 4 x head_dim 4");
  copy_dir(fixture("f32_mp2"), tmp / "dim");
  params = json::parse(read_text(tmp / "dim/params.json"));
  params["dim"] = 64;
  params["n_heads"] = 16;
  params["n_kv_heads"] = 8;
  write_text(tmp / "dim/params.json", params.dump());
  EXPECT_ERROR(ckpt::MetaFolder(tmp / "dim"),
               "dim/consolidated.00.pth: tensor tok_embeddings.weight has shape [24, 8], neither "
               "dim 64 nor dim / 2 model-parallel files wide");
}

// Missing and mis-shaped tensors, through a hand-written program (config {})
// so that the config check lets them through: named by Meta and HF name.
TEST(MetaFolderErrors, ProgramTensorMismatch) {
  LlamaShape three = kGqa;
  three.layers = 3;
  const LlamaProgram more(three, "{}");
  std::vector<float> dest(static_cast<size_t>(more.numel()));
  const std::string dir = fixture("f32_mp2");
  EXPECT_ERROR(load_model_weights<float>(*more, dir, dest.data(), {}),
               dir + "/consolidated.00.pth: missing tensor layers.2.attention.wq.weight "
                     "(model.layers.2.self_attn.q_proj.weight) (model metatest expects it)");
  LlamaShape wide = kGqa;
  wide.ffn = 40;
  const LlamaProgram narrow(wide, "{}");
  dest.resize(static_cast<size_t>(narrow.numel()));
  EXPECT_ERROR(load_model_weights<float>(*narrow, dir, dest.data(), {}),
               "tensor layers.0.feed_forward.w1.weight (model.layers.0.mlp.gate_proj.weight) "
               "has shape [48, 16], model metatest expects [40, 16]");
  LlamaShape one = kGqa;
  one.layers = 1;
  const LlamaProgram fewer(one, "{}");
  dest.resize(static_cast<size_t>(fewer.numel()));
  EXPECT_ERROR(load_model_weights<float>(*fewer, dir, dest.data(), {}),
               "unexpected tensor layers.1.attention.wq.weight");
}

// --- the unpickler on hand-assembled bytes -----------------------------------------

// A minimal pickle builder: opcodes as bytes, strings and ints encoded.
struct Pickle {
  std::string b = "\x80\x02";
  // A literal's every byte, NULs included.
  template <size_t N> Pickle &op(const char (&s)[N]) {
    b.append(s, N - 1);
    return *this;
  }
  Pickle &str(const std::string &s) {
    b += 'X';
    const uint32_t n = static_cast<uint32_t>(s.size());
    b.append(reinterpret_cast<const char *>(&n), 4);
    b += s;
    return *this;
  }
  Pickle &i1(uint8_t v) {
    b += 'K';
    b += static_cast<char>(v);
    return *this;
  }
  Pickle &global(const std::string &module, const std::string &name) {
    b += 'c' + module + '\n' + name + '\n';
    return *this;
  }
  // _rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset,
  //                    (rows, cols), (stride0, stride1), False, OrderedDict())
  Pickle &tensor(const std::string &key, uint8_t numel, uint8_t offset, uint8_t rows,
                 uint8_t cols, uint8_t s0, uint8_t s1) {
    global("torch._utils", "_rebuild_tensor_v2").op("(");
    op("(").str("storage").global("torch", "FloatStorage").str(key).str("cpu").i1(numel);
    op("tQ").i1(offset).i1(rows).i1(cols).op("\x86").i1(s0).i1(s1).op("\x86");
    return op("\x89").global("collections", "OrderedDict").op(")R").op("tR");
  }
  const uint8_t *data() const { return reinterpret_cast<const uint8_t *>(b.data()); }
};

ckpt::TorchStateDict parse(const Pickle &p) {
  return ckpt::parse_torch_state_dict(p.data(), p.b.size(), "x.pth");
}

TEST(TorchPickle, HandAssembledStateDict) {
  Pickle p;
  p.op("}q\x00(").str("a").tensor("0", 12, 2, 2, 3, 1, 2).op("q\x01");
  p.str("b").op("h\x01"); // the same tensor again, through the memo
  p.op("u.");
  const ckpt::TorchStateDict d = parse(p);
  ASSERT_EQ(d.tensors.size(), 2u);
  ASSERT_EQ(d.storages.size(), 1u);
  EXPECT_EQ(d.storages[0].key, "0");
  EXPECT_EQ(d.storages[0].numel, 12);
  EXPECT_EQ(d.storages[0].dtype, ckpt::StDType::F32);
  const ckpt::TorchTensorRef &a = d.tensors[0].second;
  EXPECT_EQ(d.tensors[0].first, "a");
  EXPECT_EQ(d.tensors[1].first, "b");
  EXPECT_EQ(a.offset, 2);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.stride, (std::vector<int64_t>{1, 2}));
  EXPECT_FALSE(a.is_contiguous());
  EXPECT_EQ(a.numel(), 6);
}

TEST(TorchPickle, RejectsWhatTorchSaveNeverWrites) {
  auto err = [](const Pickle &p) { return error_of([&] { parse(p); }); };
  auto expect = [&](const Pickle &p, const std::string &fragment) {
    const std::string msg = err(p);
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg << " / wanted: " << fragment;
    EXPECT_EQ(msg.rfind("x.pth: data.pkl byte ", 0), 0u) << msg;
  };
  expect(Pickle{}, "truncated (no STOP opcode)");
  expect(Pickle{}.op("I1\n."), "unsupported pickle opcode 0x49 ('I')");
  expect(Pickle{}.op("h\x07."), "memo key 7 was never stored");
  expect(Pickle{}.op("\x86."), "stack underflow");
  expect(Pickle{}.op("(\x85."), "stack underflow"); // a MARK is a floor
  expect(Pickle{}.op("u."), "no MARK to pop to");
  expect(Pickle{}.global("os", "system").op("."), "unsupported global os.system");
  expect(Pickle{}.op("cos\nsystem"), "truncated GLOBAL");
  expect(Pickle{}.op("X\xff\xff\xff\x7f"), "truncated operand");
  expect(Pickle{}.op("\x8a\x09"), "LONG1 integer of 9 bytes");
  expect(Pickle{}.op("\x80\x01."), "pickle protocol 1");
  expect(Pickle{}.op("]."), "the pickled object is a list, expected a state dict");
  expect(Pickle{}.op("}K\x01K\x02s."), "state dict key is a int, expected a str");
  expect(Pickle{}.op("}").str("k").op("Ns."), "state dict entry k is a None, expected a tensor");
  expect(Pickle{}.op("}(").str("a").tensor("0", 6, 0, 2, 3, 3, 1).str("a")
             .tensor("0", 6, 0, 2, 3, 3, 1).op("u."),
         "state dict key a appears twice");
  // A view past its storage: element 1 + (2-1)*3 + (3-1)*1 = 6 of 6.
  expect(Pickle{}.op("}(").str("a").tensor("0", 6, 1, 2, 3, 3, 1).op("u."),
         "tensor view reaches element 6 of storage 0, which has 6");
  // An expanded view (stride 0): 12 elements of a 6-element storage.
  expect(Pickle{}.op("}(").str("a").tensor("0", 6, 0, 4, 3, 0, 1).op("u."),
         "tensor of 12 elements views storage 0 of 6 (an expanded view, not a weight)");
  // One storage key with two sizes.
  expect(Pickle{}.op("}(").str("a").tensor("0", 6, 0, 2, 3, 3, 1).str("b")
             .tensor("0", 7, 0, 2, 3, 3, 1).op("u."),
         "storage 0 is referenced with two different types or sizes");
  // REDUCE on a storage class, BUILD on a str, a persistent id that is not one.
  expect(Pickle{}.global("torch", "FloatStorage").op(")R."),
         "REDUCE on torch.FloatStorage");
  expect(Pickle{}.str("s").op("}b."), "BUILD on a str");
  expect(Pickle{}.op("K\x01Q."), "persistent id is a int, expected a tuple");
  expect(Pickle{}.op("K\x01K\x02."), "STOP with 2 objects on the stack");
  // A negative size through BININT.
  Pickle neg;
  neg.op("}(").str("a").global("torch._utils", "_rebuild_tensor_v2").op("((").str("storage");
  neg.global("torch", "FloatStorage").str("0").str("cpu").i1(4).op("tQ").i1(0);
  neg.op("J\xff\xff\xff\xff\x85").i1(1).op("\x85\x89").global("collections", "OrderedDict");
  neg.op(")RtRu.");
  expect(neg, "tensor size holds a negative value -1");
}

// Every prefix of a valid pickle is an error, never a crash.
TEST(TorchPickle, EveryPrefixFailsCleanly) {
  Pickle p;
  p.op("}q\x00(").str("a").tensor("0", 12, 2, 2, 3, 1, 2).op("u.");
  for (size_t n = 0; n < p.b.size(); ++n) {
    const std::string msg =
        error_of([&] { ckpt::parse_torch_state_dict(p.data(), n, "x.pth"); });
    EXPECT_EQ(msg.rfind("x.pth: data.pkl byte ", 0), 0u) << n << ": " << msg;
  }
}

// A folder with Meta's files next to HF's reads as HF (the HF repo layout).
TEST(MetaFolder, HfWinsWhenBothArePresent) {
  TempDir tmp;
  copy_dir(fixture("f32_mp2_hf"), tmp / "both");
  for (const char *f : {"params.json", "consolidated.00.pth", "consolidated.01.pth"})
    fs::copy(fixture("f16_mp2") + "/" + f, tmp / ("both/" + std::string(f)));
  const LlamaProgram program(kGqa);
  EXPECT_TRUE(load<float>(program, tmp / "both") == load<float>(program, fixture("f32_mp2_hf")));
  EXPECT_FALSE(load<float>(program, tmp / "both") == load<float>(program, fixture("f16_mp2")));
}

} // namespace
