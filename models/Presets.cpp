// Named model sizes. The LLaMA ones follow the paper (Touvron et al. 2023,
// Table 2): vocab 32000, SwiGLU width llamaFfnWidth(dim), RMSNorm eps 1e-6,
// RoPE theta 1e4, context 2048, untied embeddings. Counts are in
// /work/shared/REFERENCE.md and asserted by test/unit/models_test.cpp.
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
