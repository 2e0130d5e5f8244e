// Named model sizes. The LLaMA ones follow the paper (Touvron et al. 2023,
// Table 2): vocab 32000, SwiGLU width llamaFfnWidth(dim), RMSNorm eps 1e-6,
// RoPE theta 1e4, context 2048, untied embeddings; the Llama 3 family follows
// Meta's published configs. Exact parameter counts are asserted by
// test/unit/models_test.cpp.
#include "models/LlamaConfig.h"

#include <stdexcept>

namespace llama {
namespace {

// A LLaMA-1 shaped model: MHA, head_dim 128 for all four paper sizes.
LlamaConfig llama1(const char *name, int64_t dim, int64_t heads, int64_t layers) {
  LlamaConfig c;
  c.name = name;
  c.vocab_size = 32000;
  c.hidden_size = dim;
  c.intermediate_size = llamaFfnWidth(dim);
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = heads;
  c.head_dim = dim / heads;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 2048;
  c.tie_word_embeddings = false;
  return c;
}

LlamaConfig llama2_7b() {
  LlamaConfig c = llama1("llama2-7b", 4096, 32, 32);
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 4096;
  return c;
}

// TinyLlama-1.1B (github.com/jzhang38/TinyLlama): Llama-2 tokenizer and
// architecture at 22 layers with 4-way-shared KV heads (GQA).
LlamaConfig tinyllama() {
  LlamaConfig c = llama1("tinyllama-1.1b", 2048, 32, 22);
  c.intermediate_size = 5632;
  c.num_kv_heads = 4;
  c.rms_norm_eps = 1e-5;
  return c;
}

// Llama 3.1 / 3.2 (Meta's published HF config.json files): vocab 128256
// (tiktoken BPE), GQA with 8 KV heads of 128 (64 for 3.2-1B), RMSNorm eps
// 1e-5, RoPE theta 5e5 with llama3 scaling (factor 8 for 3.1, 32 for 3.2;
// low/high frequency factors 1 and 4, original context 8192) to 131072
// positions, bos 128000 and eos 128001 (the base models). 3.2's 1B and 3B tie
// the embeddings.
LlamaConfig llama3(const char *name, int64_t dim, int64_t ffn, int64_t heads, int64_t layers,
                   bool tied, double ropeFactor) {
  LlamaConfig c;
  c.name = name;
  c.vocab_size = 128256;
  c.hidden_size = dim;
  c.intermediate_size = ffn;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = 8;
  c.head_dim = dim / heads;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.rope_scaling.type = RopeType::Llama3;
  c.rope_scaling.factor = ropeFactor;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 8192;
  c.max_position_embeddings = 131072;
  c.tie_word_embeddings = tied;
  c.bos_token_id = 128000;
  c.eos_token_id = 128001;
  return c;
}

// 15.1M parameters: trains to a sensible loss on a laptop CPU in minutes.
LlamaConfig tiny() {
  LlamaConfig c = llama1("tiny", 384, 6, 5);
  c.vocab_size = 8192;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 1024;
  return c;
}

// For tests: every dimension distinct where possible so that a transposed
// or misrouted shape fails, GQA on (2 query heads per KV head), and
// head_dim * heads == hidden so both derivations agree.
LlamaConfig micro() {
  LlamaConfig c = llama1("micro", 16, 4, 2);
  c.vocab_size = 64;
  c.num_kv_heads = 2;
  c.head_dim = 4;
  c.intermediate_size = 48;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 64;
  return c;
}

struct Entry {
  const char *name;
  LlamaConfig (*make)();
};

const Entry kPresets[] = {
    {"llama-7b", [] { return llama1("llama-7b", 4096, 32, 32); }},
    {"llama-13b", [] { return llama1("llama-13b", 5120, 40, 40); }},
    {"llama-33b", [] { return llama1("llama-33b", 6656, 52, 60); }},
    {"llama-65b", [] { return llama1("llama-65b", 8192, 64, 80); }},
    {"llama2-7b", llama2_7b},
    {"tinyllama-1.1b", tinyllama},
    {"llama3.2-1b", [] { return llama3("llama3.2-1b", 2048, 8192, 32, 16, true, 32.0); }},
    {"llama3.2-3b", [] { return llama3("llama3.2-3b", 3072, 8192, 24, 28, true, 32.0); }},
    {"llama3.1-8b", [] { return llama3("llama3.1-8b", 4096, 14336, 32, 32, false, 8.0); }},
    {"llama3.1-70b", [] { return llama3("llama3.1-70b", 8192, 28672, 64, 80, false, 8.0); }},
    {"llama3.1-405b", [] { return llama3("llama3.1-405b", 16384, 53248, 128, 126, false, 8.0); }},
    {"tiny", tiny},
    {"micro", micro},
};

} // namespace

LlamaConfig preset(const std::string &name) {
  for (const Entry &e : kPresets)
    if (name == e.name)
      return e.make();
  std::string known;
  for (const Entry &e : kPresets)
    known += (known.empty() ? "" : ", ") + std::string(e.name);
  throw std::runtime_error("unknown preset '" + name + "' (known: " + known + ")");
}

std::vector<std::string> presetNames() {
  std::vector<std::string> names;
  for (const Entry &e : kPresets)
    names.emplace_back(e.name);
  return names;
}

} // namespace llama
