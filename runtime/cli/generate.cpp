#include "runtime/cli/generate.h"

#include "runtime/program/aligned_buffer.h"
#include "runtime/train/checkpoint_dir.h"
#include "runtime/program/program_check.h"
#include "runtime/tokenizer/tokenizer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <type_traits>

namespace llamart::cli {

using train::load_model_weights;

void SamplingConfig::validate() const {
  if (!(temperature >= 0.0) || !std::isfinite(temperature))
    throw std::runtime_error("--temperature: must be >= 0");
  if (top_k < 0)
    throw std::runtime_error("--top-k: must be >= 0");
  if (!(top_p > 0.0 && top_p <= 1.0))
    throw std::runtime_error("--top-p: must be in (0, 1]");
}

int32_t sample_token(const double *logits, int64_t n,
                     const SamplingConfig &config, Rng &rng) {
  if (n < 1)
    throw std::runtime_error("sample_token: empty vocabulary");
  if (config.temperature <= 0.0)
    return static_cast<int32_t>(std::max_element(logits, logits + n) - logits);

  // Candidates by decreasing logit; ties keep index order so a draw is a
  // function of the logits and the RNG state only.
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  int64_t keep = n;
  if (config.top_k > 0 && config.top_k < n) {
    keep = config.top_k;
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_logit);
  } else {
    std::sort(order.begin(), order.end(), by_logit);
  }

  std::vector<double> prob(static_cast<size_t>(keep));
  const double top = logits[order[0]];
  double total = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    prob[i] = std::exp((logits[order[i]] - top) / config.temperature);
    total += prob[i];
  }
  if (config.top_p < 1.0) {
    // Smallest prefix whose probability reaches top_p (at least one token).
    double cumulative = 0.0;
    int64_t nucleus = 0;
    while (nucleus < keep) {
      cumulative += prob[nucleus++] / total;
      if (cumulative >= config.top_p)
        break;
    }
    keep = nucleus;
    total = std::accumulate(prob.begin(), prob.begin() + keep, 0.0);
  }
  const double u = rng.uniform() * total;
  double cumulative = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    cumulative += prob[i];
    if (u < cumulative)
      return order[i];
  }
  return order[keep - 1]; // u within rounding of the total
}

namespace {

// The next-token logits of the sequence's last position, restricted to the
// tokenizer's pieces (the model's vocab may be padded past them).
template <typename T>
void copy_row(const T *row, int64_t pieces, std::vector<double> &out) {
  for (int64_t v = 0; v < pieces; ++v)
    out[static_cast<size_t>(v)] = static_cast<double>(row[v]);
}

// The KV-cache steps generate_cached drives: the host functions on host
// buffers, or a device generator.
struct CachedSteps {
  std::function<void(const int32_t *tokens, int64_t pos)> prefill, decode;
  // Row 0's logits at chunk index t of the last step, the tokenizer's pieces.
  std::function<void(int64_t t, std::vector<double> &out)> row;
};

// Generation with the KV cache: the prompt in prefill chunks (the last one
// padded; a chunk that would overrun the cache is done token by token), then
// one decode call per new token. Row 0 of the gen_batch rows is the
// sequence. Stops at a stop token (EOS, or one of generation_config.json's),
// after max_tokens, or when the cache is full.
void generate_cached(const ProgramInfo &program, const CachedSteps &steps,
                     const GenerateOptions &options, int64_t pieces,
                     const tokenizer::Tokenizer &tok, GenerateResult &result) {
  const int64_t chunk = program.prefill_chunk, capacity = program.kv_capacity,
                rows = program.gen_batch;
  if (static_cast<int64_t>(result.ids.size()) > capacity)
    throw std::runtime_error("--prompt: " + std::to_string(result.ids.size()) +
                             " tokens do not fit the KV cache of " +
                             std::to_string(capacity) +
                             " positions (llama-compile --kv-capacity)");
  AlignedBuffer<int32_t> tokens(static_cast<size_t>(rows * chunk));
  std::vector<double> last(static_cast<size_t>(pieces));
  Rng rng(options.seed);

  const auto t0 = std::chrono::steady_clock::now();
  const int64_t prompt = static_cast<int64_t>(result.ids.size());
  int64_t pos = 0;
  while (pos < prompt) {
    std::fill(tokens.data(), tokens.data() + tokens.size(), 0);
    const int64_t n = std::min(chunk, prompt - pos);
    if (pos + chunk <= capacity) {
      std::copy_n(result.ids.begin() + pos, n, tokens.data());
      steps.prefill(tokens.data(), pos);
      steps.row(n - 1, last);
      pos += n;
    } else {
      tokens[0] = result.ids[static_cast<size_t>(pos)];
      steps.decode(tokens.data(), pos);
      steps.row(0, last);
      ++pos;
    }
  }
  const auto t1 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < options.max_tokens; ++i) {
    const int32_t next = sample_token(last.data(), pieces, options.sampling, rng);
    result.ids.push_back(next);
    ++result.new_tokens;
    if (tok.is_stop(next) || i + 1 == options.max_tokens)
      break;
    if (pos >= capacity) {
      std::fprintf(stderr, "warning: the KV cache is full (%lld positions); "
                           "generation stops here\n",
                   static_cast<long long>(capacity));
      break;
    }
    std::fill(tokens.data(), tokens.data() + rows, 0);
    tokens[0] = next;
    steps.decode(tokens.data(), pos);
    steps.row(0, last);
    ++pos;
  }
  const auto t2 = std::chrono::steady_clock::now();
  result.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();
  result.seconds = std::chrono::duration<double>(t2 - t0).count();
  result.used_kv_cache = true;
}

// The host functions on host buffers (the cache zero-filled).
template <typename T>
void generate_cached_host(const ProgramInfo &program, const T *params,
                          const GenerateOptions &options, int64_t pieces,
                          const tokenizer::Tokenizer &tok, GenerateResult &result) {
  const int64_t vocab = program.vocab_size;
  AlignedBuffer<T> cache(static_cast<size_t>(program.kv_cache_bytes) / sizeof(T));
  std::fill(cache.data(), cache.data() + cache.size(), T(0));
  AlignedBuffer<uint8_t> arena(static_cast<size_t>(
      std::max(program.prefill_arena_bytes, program.decode_arena_bytes)));
  AlignedBuffer<T> logits(
      static_cast<size_t>(program.gen_batch * program.prefill_chunk * vocab));
  CachedSteps steps;
  steps.prefill = [&](const int32_t *tokens, int64_t pos) {
    program.prefill(params, tokens, pos, cache.data(), arena.data(), logits.data());
  };
  steps.decode = [&](const int32_t *tokens, int64_t pos) {
    program.decode(params, tokens, pos, cache.data(), arena.data(), logits.data());
  };
  steps.row = [&](int64_t t, std::vector<double> &out) {
    copy_row(logits.data() + t * vocab, pieces, out);
  };
  generate_cached(program, steps, options, pieces, tok, result);
}

// The device generator (a --target cuda program): the weights uploaded once,
// one fp32 logits row read back per step.
void generate_cached_device(const ProgramInfo &program, const float *params,
                            const GenerateOptions &options, int64_t pieces,
                            const tokenizer::Tokenizer &tok, GenerateResult &result) {
  std::unique_ptr<DeviceGenerator> gen(program.open_generator(program));
  gen->upload(params);
  result.device = gen->describe();
  std::vector<float> row(static_cast<size_t>(program.vocab_size));
  CachedSteps steps;
  steps.prefill = [&](const int32_t *tokens, int64_t pos) { gen->prefill(tokens, pos); };
  steps.decode = [&](const int32_t *tokens, int64_t pos) { gen->decode(tokens, pos); };
  steps.row = [&](int64_t t, std::vector<double> &out) {
    gen->logits(t, row.data());
    copy_row(row.data(), pieces, out);
  };
  generate_cached(program, steps, options, pieces, tok, result);
}

// Without a KV cache (programs compiled without @prefill/@decode, or
// --no-kv-cache): the last seq_len tokens, padded with 0, through the full
// @logits forward for every new token.
template <typename T>
void generate_window(const ProgramInfo &program, const T *params,
                     const GenerateOptions &options, int64_t pieces,
                     const tokenizer::Tokenizer &tok, GenerateResult &result) {
  const int64_t seq_len = program.seq_len, vocab = program.vocab_size;
  AlignedBuffer<int32_t> tokens(static_cast<size_t>(program.gen_batch * seq_len));
  AlignedBuffer<T> logits(static_cast<size_t>(program.gen_batch * seq_len * vocab));
  AlignedBuffer<uint8_t> arena(static_cast<size_t>(program.logits_arena_bytes));
  std::vector<double> last(static_cast<size_t>(pieces));
  Rng rng(options.seed);

  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < options.max_tokens; ++i) {
    const int64_t len = std::min<int64_t>(static_cast<int64_t>(result.ids.size()), seq_len);
    std::fill(tokens.data(), tokens.data() + tokens.size(), 0);
    std::copy(result.ids.end() - len, result.ids.end(), tokens.data());
    program.logits(params, tokens.data(), arena.data(), logits.data());
    // Only ids the tokenizer can decode are candidates (the model's vocab
    // may be padded past the tokenizer's).
    copy_row(logits.data() + (len - 1) * vocab, pieces, last);
    const int32_t next = sample_token(last.data(), pieces, options.sampling, rng);
    result.ids.push_back(next);
    ++result.new_tokens;
    if (tok.is_stop(next))
      break;
  }
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

template <typename T>
GenerateResult generate_impl(const ProgramInfo &program,
                             const GenerateOptions &options) {
  const bool cached = options.kv_cache && program.prefill && program.decode &&
                      program.gen_batch >= 1;
  if (!cached && (!program.logits || program.gen_batch < 1))
    throw std::runtime_error(std::string("program ") + program.model_name +
                             ": was compiled without a logits function");
  // tokenizer.model, tokenizer.json or an HF folder; its errors name the file.
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(options.tokenizer);
  const int64_t pieces = tok.vocab_size();
  if (pieces > program.vocab_size)
    throw std::runtime_error(options.tokenizer + ": has " + std::to_string(pieces) +
                             " pieces, model " + program.model_name +
                             " only " + std::to_string(program.vocab_size) +
                             " tokens");

  AlignedBuffer<T> params(static_cast<size_t>(program.param_numel));
  load_model_weights<T>(program, options.checkpoint, params.data(),
                        [](const std::string &m) {
                          std::fprintf(stderr, "warning: %s\n", m.c_str());
                        });

  // The prompt starts with what encode(text, true) would put first (BOS) but
  // gets no suffix: an add_eos_token config must not end it before the model
  // has said anything.
  GenerateResult result;
  result.ids = tok.special_prefix();
  const std::vector<int32_t> prompt_ids = tok.encode(options.prompt, /*add_special=*/false);
  result.ids.insert(result.ids.end(), prompt_ids.begin(), prompt_ids.end());
  if (result.ids.empty())
    throw std::runtime_error("--prompt: empty, and " + tok.path() +
                             " has no BOS token to start from");
  result.prompt_tokens = static_cast<int64_t>(result.ids.size());
  if (cached && program.open_generator && !options.cpu) {
    if constexpr (std::is_same_v<T, float>)
      generate_cached_device(program, params.data(), options, pieces, tok, result);
    else
      throw std::logic_error("a device program has fp32 weights");
  } else if (cached) {
    generate_cached_host<T>(program, params.data(), options, pieces, tok, result);
  } else {
    generate_window<T>(program, params.data(), options, pieces, tok, result);
  }
  result.text = tok.decode(result.ids);
  return result;
}

} // namespace

GenerateResult run_generate(const ProgramInfo &program,
                            const GenerateOptions &options) {
  validate_program(program);
  options.sampling.validate();
  if (options.max_tokens < 0)
    throw std::runtime_error("--max-tokens: must be >= 0");
  if (program.dtype == DType::F64)
    return generate_impl<double>(program, options);
  return generate_impl<float>(program, options);
}

} // namespace llamart::cli
