#include "runtime/cli/eval.h"

#include "runtime/data/shards.h"
#include "runtime/program/aligned_buffer.h"
#include "runtime/train/checkpoint_dir.h"
#include "runtime/cli/eval_tasks.h"
#include "runtime/cli/flags.h"
#include "runtime/program/program_check.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <vector>

namespace llamart::cli {

using train::load_model_weights;

const char *const kEvalUsage =
    R"usage(usage: %s eval --checkpoint P (--data DIR | --tokenizer M --tasks FILE.jsonl) [options]
  --checkpoint P          run dir, checkpoint dir, .safetensors file, HF or Meta folder
  --data DIR              token shards: prints "loss: X" (mean cross-entropy per
                          token over the split) and "perplexity: exp(X)"
  --split NAME            shards NAME_*.tok (default val)
  --batches N             only the first N batches of windows (default: all)
  --tokenizer M           tokenizer.model, HF tokenizer.json or a folder (with --tasks)
  --tasks FILE.jsonl      {"context": str, "choices": [str, ...], "label": int}
                          per line: prints "accuracy: K/N = X"
  --normalize none|length rank choices by total log-likelihood (default) or
                          by log-likelihood per token
  --details FILE.jsonl    also write every choice's tokens and log-likelihood
)usage";

namespace {

void warn(const std::string &m) { std::fprintf(stderr, "warning: %s\n", m.c_str()); }

template <typename T>
EvalLossResult eval_loss_impl(const ProgramInfo &program, const EvalLossOptions &o) {
  // File order (no shuffle): the windows, and hence the number, depend only
  // on the data.
  const data::Dataset data(o.data_dir, o.split, program.seq_len,
                           static_cast<uint64_t>(program.vocab_size), /*seed=*/0,
                           /*shuffle=*/false);
  const int64_t windows = static_cast<int64_t>(data.num_windows());
  const int64_t batch = program.batch, seq = program.seq_len;
  int64_t batches = (windows + batch - 1) / batch;
  if (o.batches > 0)
    batches = std::min(batches, o.batches);

  AlignedBuffer<T> params(static_cast<size_t>(program.param_numel));
  load_model_weights<T>(program, o.checkpoint, params.data(), warn);
  AlignedBuffer<int32_t> tokens(static_cast<size_t>(batch * seq));
  AlignedBuffer<int32_t> targets(static_cast<size_t>(batch * seq));
  AlignedBuffer<uint8_t> arena(static_cast<size_t>(program.eval_arena_bytes));
  const int32_t ignore = static_cast<int32_t>(program.ignore_index);

  EvalLossResult r;
  double weighted = 0.0;
  for (int64_t b = 0; b < batches; ++b) {
    int64_t scored = 0;
    for (int64_t row = 0; row < batch; ++row) {
      int32_t *tok = tokens.data() + row * seq;
      int32_t *tgt = targets.data() + row * seq;
      const int64_t w = b * batch + row;
      if (w < windows) {
        data.window(0, static_cast<uint64_t>(w), tok, tgt);
        ++r.windows;
        scored += static_cast<int64_t>(std::count_if(tgt, tgt + seq, [&](int32_t t) {
          return t != ignore;
        }));
      } else { // padding row of the last batch: nothing scored
        std::fill(tok, tok + seq, 0);
        std::fill(tgt, tgt + seq, ignore);
      }
    }
    if (scored == 0)
      continue;
    double loss = 0.0;
    program.eval_loss(params.data(), tokens.data(), targets.data(), arena.data(), &loss);
    weighted += loss * static_cast<double>(scored);
    r.tokens += scored;
  }
  if (r.tokens == 0)
    throw std::runtime_error("--data: " + o.data_dir + ": no target of the " + o.split +
                             " split is scored");
  r.loss = weighted / static_cast<double>(r.tokens);
  r.perplexity = std::exp(r.loss);
  return r;
}

Normalize parse_normalize(const std::string &text) {
  if (text == "none")
    return Normalize::None;
  if (text == "length")
    return Normalize::Length;
  throw UsageError("--normalize: expected none or length, got '" + text + "'");
}

} // namespace

EvalLossResult run_eval_loss(const ProgramInfo &program, const EvalLossOptions &options) {
  validate_program(program);
  if (options.batches < 0)
    throw std::runtime_error("--batches: must be >= 0");
  if (program.dtype == DType::F64)
    return eval_loss_impl<double>(program, options);
  return eval_loss_impl<float>(program, options);
}

int cmd_eval(const ProgramInfo &program, int argc, char **argv) {
  const Flags f("eval", argc, argv, 2,
                {{"checkpoint", true}, {"data", true}, {"split", true},
                 {"batches", true}, {"tokenizer", true}, {"tasks", true},
                 {"normalize", true}, {"details", true}});
  const bool data_mode = f.has("data"), task_mode = f.has("tasks");
  if (data_mode == task_mode)
    throw UsageError("eval: give either --data DIR (loss, perplexity) or --tasks "
                     "FILE.jsonl (multiple-choice accuracy)");
  const std::vector<const char *> data_only = {"split", "batches"};
  const std::vector<const char *> tasks_only = {"tokenizer", "normalize", "details"};
  for (const char *flag : data_mode ? tasks_only : data_only)
    if (f.has(flag))
      throw UsageError(std::string("eval: --") + flag + " applies to --" +
                       (data_mode ? "tasks" : "data") + " only");

  if (data_mode) {
    EvalLossOptions o;
    o.checkpoint = f.required("checkpoint");
    o.data_dir = f.required("data");
    o.split = f.str("split", o.split);
    o.batches = f.i64("batches", 0);
    if (f.has("batches") && o.batches < 1)
      throw UsageError("--batches: must be >= 1");
    const EvalLossResult r = run_eval_loss(program, o);
    std::printf("windows: %lld\ntokens: %lld\nloss: %.9g\nperplexity: %.9g\n",
                static_cast<long long>(r.windows), static_cast<long long>(r.tokens),
                r.loss, r.perplexity);
    return 0;
  }

  TaskOptions o;
  o.checkpoint = f.required("checkpoint");
  o.tokenizer = f.required("tokenizer");
  o.tasks = f.required("tasks");
  o.normalize = parse_normalize(f.str("normalize", "none"));
  o.details = f.str("details", "");
  const TaskResult r = run_eval_tasks(program, o);
  std::printf("accuracy: %lld/%lld = %.4f\n", static_cast<long long>(r.correct),
              static_cast<long long>(r.total), r.accuracy());
  return 0;
}

} // namespace llamart::cli
