// Validation and the quantities derived from a LlamaConfig: FFN width,
// parameter count, the HF parameter table and config.json text.
#include "models/LlamaConfig.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace llama {

bool operator==(const LlamaConfig &a, const LlamaConfig &b) {
  return a.name == b.name && a.vocab_size == b.vocab_size && a.hidden_size == b.hidden_size &&
         a.intermediate_size == b.intermediate_size && a.num_layers == b.num_layers &&
         a.num_heads == b.num_heads && a.num_kv_heads == b.num_kv_heads &&
         a.head_dim == b.head_dim && a.rms_norm_eps == b.rms_norm_eps &&
         a.rope_theta == b.rope_theta && a.rope_scaling == b.rope_scaling &&
         a.max_position_embeddings == b.max_position_embeddings &&
         a.tie_word_embeddings == b.tie_word_embeddings && a.bos_token_id == b.bos_token_id &&
         a.eos_token_id == b.eos_token_id && a.init_std == b.init_std;
}

int64_t llamaFfnWidth(int64_t dim) {
  if (dim <= 0)
    throw std::runtime_error("llamaFfnWidth: dim must be > 0 (got " + std::to_string(dim) + ")");
  // ceil((8/3 * dim) / 256) == ceil(8*dim / 768), exact in integers.
  return 256 * ((8 * dim + 767) / 768);
}

void deriveHeadDim(LlamaConfig &c) {
  if (c.num_heads <= 0 || c.hidden_size <= 0 || c.hidden_size % c.num_heads != 0)
    throw std::runtime_error("config '" + c.name + "': num_attention_heads (" +
                             std::to_string(c.num_heads) + ") must divide hidden_size (" +
                             std::to_string(c.hidden_size) + ") to derive head_dim");
  c.head_dim = c.hidden_size / c.num_heads;
}

namespace {

// Checked int64 arithmetic: a config whose count overflows is invalid, not UB.
bool mulOk(int64_t a, int64_t b, int64_t &out) { return !__builtin_mul_overflow(a, b, &out); }
bool addOk(int64_t a, int64_t b, int64_t &out) { return !__builtin_add_overflow(a, b, &out); }

// Sum of a * b over pairs, with overflow reporting.
bool sumOfProducts(std::initializer_list<std::pair<int64_t, int64_t>> terms, int64_t &out) {
  out = 0;
  for (auto [a, b] : terms) {
    int64_t p;
    if (!mulOk(a, b, p) || !addOk(out, p, out))
      return false;
  }
  return true;
}

// The count without validation; false on int64 overflow.
bool countParams(const LlamaConfig &c, int64_t &total) {
  const int64_t h = c.hidden_size, f = c.intermediate_size;
  int64_t q, kv;
  if (!mulOk(c.num_heads, c.head_dim, q) || !mulOk(c.num_kv_heads, c.head_dim, kv))
    return false;
  int64_t perLayer;
  // q_proj + o_proj, k_proj + v_proj, gate + up + down, two RMSNorm gains.
  if (!sumOfProducts({{2 * h, q}, {2 * h, kv}, {3 * h, f}, {2, h}}, perLayer))
    return false;
  int64_t layers, embed;
  if (!mulOk(perLayer, c.num_layers, layers) || !mulOk(c.vocab_size, h, embed))
    return false;
  const int64_t embedTables = c.tie_word_embeddings ? 1 : 2;
  int64_t tables;
  return mulOk(embed, embedTables, tables) && addOk(layers, tables, total) &&
         addOk(total, h, total); // + final norm
}

std::string problem(const std::string &field, int64_t value, const char *rule) {
  return field + " must be " + rule + " (got " + std::to_string(value) + ")";
}

} // namespace

std::optional<std::string> findConfigProblem(const LlamaConfig &c) {
  // Field names as in HF config.json: what users will search their files for.
  const std::pair<const char *, int64_t> sizes[] = {
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_layers},
      {"num_attention_heads", c.num_heads},
      {"num_key_value_heads", c.num_kv_heads},
      {"head_dim", c.head_dim},
      {"max_position_embeddings", c.max_position_embeddings}};
  for (auto [field, value] : sizes)
    if (value <= 0)
      return problem(field, value, "> 0");
  // The layer count sizes tables (paramTable, the emitted IR) entry by entry:
  // a hostile config.json must be refused here, not allocate 10^9 entries.
  // The deepest published LLaMA-style models have ~128 layers.
  if (c.num_layers > kMaxLayers)
    return problem("num_hidden_layers", c.num_layers, "at most 4096");
  static_assert(kMaxLayers == 4096, "keep the message in step");
  if (c.num_heads % c.num_kv_heads != 0)
    return "num_key_value_heads (" + std::to_string(c.num_kv_heads) +
           ") must divide num_attention_heads (" + std::to_string(c.num_heads) + ")";
  if (c.head_dim % 2 != 0)
    return problem("head_dim", c.head_dim, "even (RoPE rotates pairs of dimensions)");
  if (!(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0))
    return "rms_norm_eps must be finite and > 0 (got " + std::to_string(c.rms_norm_eps) + ")";
  if (!(std::isfinite(c.rope_theta) && c.rope_theta > 0))
    return "rope_theta must be finite and > 0 (got " + std::to_string(c.rope_theta) + ")";
  if (auto p = findRopeScalingProblem(c))
    return p;
  if (!(std::isfinite(c.init_std) && c.init_std > 0))
    return "initializer_range must be finite and > 0 (got " + std::to_string(c.init_std) + ")";
  const std::pair<const char *, int64_t> tokens[] = {{"bos_token_id", c.bos_token_id},
                                                     {"eos_token_id", c.eos_token_id}};
  for (auto [field, id] : tokens)
    if (id < -1 || id >= c.vocab_size)
      return std::string(field) + " (" + std::to_string(id) + ") must be -1 (none) or in [0, " +
             std::to_string(c.vocab_size) + ")";
  int64_t total;
  if (!countParams(c, total))
    return std::string("parameter count overflows int64");
  return std::nullopt;
}

void validate(const LlamaConfig &c) {
  if (auto p = findConfigProblem(c))
    throw std::runtime_error("config '" + c.name + "': " + *p);
}

int64_t paramCount(const LlamaConfig &c) {
  validate(c);
  int64_t total = 0;
  countParams(c, total);
  return total;
}

int64_t nonEmbeddingParamCount(const LlamaConfig &c) {
  int64_t total = paramCount(c);
  return c.tie_word_embeddings ? total : total - c.vocab_size * c.hidden_size;
}

std::vector<ParamSpec> paramTable(const LlamaConfig &c) {
  validate(c);
  const int64_t h = c.hidden_size, f = c.intermediate_size;
  const int64_t q = qProjWidth(c), kv = kvProjWidth(c);
  std::vector<ParamSpec> table;
  table.reserve(9 * c.num_layers + 3);
  table.push_back({"model.embed_tokens.weight", {c.vocab_size, h}, false});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    table.push_back({p + "self_attn.q_proj.weight", {q, h}, false});
    table.push_back({p + "self_attn.k_proj.weight", {kv, h}, false});
    table.push_back({p + "self_attn.v_proj.weight", {kv, h}, false});
    table.push_back({p + "self_attn.o_proj.weight", {h, q}, false});
    table.push_back({p + "mlp.gate_proj.weight", {f, h}, false});
    table.push_back({p + "mlp.up_proj.weight", {f, h}, false});
    table.push_back({p + "mlp.down_proj.weight", {h, f}, false});
    table.push_back({p + "input_layernorm.weight", {h}, true});
    table.push_back({p + "post_attention_layernorm.weight", {h}, true});
  }
  table.push_back({"model.norm.weight", {h}, true});
  if (!c.tie_word_embeddings)
    table.push_back({"lm_head.weight", {c.vocab_size, h}, false});
  return table;
}

namespace {

// config.json's rope_scaling: null for plain RoPE, else the fields the type
// defines (optional ones only when given), as transformers writes them.
nlohmann::ordered_json ropeScalingJson(const RopeScaling &s) {
  if (s.type == RopeType::Default)
    return nullptr;
  nlohmann::ordered_json j;
  j["rope_type"] = ropeTypeName(s.type);
  j["factor"] = s.factor;
  if (s.original_max_position_embeddings)
    j["original_max_position_embeddings"] = *s.original_max_position_embeddings;
  if (s.type == RopeType::Llama3) {
    j["low_freq_factor"] = s.low_freq_factor;
    j["high_freq_factor"] = s.high_freq_factor;
  }
  for (auto [name, v] : {std::pair("attention_factor", s.attention_factor),
                         std::pair("beta_fast", s.beta_fast), std::pair("beta_slow", s.beta_slow),
                         std::pair("mscale", s.mscale), std::pair("mscale_all_dim", s.mscale_all_dim)})
    if (v)
      j[name] = *v;
  if (s.truncate)
    j["truncate"] = *s.truncate;
  return j;
}

} // namespace

std::string toHFConfigJson(const LlamaConfig &c) {
  validate(c);
  // ordered_json keeps the fields in the order a reader expects.
  nlohmann::ordered_json j;
  j["_name_or_path"] = c.name;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["hidden_act"] = "silu";
  j["torch_dtype"] = "float32";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["rms_norm_eps"] = c.rms_norm_eps; // nlohmann prints the shortest exact form
  j["rope_theta"] = c.rope_theta;
  j["rope_scaling"] = ropeScalingJson(c.rope_scaling);
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  // -1 (no such token) is written as HF writes it: null.
  auto tokenId = [](int64_t id) { return id < 0 ? nlohmann::ordered_json() : nlohmann::ordered_json(id); };
  j["bos_token_id"] = tokenId(c.bos_token_id);
  j["eos_token_id"] = tokenId(c.eos_token_id);
  j["initializer_range"] = c.init_std;
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["mlp_bias"] = false;
  j["pretraining_tp"] = 1;
  j["use_cache"] = true;
  return j.dump(2) + "\n";
}

std::string describe(const LlamaConfig &c) {
  std::ostringstream os;
  os << c.name << ": " << c.num_layers << " layers, hidden " << c.hidden_size << ", ffn "
     << c.intermediate_size << ", " << c.num_heads << " heads (" << c.num_kv_heads
     << " kv, head_dim " << c.head_dim << "), vocab " << c.vocab_size << ", max pos "
     << c.max_position_embeddings << (c.tie_word_embeddings ? ", tied" : "") << ", ";
  if (!findConfigProblem(c)) {
    os.setf(std::ios::fixed);
    os.precision(2);
    const double n = static_cast<double>(paramCount(c));
    if (n >= 1e9)
      os << n / 1e9 << "B params";
    else
      os << n / 1e6 << "M params";
  } else {
    os << "invalid";
  }
  return os.str();
}

} // namespace llama
