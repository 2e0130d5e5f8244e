// Zero-shot multiple-choice evaluation as in the LLaMA paper (Touvron et al.
// 2023, section 3): for every choice, the log-likelihood of its tokens given
// the context; the answer is the choice with the highest score (the raw sum,
// or with --normalize length the mean per token), ties to the first.
//
// Tasks are JSONL, one item per line:
//   {"context": "The capital of France is", "choices": [" Paris", " Rome"], "label": 0}
//
// Tokenization follows lm-evaluation-harness, so the split between context
// and continuation does not depend on how the tokenizer merges across it:
// trailing whitespace of the context moves to the front of the choice, then
// context tokens = encode(context), continuation tokens =
// encode(context + choice) after its first len(context tokens) tokens. The
// scored sequence is the tokenizer's special prefix (BOS) + context tokens +
// continuation tokens; when longer than seq_len + 1 it keeps its last
// seq_len + 1 tokens (left truncation).
#pragma once
#include "runtime/program/program.h"

#include <cstdint>
#include <string>
#include <vector>

namespace llamart::cli {

struct TaskItem {
  std::string context;
  std::vector<std::string> choices;
  int64_t label = 0;
  int64_t line = 0; // 1-based line in the file, for messages
};

// Reads a tasks file; blank lines are skipped. Throws "<path>:<line>: <problem>"
// for malformed JSON, missing or mistyped fields, no choices, or a label
// outside [0, choices). An empty file is an error too.
std::vector<TaskItem> read_task_file(const std::string &path);

// What to score: the continuation's tokens after the context's (which
// includes BOS when there is one; it must not be empty).
struct ContinuationRequest {
  std::vector<int32_t> context;
  std::vector<int32_t> continuation;
};

// Sum over the continuation's tokens of log softmax(logits)[token] (natural
// log, over the whole model vocabulary), one `program.logits` call per
// gen_batch requests. Throws when a continuation has no tokens or more than
// seq_len, or when a token is outside the vocabulary.
template <typename T>
std::vector<double> score_continuations(const ProgramInfo &program, const T *params,
                                        const std::vector<ContinuationRequest> &requests);

enum class Normalize { None, Length };

struct TaskOptions {
  std::string checkpoint; // run dir, checkpoint dir, .safetensors file or HF folder
  std::string tokenizer;  // tokenizer.model, tokenizer.json or an HF folder
  std::string tasks;      // JSONL
  Normalize normalize = Normalize::None;
  std::string details;    // optional JSONL: per item, per choice tokens and scores
};

struct ChoiceResult {
  std::vector<int32_t> context;      // as scored: BOS + context tokens
  std::vector<int32_t> continuation;
  double loglik = 0.0;
  double score = 0.0; // loglik, or loglik / continuation tokens
};

struct ItemResult {
  int64_t line = 0;
  int64_t label = 0;
  int64_t predicted = 0;
  std::vector<ChoiceResult> choices;
};

struct TaskResult {
  int64_t correct = 0;
  int64_t total = 0;
  std::vector<ItemResult> items;
  double accuracy() const { return total ? double(correct) / double(total) : 0.0; }
};

TaskResult run_eval_tasks(const ProgramInfo &program, const TaskOptions &options);

} // namespace llamart::cli
