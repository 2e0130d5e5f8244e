// LlamaConfig: the shape of a LLaMA model, and everything that follows from it
// without building IR (validation, parameter count, the HF parameter table,
// config.json text). Producers (presets, HF config.json / Meta params.json
// import) always return a fully resolved config: head_dim and
// num_kv_heads are explicit, so consumers never re-derive them.
//
// This layer is plain C++ (no MLIR): tools, tests and reports use it alone.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace llama {

// RoPE scaling as Hugging Face's LlamaConfig defines it (config.json
// "rope_scaling", transformers 5's "rope_parameters"). The rope ops carry the
// resulting inverse frequencies (ropeInverseFrequencies) and cos/sin factor
// (ropeAttentionFactor) in the IR; nothing downstream knows these types.
enum class RopeType { Default, Linear, Dynamic, Yarn, Llama3 };
const char *ropeTypeName(RopeType t); // "default", "linear", ... as in config.json

struct RopeScaling {
  RopeType type = RopeType::Default;
  double factor = 1.0; // linear, dynamic, yarn, llama3
  // llama3 (required): the pre-training context and the wavelength band
  // between original/high_freq_factor and original/low_freq_factor that is
  // interpolated. yarn (optional): the pre-training context; when present,
  // yarn's factor is max_position_embeddings / it (as transformers reads it).
  std::optional<int64_t> original_max_position_embeddings;
  double low_freq_factor = 0.0, high_freq_factor = 0.0; // llama3
  // yarn, each optional as in config.json: written back only when given.
  std::optional<double> attention_factor, beta_fast, beta_slow, mscale, mscale_all_dim;
  std::optional<bool> truncate;
};
bool operator==(const RopeScaling &a, const RopeScaling &b);

struct LlamaConfig {
  std::string name;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0; // SwiGLU width (gate/up out, down in)
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0; // == num_heads for MHA, fewer for GQA
  int64_t head_dim = 0;     // usually hidden_size / num_heads, may differ
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1; // -1: the tokenizer has none
  int64_t eos_token_id = 2; // -1: the tokenizer has none
  double init_std = 0.02;   // HF initializer_range
};

// Field-by-field, doubles compared exactly (round trips must be lossless).
bool operator==(const LlamaConfig &a, const LlamaConfig &b);
inline bool operator!=(const LlamaConfig &a, const LlamaConfig &b) { return !(a == b); }

// LLaMA's SwiGLU width: 256 * ceil((2/3 * 4 * dim) / 256), in integers
// (11008 for dim 4096). Throws for dim <= 0.
int64_t llamaFfnWidth(int64_t dim);

// Sets head_dim = hidden_size / num_heads; throws when num_heads does not
// divide hidden_size. For tools that override hidden_size or num_heads.
void deriveHeadDim(LlamaConfig &c);

// Throws std::runtime_error("config '<name>': <what is wrong>") for any
// config the builder cannot honour: non-positive sizes, num_kv_heads not
// dividing num_heads, odd head_dim (RoPE rotates pairs), eps/theta <= 0,
// token ids outside the vocabulary, a parameter count overflowing int64,
// more than kMaxLayers layers.
constexpr int64_t kMaxLayers = 4096;
void validate(const LlamaConfig &c);
// The same checks; returns the problem instead of throwing (nullopt: valid).
std::optional<std::string> findConfigProblem(const LlamaConfig &c);
// The rope_scaling part of them (RopeScaling.cpp).
std::optional<std::string> findRopeScalingProblem(const LlamaConfig &c);

// RoPE's inverse frequencies (radians per position) of the head_dim / 2
// rotated pairs for sequences of seqLen tokens, computed in double from the
// published formulas (transformers' modeling_rope_utils): default
// theta^(-2i/d); linear / factor; dynamic NTK with the base grown for
// seqLen > max_position_embeddings (unchanged up to it); yarn's ramp between
// interpolated and extrapolated frequencies; llama3's band-wise
// interpolation. Validates first.
std::vector<double> ropeInverseFrequencies(const LlamaConfig &c, int64_t seqLen);
// The factor on cos and sin (yarn's attention factor; 1 for the others).
double ropeAttentionFactor(const LlamaConfig &c);

// Widths of the attention projections.
inline int64_t qProjWidth(const LlamaConfig &c) { return c.num_heads * c.head_dim; }
inline int64_t kvProjWidth(const LlamaConfig &c) { return c.num_kv_heads * c.head_dim; }

// Exact parameter count; a tied embedding/lm_head matrix is counted once.
int64_t paramCount(const LlamaConfig &c);
// Parameters that take part in a per-token GEMM: paramCount minus the input
// embedding table (a gather, no FLOPs), unless it is tied to lm_head (then it
// is the output projection's GEMM operand and stays). This is the N of the
// 6N FLOPs-per-token MFU convention.
int64_t nonEmbeddingParamCount(const LlamaConfig &c);

struct ParamSpec {
  std::string name;           // HF name, e.g. model.layers.3.self_attn.q_proj.weight
  std::vector<int64_t> shape; // weights are [out, in]; norms and embeddings as in HF
  bool isNormWeight;          // RMSNorm gains: initialised to 1, no weight decay
};

// Every parameter in HF checkpoint order: model.embed_tokens.weight; per layer
// q/k/v/o_proj, gate/up/down_proj, input_layernorm, post_attention_layernorm;
// model.norm.weight; lm_head.weight unless tied. Validates first.
std::vector<ParamSpec> paramTable(const LlamaConfig &c);

// LlamaForCausalLM config.json text (architectures, model_type "llama",
// hidden_act "silu", torch_dtype "float32", every field above) that
// loadHFConfig reads back to an equal config. Validates first.
std::string toHFConfigJson(const LlamaConfig &c);

// One line for logs and reports: "llama-7b: 32 layers, hidden 4096, ...".
std::string describe(const LlamaConfig &c);

// ---- Presets (Presets.cpp) --------------------------------------------------
// LLaMA paper Table 2 sizes (llama-7b/13b/33b/65b), llama2-7b, tinyllama-1.1b,
// the Llama 3 family (llama3.2-1b/3b, llama3.1-8b/70b/405b),
// and small ones for experiments (tiny) and tests (micro).
// Throws std::runtime_error("unknown preset 'x' (known: a, b, ...)").
LlamaConfig preset(const std::string &name);
std::vector<std::string> presetNames();

// ---- Import (ConfigImport.cpp) ----------------------------------------------
// Errors name the file: "<path>: cannot open (...)", "<path>: not valid JSON
// (...)", "<path>: missing field 'hidden_size'", "<path>: <validation problem>".

// HF config.json. num_key_value_heads absent -> num_attention_heads; head_dim
// absent -> hidden_size / num_attention_heads; HF defaults for rope_theta
// (1e4), max_position_embeddings (2048), tie_word_embeddings (false),
// bos/eos (1/2), initializer_range (0.02). rope_scaling (or transformers 5's
// rope_parameters) of type default, linear, dynamic, yarn or llama3 ("type"
// is the older spelling of "rope_type"). Anything that would change the math
// and is not modelled (longrope and other rope types, a rope_scaling key the
// type does not define, attention or MLP biases, another model_type or
// activation) is an error, never ignored.
// name: "_name_or_path" when present, else the folder holding config.json.
LlamaConfig loadHFConfig(const std::string &path);

struct MetaParamsOptions {
  // Required when params.json says vocab_size -1 (original LLaMA / Llama 2):
  // the vocabulary comes from the tokenizer. Must agree with a positive value.
  std::optional<int64_t> vocabSize;
  // params.json has no context length (Meta passes max_seq_len at run time);
  // used unless the file has "max_seq_len". Default: LLaMA's 2048.
  std::optional<int64_t> maxPositionEmbeddings;
};

// Meta params.json (dim, n_layers, n_heads, n_kv_heads?, vocab_size,
// multiple_of, ffn_dim_multiplier?, norm_eps, rope_theta?, use_scaled_rope?)
// with Meta's FFN rule: h = int(2*4*dim/3); h = int(mult*h) if
// ffn_dim_multiplier; h = multiple_of * ceil(h / multiple_of). Untied, bos/eos
// 1/2. use_scaled_rope true is llama3 scaling as Meta's reference code applies
// it: factor "rope_scaling_factor" (default 8, Llama 3.1's; Llama 3.2's files
// omit their 32, so add "rope_scaling_factor": 32 or import the HF
// config.json), low_freq_factor 1, high_freq_factor "high_freq_factor"
// (default 4), original context 8192.
LlamaConfig loadMetaParams(const std::string &path, const MetaParamsOptions &options = {});

// Either format, told apart by its keys: "hidden_size" -> HF, "dim" -> Meta.
LlamaConfig loadConfigFile(const std::string &path, const MetaParamsOptions &metaOptions = {});

} // namespace llama
