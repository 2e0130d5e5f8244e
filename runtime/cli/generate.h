// `generate`: sampling text from a trained model. With the program's
// @prefill / @decode entry points (single-process binaries have them), the
// prompt goes through prefill in chunks and every new token costs one
// decode step over the KV cache. Without them (or with --no-kv-cache) the
// running sequence (BOS + prompt + sampled tokens, the last seq_len of them
// once it grows longer) sits in row 0 of a [gen_batch, seq_len] token buffer
// padded with 0 and every new token costs a full @logits forward; the model
// is causal, so the padding does not change the logits at the last position.
// A --target cuda program runs prefill and decode on its GPU
// (ProgramInfo::open_generator) unless options.cpu; sampling stays here.
#pragma once
#include "runtime/program/program.h"
#include "runtime/program/rng.h"

#include <cstdint>
#include <string>
#include <vector>

namespace llamart::cli {

struct SamplingConfig {
  double temperature = 0.8; // 0 = greedy (argmax)
  int64_t top_k = 0;        // keep the k most likely tokens; 0 = all
  double top_p = 0.95;      // nucleus: smallest set with probability >= top_p
  // Throws std::runtime_error naming the offending flag.
  void validate() const;
};

// Picks a token from logits[0, n): argmax at temperature 0 (the lowest index
// among ties), otherwise a draw from softmax(logits / temperature) restricted
// by top-k then top-p.
int32_t sample_token(const double *logits, int64_t n,
                     const SamplingConfig &config, Rng &rng);

struct GenerateOptions {
  std::string checkpoint; // run dir, checkpoint dir or .safetensors file
  std::string tokenizer;  // tokenizer.model, tokenizer.json or an HF folder
  std::string prompt;
  int64_t max_tokens = 64;
  SamplingConfig sampling;
  uint64_t seed = 1234;
  bool kv_cache = true;   // use @prefill / @decode when the program has them
  bool cpu = false;       // a --target cuda program: generate on the host
};

struct GenerateResult {
  std::vector<int32_t> ids; // BOS (if any) + prompt + continuation
  int64_t prompt_tokens = 0;
  int64_t new_tokens = 0;
  std::string text;         // decoded prompt + continuation
  double seconds = 0.0;     // time spent in the model and sampling
  double prompt_seconds = 0.0; // of which the prompt's prefill (KV cache only)
  bool used_kv_cache = false;
  std::string device;       // the device generator's describe(); empty on the host
};

GenerateResult run_generate(const ProgramInfo &program,
                            const GenerateOptions &options);

} // namespace llamart::cli
