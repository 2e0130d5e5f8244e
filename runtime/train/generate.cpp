#include "runtime/train/generate.h"

#include "runtime/train/aligned_buffer.h"
#include "runtime/train/checkpoint_dir.h"
#include "runtime/train/program_check.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <stdexcept>

namespace llamart::train {

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

template <typename T>
GenerateResult generate_impl(const ProgramInfo &program,
                             const GenerateOptions &options) {
  if (!program.logits || program.gen_batch < 1)
    throw std::runtime_error(std::string("program ") + program.model_name +
                             ": was compiled without a logits function");
  sentencepiece::SentencePieceProcessor sp;
  const auto status = sp.Load(options.tokenizer);
  if (!status.ok())
    throw std::runtime_error(options.tokenizer + ": cannot load tokenizer: " +
                             status.ToString());
  const int64_t pieces = sp.GetPieceSize();
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

  GenerateResult result;
  if (sp.bos_id() >= 0)
    result.ids.push_back(sp.bos_id());
  std::vector<int> prompt_ids;
  const auto encoded = sp.Encode(options.prompt, &prompt_ids);
  if (!encoded.ok())
    throw std::runtime_error("--prompt: cannot encode: " + encoded.ToString());
  result.ids.insert(result.ids.end(), prompt_ids.begin(), prompt_ids.end());
  if (result.ids.empty())
    throw std::runtime_error("--prompt: empty, and " + options.tokenizer +
                             " has no BOS token to start from");
  result.prompt_tokens = static_cast<int64_t>(result.ids.size());

  const int64_t seq_len = program.seq_len, vocab = program.vocab_size;
  AlignedBuffer<int32_t> tokens(static_cast<size_t>(program.gen_batch * seq_len));
  AlignedBuffer<T> logits(static_cast<size_t>(program.gen_batch * seq_len * vocab));
  AlignedBuffer<uint8_t> arena(static_cast<size_t>(program.logits_arena_bytes));
  std::vector<double> last(static_cast<size_t>(pieces));
  Rng rng(options.seed);
  const int eos = sp.eos_id();

  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < options.max_tokens; ++i) {
    const int64_t len = std::min<int64_t>(static_cast<int64_t>(result.ids.size()), seq_len);
    std::fill(tokens.data(), tokens.data() + tokens.size(), 0);
    std::copy(result.ids.end() - len, result.ids.end(), tokens.data());
    program.logits(params.data(), tokens.data(), arena.data(), logits.data());
    // Only ids the tokenizer can decode are candidates (the model's vocab
    // may be padded past the tokenizer's).
    const T *row = logits.data() + (len - 1) * vocab;
    for (int64_t v = 0; v < pieces; ++v)
      last[v] = static_cast<double>(row[v]);
    const int32_t next = sample_token(last.data(), pieces, options.sampling, rng);
    result.ids.push_back(next);
    ++result.new_tokens;
    if (next == eos)
      break;
  }
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const std::vector<int> all(result.ids.begin(), result.ids.end());
  const auto decoded = sp.Decode(all, &result.text);
  if (!decoded.ok())
    throw std::runtime_error(options.tokenizer + ": cannot decode: " +
                             decoded.ToString());
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

} // namespace llamart::train
