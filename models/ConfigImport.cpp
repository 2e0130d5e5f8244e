// Reading model shapes from the two formats LLaMA checkpoints ship with:
// Hugging Face config.json and Meta's params.json. Every error names the file.
// Fields that would change the math but are not modelled are rejected rather
// than ignored, so an imported checkpoint never trains a silently different
// model.
#include "models/LlamaConfig.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace llama {
namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string &path, const std::string &what) {
  throw std::runtime_error(path + ": " + what);
}

json readJsonObject(const std::string &path) {
  std::ifstream in(path);
  if (!in)
    fail(path, std::string("cannot open (") + std::strerror(errno) + ")");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception &e) {
    // parse_error, and also out_of_range for a number too large for a
    // double (e.g. 1e400): both mean the file is not JSON we can read.
    fail(path, std::string("not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object())
    fail(path, std::string("expected a JSON object at top level (got ") + j.type_name() + ")");
  return j;
}

// Typed access to one JSON object's fields; JSON null counts as absent, since
// HF writes e.g. "head_dim": null for "derive it".
class Fields {
public:
  // prefix names a nested object in messages ("rope_scaling.").
  Fields(const std::string &path, const json &obj, std::string prefix = "")
      : path_(path), obj_(obj), prefix_(std::move(prefix)) {}

  // Every key of the object, to refuse the ones a reader does not know.
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    for (auto it = obj_.begin(); it != obj_.end(); ++it)
      out.push_back(it.key());
    return out;
  }

  bool has(const char *key) const { return obj_.contains(key) && !obj_.at(key).is_null(); }

  int64_t requiredInt(const char *key) const {
    requirePresent(key);
    return asInt(key, obj_.at(key));
  }
  std::optional<int64_t> optionalInt(const char *key) const {
    if (!has(key))
      return std::nullopt;
    return asInt(key, obj_.at(key));
  }
  double requiredNumber(const char *key) const {
    requirePresent(key);
    return asNumber(key, obj_.at(key));
  }
  std::optional<double> optionalNumber(const char *key) const {
    if (!has(key))
      return std::nullopt;
    return asNumber(key, obj_.at(key));
  }
  std::optional<bool> optionalBool(const char *key) const {
    if (!has(key))
      return std::nullopt;
    const json &v = obj_.at(key);
    if (!v.is_boolean())
      wrongType(key, "a boolean", v);
    return v.get<bool>();
  }
  std::optional<std::string> optionalString(const char *key) const {
    if (!has(key))
      return std::nullopt;
    const json &v = obj_.at(key);
    if (!v.is_string())
      wrongType(key, "a string", v);
    return v.get<std::string>();
  }
  // A token id: an integer, or a list of them (Llama 3 lists several EOS
  // ids; the first is the one that ends a document). Null -> -1 (none).
  std::optional<int64_t> optionalTokenId(const char *key) const {
    if (!obj_.contains(key))
      return std::nullopt;
    const json &v = obj_.at(key);
    if (v.is_null())
      return -1;
    if (v.is_array()) {
      if (v.empty())
        wrongType(key, "an integer or a non-empty list of integers", v);
      return asInt(key, v.front());
    }
    return asInt(key, v);
  }
  const json &raw(const char *key) const { return obj_.at(key); }

private:
  void requirePresent(const char *key) const {
    if (!obj_.contains(key))
      fail(path_, "missing field '" + prefix_ + key + "'");
    if (obj_.at(key).is_null())
      fail(path_, "field '" + prefix_ + key + "' is null");
  }
  [[noreturn]] void wrongType(const char *key, const char *expected, const json &v) const {
    fail(path_, "field '" + prefix_ + key + "' must be " + expected + " (got " + v.dump() + ")");
  }
  int64_t asInt(const char *key, const json &v) const {
    if (v.is_number_integer())
      return v.get<int64_t>();
    // 4096.0 is an integer written by a float-happy tool; 4096.5 is not.
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::trunc(d) == d && std::fabs(d) < 9.0e15)
        return static_cast<int64_t>(d);
    }
    wrongType(key, "an integer", v);
  }
  double asNumber(const char *key, const json &v) const {
    if (!v.is_number())
      wrongType(key, "a number", v);
    return v.get<double>();
  }

  const std::string &path_;
  const json &obj_;
  std::string prefix_;
};

// The keys each rope type defines (besides rope_type/type, and rope_theta in
// transformers 5's rope_parameters).
const std::vector<std::string> &ropeKeys(RopeType t) {
  static const std::vector<std::string> none, factor{"factor"},
      dynamic{"factor", "original_max_position_embeddings"},
      yarn{"factor", "original_max_position_embeddings", "attention_factor", "beta_fast",
           "beta_slow", "mscale", "mscale_all_dim", "truncate"},
      llama3{"factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"};
  switch (t) {
  case RopeType::Default: return none;
  case RopeType::Linear: return factor;
  case RopeType::Dynamic: return dynamic;
  case RopeType::Yarn: return yarn;
  case RopeType::Llama3: return llama3;
  }
  return none;
}

// HF's rope_scaling object (or transformers 5's rope_parameters, `field`
// names which). Types and keys that are not modelled are refused.
RopeScaling parseRopeScaling(const std::string &path, const json &obj, const std::string &field) {
  if (!obj.is_object())
    fail(path, "field '" + field + "' must be an object or null (got " + obj.dump() + ")");
  Fields r(path, obj, field + ".");
  std::optional<std::string> name = r.optionalString("rope_type");
  if (!name)
    name = r.optionalString("type"); // the older spelling
  if (!name)
    fail(path, "field '" + field + "' has no rope_type");
  RopeScaling s;
  bool known = false;
  for (RopeType t : {RopeType::Default, RopeType::Linear, RopeType::Dynamic, RopeType::Yarn,
                     RopeType::Llama3})
    if (*name == ropeTypeName(t)) {
      s.type = t;
      known = true;
    }
  if (!known)
    fail(path, field + ".rope_type '" + *name +
                   "' is not supported (supported: default, linear, dynamic, yarn, llama3)");
  const std::vector<std::string> &allowed = ropeKeys(s.type);
  for (const std::string &key : r.keys()) {
    if (key == "rope_type" || key == "type" || key == "rope_theta")
      continue;
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
      fail(path, field + "." + key + " is not defined for rope_type '" + *name +
                     "' (it would change the math and is not modelled)");
  }
  if (s.type == RopeType::Default)
    return s;
  s.factor = r.requiredNumber("factor");
  s.original_max_position_embeddings = r.optionalInt("original_max_position_embeddings");
  if (s.type == RopeType::Llama3) {
    s.original_max_position_embeddings = r.requiredInt("original_max_position_embeddings");
    s.low_freq_factor = r.requiredNumber("low_freq_factor");
    s.high_freq_factor = r.requiredNumber("high_freq_factor");
  }
  if (s.type == RopeType::Yarn) {
    s.attention_factor = r.optionalNumber("attention_factor");
    s.beta_fast = r.optionalNumber("beta_fast");
    s.beta_slow = r.optionalNumber("beta_slow");
    s.mscale = r.optionalNumber("mscale");
    s.mscale_all_dim = r.optionalNumber("mscale_all_dim");
    s.truncate = r.optionalBool("truncate");
  }
  return s;
}

// "models/TinyLlama-1.1B/config.json" -> "TinyLlama-1.1B"; "x/7b.json" -> "7b".
std::string nameFromPath(const std::string &path) {
  const std::filesystem::path p(path);
  const std::string stem = p.stem().string();
  if ((stem == "config" || stem == "params") && p.has_parent_path()) {
    const std::string dir = std::filesystem::absolute(p).parent_path().filename().string();
    if (!dir.empty())
      return dir;
  }
  return stem;
}

// Validation problems carry the file name, like every other import error.
LlamaConfig checked(const std::string &path, LlamaConfig c) {
  if (auto problem = findConfigProblem(c))
    fail(path, *problem);
  return c;
}

LlamaConfig fromHF(const std::string &path, const json &obj) {
  Fields f(path, obj);
  if (auto type = f.optionalString("model_type"); type && *type != "llama")
    fail(path, "model_type '" + *type + "' is not supported (expected 'llama')");
  if (auto act = f.optionalString("hidden_act"); act && *act != "silu")
    fail(path, "hidden_act '" + *act + "' is not supported (LLaMA's SwiGLU uses 'silu')");
  if (f.optionalBool("attention_bias").value_or(false))
    fail(path, "attention_bias true is not supported (LLaMA projections have no bias)");
  if (f.optionalBool("mlp_bias").value_or(false))
    fail(path, "mlp_bias true is not supported (LLaMA projections have no bias)");

  LlamaConfig c;
  c.name = f.optionalString("_name_or_path").value_or("");
  if (c.name.empty())
    c.name = nameFromPath(path);
  c.vocab_size = f.requiredInt("vocab_size");
  c.hidden_size = f.requiredInt("hidden_size");
  c.intermediate_size = f.requiredInt("intermediate_size");
  c.num_layers = f.requiredInt("num_hidden_layers");
  c.num_heads = f.requiredInt("num_attention_heads");
  c.num_kv_heads = f.optionalInt("num_key_value_heads").value_or(c.num_heads);
  if (auto hd = f.optionalInt("head_dim")) {
    c.head_dim = *hd;
  } else {
    if (c.num_heads <= 0 || c.hidden_size % c.num_heads != 0)
      fail(path, "num_attention_heads (" + std::to_string(c.num_heads) +
                     ") must divide hidden_size (" + std::to_string(c.hidden_size) +
                     ") when head_dim is not given");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  c.rms_norm_eps = f.requiredNumber("rms_norm_eps");
  c.rope_theta = f.optionalNumber("rope_theta").value_or(10000.0);
  // transformers >= 5 nests RoPE settings in "rope_parameters".
  if (f.has("rope_parameters")) {
    const json &rp = f.raw("rope_parameters");
    if (!rp.is_object())
      fail(path, "field 'rope_parameters' must be an object (got " + rp.dump() + ")");
    Fields r(path, rp, "rope_parameters.");
    if (auto theta = r.optionalNumber("rope_theta"))
      c.rope_theta = *theta;
    // Anything beside rope_theta is RoPE scaling, and must say its type.
    if (rp.size() > (rp.contains("rope_theta") ? 1u : 0u))
      c.rope_scaling = parseRopeScaling(path, rp, "rope_parameters");
  }
  if (f.has("rope_scaling")) {
    const RopeScaling s = parseRopeScaling(path, f.raw("rope_scaling"), "rope_scaling");
    if (f.has("rope_parameters") && !(s == c.rope_scaling))
      fail(path, "rope_scaling and rope_parameters disagree");
    c.rope_scaling = s;
  }
  c.max_position_embeddings = f.optionalInt("max_position_embeddings").value_or(2048);
  c.tie_word_embeddings = f.optionalBool("tie_word_embeddings").value_or(false);
  c.bos_token_id = f.optionalTokenId("bos_token_id").value_or(1);
  c.eos_token_id = f.optionalTokenId("eos_token_id").value_or(2);
  c.init_std = f.optionalNumber("initializer_range").value_or(0.02);
  return checked(path, c);
}

LlamaConfig fromMeta(const std::string &path, const json &obj, const MetaParamsOptions &opts) {
  Fields f(path, obj);

  LlamaConfig c;
  c.name = nameFromPath(path);
  c.hidden_size = f.requiredInt("dim");
  c.num_layers = f.requiredInt("n_layers");
  c.num_heads = f.requiredInt("n_heads");
  c.num_kv_heads = f.optionalInt("n_kv_heads").value_or(c.num_heads);
  if (c.num_heads <= 0 || c.hidden_size % c.num_heads != 0)
    fail(path, "n_heads (" + std::to_string(c.num_heads) + ") must divide dim (" +
                   std::to_string(c.hidden_size) + ")");
  c.head_dim = c.hidden_size / c.num_heads;

  const int64_t fileVocab = f.requiredInt("vocab_size");
  if (fileVocab > 0) {
    if (opts.vocabSize && *opts.vocabSize != fileVocab)
      fail(path, "vocab_size " + std::to_string(fileVocab) + " conflicts with --vocab-size " +
                     std::to_string(*opts.vocabSize));
    c.vocab_size = fileVocab;
  } else if (opts.vocabSize) {
    c.vocab_size = *opts.vocabSize;
  } else {
    fail(path, "vocab_size is " + std::to_string(fileVocab) +
                   " (taken from the tokenizer); pass --vocab-size or a tokenizer model");
  }

  // Meta's FeedForward (llama/model.py): the float steps truncate like
  // Python's int(); 2*(4*dim)/3 is exact in integer arithmetic.
  const int64_t multipleOf = f.requiredInt("multiple_of");
  if (multipleOf <= 0)
    fail(path, "multiple_of must be > 0 (got " + std::to_string(multipleOf) + ")");
  if (c.hidden_size <= 0)
    fail(path, "dim must be > 0 (got " + std::to_string(c.hidden_size) + ")");
  int64_t hidden = 2 * (4 * c.hidden_size) / 3;
  if (auto mult = f.optionalNumber("ffn_dim_multiplier")) {
    if (!(*mult > 0) || !std::isfinite(*mult))
      fail(path, "ffn_dim_multiplier must be > 0 (got " + f.raw("ffn_dim_multiplier").dump() + ")");
    hidden = static_cast<int64_t>(*mult * static_cast<double>(hidden));
  }
  c.intermediate_size = multipleOf * ((hidden + multipleOf - 1) / multipleOf);

  c.rms_norm_eps = f.requiredNumber("norm_eps");
  c.rope_theta = f.optionalNumber("rope_theta").value_or(10000.0);
  if (f.optionalBool("use_scaled_rope").value_or(false)) {
    // As Meta's reference code (llama3 / llama-models) applies it.
    c.rope_scaling.type = RopeType::Llama3;
    c.rope_scaling.factor = f.optionalNumber("rope_scaling_factor").value_or(8.0);
    c.rope_scaling.low_freq_factor = 1.0;
    c.rope_scaling.high_freq_factor = f.optionalNumber("high_freq_factor").value_or(4.0);
    c.rope_scaling.original_max_position_embeddings = 8192;
  } else if (f.has("rope_scaling_factor") || f.has("high_freq_factor")) {
    fail(path, "rope_scaling_factor / high_freq_factor are given but use_scaled_rope is not true");
  }
  c.max_position_embeddings =
      f.optionalInt("max_seq_len").value_or(opts.maxPositionEmbeddings.value_or(2048));
  c.tie_word_embeddings = false; // Meta checkpoints always carry a separate `output`
  return checked(path, c);
}

} // namespace

LlamaConfig loadHFConfig(const std::string &path) { return fromHF(path, readJsonObject(path)); }

LlamaConfig loadMetaParams(const std::string &path, const MetaParamsOptions &options) {
  return fromMeta(path, readJsonObject(path), options);
}

LlamaConfig loadConfigFile(const std::string &path, const MetaParamsOptions &metaOptions) {
  const json obj = readJsonObject(path);
  if (obj.contains("hidden_size"))
    return fromHF(path, obj);
  if (obj.contains("dim"))
    return fromMeta(path, obj, metaOptions);
  fail(path, "neither an HF config.json (no 'hidden_size') nor a Meta params.json (no 'dim')");
}

} // namespace llama
