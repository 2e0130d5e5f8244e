#include "runtime/cli/eval_tasks.h"

#include "runtime/checkpoint/safetensors.h"
#include "runtime/program/aligned_buffer.h"
#include "runtime/train/checkpoint_dir.h"
#include "runtime/program/program_check.h"
#include "runtime/tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace llamart::cli {

using train::load_model_weights;

using nlohmann::json;

std::vector<TaskItem> read_task_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::vector<TaskItem> items;
  std::string text;
  for (int64_t line = 1; std::getline(in, text); ++line) {
    if (std::all_of(text.begin(), text.end(),
                    [](unsigned char c) { return std::isspace(c); }))
      continue;
    const std::string where = path + ":" + std::to_string(line);
    const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object())
      throw std::runtime_error(where + ": not a JSON object");
    TaskItem item;
    item.line = line;
    if (!j.contains("context") || !j["context"].is_string())
      throw std::runtime_error(where + ": \"context\" must be a string");
    item.context = j["context"].get<std::string>();
    if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty())
      throw std::runtime_error(where + ": \"choices\" must be a non-empty list of strings");
    for (const json &c : j["choices"]) {
      if (!c.is_string())
        throw std::runtime_error(where + ": \"choices\" must be a non-empty list of strings");
      item.choices.push_back(c.get<std::string>());
    }
    if (!j.contains("label") || !j["label"].is_number_integer())
      throw std::runtime_error(where + ": \"label\" must be an integer");
    item.label = j["label"].get<int64_t>();
    if (item.label < 0 || item.label >= static_cast<int64_t>(item.choices.size()))
      throw std::runtime_error(where + ": \"label\" " + std::to_string(item.label) +
                               " is not the index of one of the " +
                               std::to_string(item.choices.size()) + " choices");
    items.push_back(std::move(item));
  }
  if (in.bad())
    throw std::runtime_error(path + ": read error");
  if (items.empty())
    throw std::runtime_error(path + ": holds no task items");
  return items;
}

template <typename T>
std::vector<double> score_continuations(const ProgramInfo &program, const T *params,
                                        const std::vector<ContinuationRequest> &requests) {
  if (!program.logits || program.gen_batch < 1)
    throw std::runtime_error(std::string("program ") + program.model_name +
                             ": was compiled without a logits function");
  const int64_t seq = program.seq_len, vocab = program.vocab_size;
  for (size_t i = 0; i < requests.size(); ++i) {
    const ContinuationRequest &r = requests[i];
    const std::string where = "request " + std::to_string(i);
    if (r.context.empty())
      throw std::runtime_error(where + ": empty context (nothing to predict the "
                                       "first continuation token from)");
    if (r.continuation.empty())
      throw std::runtime_error(where + ": the continuation has no tokens");
    if (static_cast<int64_t>(r.continuation.size()) > seq)
      throw std::runtime_error(where + ": the continuation has " +
                               std::to_string(r.continuation.size()) +
                               " tokens, more than seq_len " + std::to_string(seq) +
                               " can score");
    for (const auto *part : {&r.context, &r.continuation})
      for (int32_t t : *part)
        if (t < 0 || t >= vocab)
          throw std::runtime_error(where + ": token " + std::to_string(t) +
                                   " is outside the vocabulary [0, " +
                                   std::to_string(vocab) + ")");
  }

  const int64_t rows = program.gen_batch;
  AlignedBuffer<int32_t> tokens(static_cast<size_t>(rows * seq));
  AlignedBuffer<T> logits(static_cast<size_t>(rows * seq * vocab));
  AlignedBuffer<uint8_t> arena(static_cast<size_t>(program.logits_arena_bytes));
  std::vector<double> out(requests.size(), 0.0);
  std::vector<int32_t> all;
  for (size_t start = 0; start < requests.size(); start += static_cast<size_t>(rows)) {
    const size_t count = std::min(requests.size() - start, static_cast<size_t>(rows));
    // Rows past the request are padding; causal attention keeps them from
    // changing the logits of the positions read below.
    std::fill(tokens.data(), tokens.data() + tokens.size(), 0);
    for (size_t r = 0; r < count; ++r) {
      const ContinuationRequest &req = requests[start + r];
      all = req.context;
      all.insert(all.end(), req.continuation.begin(), req.continuation.end());
      const size_t keep = std::min(all.size(), static_cast<size_t>(seq + 1));
      // Inputs: the kept tokens but the last (which is only predicted).
      std::copy(all.end() - keep, all.end() - 1, tokens.data() + r * seq);
    }
    program.logits(params, tokens.data(), arena.data(), logits.data());
    for (size_t r = 0; r < count; ++r) {
      const ContinuationRequest &req = requests[start + r];
      const size_t len = std::min(req.context.size() + req.continuation.size(),
                                  static_cast<size_t>(seq + 1));
      const size_t first = len - req.continuation.size();
      double sum = 0.0;
      // Token j of the kept window is predicted by the logits at j - 1.
      for (size_t j = first; j < len; ++j) {
        const T *row = logits.data() + (r * seq + (j - 1)) * vocab;
        double max = -INFINITY;
        for (int64_t v = 0; v < vocab; ++v)
          max = std::max(max, static_cast<double>(row[v]));
        double total = 0.0;
        for (int64_t v = 0; v < vocab; ++v)
          total += std::exp(static_cast<double>(row[v]) - max);
        const int32_t target = req.continuation[j - first];
        sum += static_cast<double>(row[target]) - max - std::log(total);
      }
      out[start + r] = sum;
    }
  }
  return out;
}

namespace {

// The tokens of `text` alone; the tokenizer's errors (text that is not
// UTF-8, for tokenizer.json) get the item's place in front.
std::vector<int32_t> encode(const tokenizer::Tokenizer &tok, const std::string &text,
                            const std::string &where) {
  try {
    return tok.encode(text, /*add_special=*/false);
  } catch (const std::runtime_error &e) {
    throw std::runtime_error(where + ": cannot encode: " + e.what());
  }
}

// lm-evaluation-harness's split of (context, choice) into tokens; see the
// header.
ContinuationRequest make_request(const tokenizer::Tokenizer &tok, std::string context,
                                 std::string choice, const std::string &where) {
  size_t end = context.size();
  while (end > 0 && std::isspace(static_cast<unsigned char>(context[end - 1])))
    --end;
  choice = context.substr(end) + choice;
  context.resize(end);

  // The context starts as encode(text, true) would (BOS); the suffix (an
  // add_eos_token EOS) is left out, as lm-evaluation-harness does.
  ContinuationRequest req;
  req.context = tok.special_prefix();
  const std::vector<int32_t> context_ids = encode(tok, context, where);
  const std::vector<int32_t> whole = encode(tok, context + choice, where);
  req.context.insert(req.context.end(), context_ids.begin(), context_ids.end());
  if (whole.size() > context_ids.size())
    req.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(context_ids.size()),
                            whole.end());
  if (req.continuation.empty())
    throw std::runtime_error(where + ": has no tokens after the context");
  if (req.context.empty())
    throw std::runtime_error(where + ": empty context and the tokenizer has no BOS");
  return req;
}

json details_line(const ItemResult &item) {
  json j;
  j["line"] = item.line;
  j["label"] = item.label;
  j["predicted"] = item.predicted;
  j["choices"] = json::array();
  for (const ChoiceResult &c : item.choices)
    j["choices"].push_back({{"context_tokens", c.context},
                            {"continuation_tokens", c.continuation},
                            {"loglik", c.loglik},
                            {"score", c.score}});
  return j;
}

template <typename T>
TaskResult eval_tasks_impl(const ProgramInfo &program, const TaskOptions &o) {
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(o.tokenizer);
  if (tok.vocab_size() > program.vocab_size)
    throw std::runtime_error(o.tokenizer + ": has " + std::to_string(tok.vocab_size()) +
                             " pieces, model " + program.model_name + " only " +
                             std::to_string(program.vocab_size) + " tokens");
  const std::vector<TaskItem> items = read_task_file(o.tasks);

  TaskResult result;
  std::vector<ContinuationRequest> requests;
  for (const TaskItem &item : items) {
    ItemResult r;
    r.line = item.line;
    r.label = item.label;
    for (size_t c = 0; c < item.choices.size(); ++c) {
      const std::string where =
          o.tasks + ":" + std::to_string(item.line) + ": choice " + std::to_string(c);
      requests.push_back(make_request(tok, item.context, item.choices[c], where));
      if (static_cast<int64_t>(requests.back().continuation.size()) > program.seq_len)
        throw std::runtime_error(where + ": has " +
                                 std::to_string(requests.back().continuation.size()) +
                                 " tokens, more than seq_len " +
                                 std::to_string(program.seq_len) + " can score");
      ChoiceResult choice;
      choice.context = requests.back().context;
      choice.continuation = requests.back().continuation;
      r.choices.push_back(std::move(choice));
    }
    result.items.push_back(std::move(r));
  }

  AlignedBuffer<T> params(static_cast<size_t>(program.param_numel));
  load_model_weights<T>(program, o.checkpoint, params.data(), [](const std::string &m) {
    std::fprintf(stderr, "warning: %s\n", m.c_str());
  });
  const std::vector<double> logliks = score_continuations<T>(program, params.data(), requests);

  size_t next = 0;
  for (ItemResult &item : result.items) {
    for (ChoiceResult &c : item.choices) {
      c.loglik = logliks[next++];
      c.score = o.normalize == Normalize::Length
                    ? c.loglik / static_cast<double>(c.continuation.size())
                    : c.loglik;
    }
    // Ties go to the first choice, so the answer is a function of the scores.
    item.predicted = 0;
    for (size_t c = 1; c < item.choices.size(); ++c)
      if (item.choices[c].score > item.choices[item.predicted].score)
        item.predicted = static_cast<int64_t>(c);
    result.correct += item.predicted == item.label;
    ++result.total;
  }

  if (!o.details.empty()) {
    std::string text;
    for (const ItemResult &item : result.items)
      text += details_line(item).dump() + "\n";
    ckpt::atomic_write_file(o.details, text);
  }
  return result;
}

} // namespace

TaskResult run_eval_tasks(const ProgramInfo &program, const TaskOptions &options) {
  validate_program(program);
  if (program.dtype == DType::F64)
    return eval_tasks_impl<double>(program, options);
  return eval_tasks_impl<float>(program, options);
}

template std::vector<double> score_continuations<float>(const ProgramInfo &, const float *,
                                                        const std::vector<ContinuationRequest> &);
template std::vector<double> score_continuations<double>(const ProgramInfo &, const double *,
                                                         const std::vector<ContinuationRequest> &);

} // namespace llamart::cli
