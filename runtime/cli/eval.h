// `eval`: how good a trained model is.
//
//   OUT eval --checkpoint P --data DIR [--split val] [--batches N]
//       mean cross-entropy of every window of a token split (forward only,
//       program.eval_loss) and its perplexity exp(loss);
//   OUT eval --checkpoint P --tokenizer M --tasks FILE.jsonl [--normalize none|length]
//       multiple-choice accuracy, scored as in the LLaMA paper
//       (eval_tasks.h).
#pragma once
#include "runtime/program/program.h"

#include <cstdint>
#include <string>

namespace llamart::cli {

struct EvalLossOptions {
  std::string checkpoint; // run dir, checkpoint dir, .safetensors file or HF folder
  std::string data_dir;
  std::string split = "val";
  int64_t batches = 0; // 0: every window of the split
};

struct EvalLossResult {
  double loss = 0.0;       // mean cross-entropy per scored token (nats)
  double perplexity = 0.0; // exp(loss)
  int64_t windows = 0;     // windows of seq_len + 1 tokens evaluated
  int64_t tokens = 0;      // targets scored
};

// Windows are read in file order, `batch` per eval_loss call; a last partial
// batch is padded with rows whose targets are all ignore_index, and batch
// losses are weighted by their scored targets, so the result is the exact
// token mean over the windows evaluated (--batches N: the first N * batch).
EvalLossResult run_eval_loss(const ProgramInfo &program, const EvalLossOptions &options);

// The `eval` subcommand (both modes) and its --help text (printf format, argv[0]).
int cmd_eval(const ProgramInfo &program, int argc, char **argv);
extern const char *const kEvalUsage;

} // namespace llamart::cli
