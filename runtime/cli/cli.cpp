#include "runtime/cli/cli.h"

#include "runtime/comm/comm.h"
#include "runtime/cli/eval.h"
#include "runtime/cli/export.h"
#include "runtime/train/fault_inject.h"
#include "runtime/cli/flags.h"
#include "runtime/cli/generate.h"
#include "runtime/program/partition.h"
#include "runtime/observe/plot.h"
#include "runtime/program/program_check.h"
#include "runtime/train/schedule.h"
#include "runtime/train/trainer.h"
#include "runtime/cli/gradcheck.h"
#include "runtime/cli/memory_probe.h"
#include "runtime/cli/verify.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

namespace llamart {

namespace {

using cli::Flags;
using cli::FlagSpec;
using cli::UsageError;

const char *kTrainUsage = R"(usage: %s train --data DIR --steps N [options]
  --data DIR              token shards (train_*.tok, optional val_*.tok)
  --steps N               total optimizer updates (the LR schedule's length)
  --run-dir DIR           checkpoints, metrics.jsonl and metrics.png (default ./run)
  --tensorboard           also write TensorBoard event files to DIR/tensorboard
  --resume                continue from DIR/checkpoints/LATEST if present
  --checkpoint-every K    also checkpoint every K updates (default 0: at the end)
  --keep-last K           checkpoints to keep (default 3; 0 keeps all)
  --eval-every K          val loss every K updates (default 0: at the end only)
  --eval-batches M        val batches per evaluation (default 8)
  --lr X                  peak learning rate (default 3e-4)
  --min-lr-ratio R        final LR / peak after cosine decay (default 0.1)
  --warmup W              linear warmup updates (default min(2000, max(1, N/20)))
  --weight-decay X        AdamW decoupled decay of 2-D params (default 0.1)
  --beta1 X --beta2 X     AdamW moments (default 0.9, 0.95)
  --eps X                 AdamW epsilon (default 1e-8)
  --grad-clip X           global gradient L2 norm limit (default 1.0; 0 = off)
  --grad-accum A          micro-batches per update (default 1)
  --seed S                init and data order (default 1234)
  --no-shuffle            read windows in file order
  --init-from-checkpoint P  start from these weights (fresh optimizer, step 0): a run,
                          checkpoint, .safetensors file, Hugging Face model folder or
                          Meta folder (params.json + consolidated.NN.pth)
  --stop-at K             checkpoint and exit after update K (schedule keeps N)
  --quiet                 no progress lines
  --spike-window W        accepted updates the spike z-scores use (default 32; 0 = off)
  --spike-zscore Z        skip an update whose loss or log grad norm has z > Z (default 6; 0 = off)
  --max-skips-before-rollback R  R skips with < R good updates between them roll
                          back to the checkpoint before them (default 3; 0 = never)
  --inject nan@N,spike@N,bitflip@N,kill@N  faults on the N-th update attempt, to
                          test recovery (bitflip: one high exponent bit of one GEMM
                          output; kill: the job's last rank dies by SIGKILL, first
                          launch only, for llama-run --max-restarts)
  --verify-gemm-every K   checksum every GEMM of every K-th update (and, when K > 0, of
                          one with an injected bitflip); a failing update is recomputed
                          once, then skipped if it fails again (default 0 = off)
)";

const char *kVerifyUsage =
    R"(usage: %s verify --weights W.safetensors --batch-file I.safetensors --out G.safetensors
  runs one train_step on the weights (every param by HF name) and
  input_ids [batch, seq_len + 1] (int32/int64), writes "loss" and all gradients;
  a partitioned binary runs on its grid (llama-run -n RANKS) with the full
  weights and the global batch and writes the full gradients from rank 0;
  a --target cuda binary runs the step on the GPU
  --cpu                   run the program's CPU step instead of its device step
)";

const char *kGenerateUsage = R"(usage: %s generate --checkpoint P --tokenizer M --prompt TEXT [options]
  --checkpoint P          run dir, checkpoint dir, .safetensors file, HF or Meta folder
  --tokenizer M           tokenizer.model, HF tokenizer.json or a folder holding one
  --prompt TEXT           text to continue (BOS as the tokenizer specifies)
  --max-tokens N          tokens to sample (default 64; stops at EOS)
  --no-kv-cache           recompute the whole window for every token (the path
                          the KV cache is checked against; on the host)
  --cpu                   a --target cuda binary: prefill and decode on the host
                          instead of the GPU
  --temperature T         softmax temperature (default 0.8; 0 = greedy)
  --top-k K               sample among the K most likely (default 0 = off)
  --top-p P               nucleus probability (default 0.95)
  --seed S                sampling seed (default 1234)
)";

const char *kGradcheckUsage = R"(usage: %s gradcheck [--seed S] [--step H] [--tolerance R] [--max-per-tensor N] [--weight-std S]
  Every gradient of a float64 program against central finite differences of
  its loss, on weights from --seed (matrices ~ N(0, S), default 0.2; norm
  gains 1 + 0.1 N(0,1)) and a random batch.
  Exit 0 iff every tensor's relative error is within --tolerance (1e-6).
)";

const char *kMemcheckUsage = R"(usage: %s memcheck [--seed S]
  Allocates what training holds, runs one train step and one evaluation on a
  random batch with the arenas filled with marker bytes, and prints the
  planned and measured arena high-water marks, the bytes allocated and the
  process's peak RSS growth. Fails if a kernel wrote past an arena's end.
  A --target cuda binary measures its device arena the same way and prints the
  device memory its session holds and the growth of the device's used memory.
)";

const char *kInfoUsage = R"(usage: %s info [--json | --config-json]
  prints model, dtype, batch, seq_len, vocab size, parameter count, arena sizes
  and the dp x tp grid (batch, params and arenas are per rank; global_batch and
  full_params are the whole model's); --config-json prints the Hugging Face
  config.json the program was built from
)";

void print_usage(std::FILE *out, const char *argv0) {
  std::fprintf(out,
               "usage: %s <train|verify|gradcheck|generate|eval|export|memcheck|info|plot> [flags]   (%s <command> "
               "--help for its flags)\n",
               argv0, argv0);
}

bool wants_help(int argc, char **argv) {
  for (int i = 2; i < argc; ++i)
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h"))
      return true;
  return false;
}

// Range checks done by library code throw runtime_error; on the command line
// they are usage errors.
template <typename F> void as_usage_error(F &&check) {
  try {
    check();
  } catch (const UsageError &) {
    throw;
  } catch (const std::runtime_error &e) {
    throw UsageError(e.what());
  }
}

int cmd_train(const ProgramInfo &program, int argc, char **argv) {
  const Flags f("train", argc, argv, 2,
                {{"data", true}, {"steps", true}, {"run-dir", true},
                 {"resume", false}, {"checkpoint-every", true},
                 {"keep-last", true}, {"eval-every", true},
                 {"eval-batches", true}, {"lr", true}, {"min-lr-ratio", true},
                 {"warmup", true}, {"weight-decay", true}, {"beta1", true},
                 {"beta2", true}, {"eps", true}, {"grad-clip", true},
                 {"grad-accum", true}, {"seed", true}, {"no-shuffle", false},
                 {"init-from-checkpoint", true}, {"stop-at", true},
                 {"quiet", false}, {"spike-window", true}, {"spike-zscore", true},
                 {"max-skips-before-rollback", true}, {"inject", true},
                 {"verify-gemm-every", true}, {"tensorboard", false}});
  train::TrainOptions o;
  o.data_dir = f.required("data");
  o.steps = f.i64("steps", 0);
  if (!f.has("steps"))
    throw UsageError("train: --steps is required");
  o.run_dir = f.str("run-dir", o.run_dir);
  o.resume = f.has("resume");
  o.checkpoint_every = f.i64("checkpoint-every", o.checkpoint_every);
  const int64_t keep_last = f.i64("keep-last", o.keep_last);
  if (keep_last < 0 || keep_last > 1000000)
    throw UsageError("--keep-last: must be in [0, 1000000]");
  o.keep_last = static_cast<int>(keep_last);
  o.eval_every = f.i64("eval-every", o.eval_every);
  o.eval_batches = f.i64("eval-batches", o.eval_batches);
  o.lr = f.f64("lr", o.lr);
  o.min_lr_ratio = f.f64("min-lr-ratio", o.min_lr_ratio);
  o.warmup = f.i64("warmup", -1);
  if (f.has("warmup") && o.warmup < 0)
    throw UsageError("--warmup: must be >= 0");
  o.adamw.weight_decay = f.f64("weight-decay", o.adamw.weight_decay);
  o.adamw.beta1 = f.f64("beta1", o.adamw.beta1);
  o.adamw.beta2 = f.f64("beta2", o.adamw.beta2);
  o.adamw.eps = f.f64("eps", o.adamw.eps);
  o.grad_clip = f.f64("grad-clip", o.grad_clip);
  o.grad_accum = f.i64("grad-accum", o.grad_accum);
  o.seed = f.u64("seed", o.seed);
  o.shuffle = !f.has("no-shuffle");
  o.init_from_checkpoint = f.str("init-from-checkpoint", "");
  o.stop_at = f.i64("stop-at", 0);
  if (f.has("stop-at") && o.stop_at < 1)
    throw UsageError("--stop-at: must be >= 1");
  o.quiet = f.has("quiet");
  o.tensorboard = f.has("tensorboard");
  o.spike.window = f.i64("spike-window", o.spike.window);
  o.spike.zscore = f.f64("spike-zscore", o.spike.zscore);
  o.spike.max_skips_before_rollback =
      f.i64("max-skips-before-rollback", o.spike.max_skips_before_rollback);
  if (f.has("inject"))
    as_usage_error([&] { o.faults = train::parse_faults(f.str("inject", "")); });
  o.verify_gemm_every = f.i64("verify-gemm-every", 0);
  as_usage_error([&] { train::validate_train_options(o); });

  const train::TrainResult r = train::train(program, o);
  // 128 + signal, the shell's convention, tells a launcher the run was
  // stopped (and checkpointed) rather than finished.
  return r.stop_signal ? 128 + r.stop_signal : 0;
}

int cmd_verify(const ProgramInfo &program, int argc, char **argv) {
  const Flags f("verify", argc, argv, 2,
                {{"weights", true}, {"batch-file", true}, {"out", true},
                 {"cpu", false}});
  cli::VerifyOptions o;
  o.cpu = f.has("cpu");
  o.weights = f.required("weights");
  o.batch_file = f.required("batch-file");
  o.out = f.required("out");
  const double loss = cli::run_verify(program, o);
  std::printf("loss: %.9g\n", loss);
  return 0;
}

int cmd_generate(const ProgramInfo &program, int argc, char **argv) {
  const Flags f("generate", argc, argv, 2,
                {{"checkpoint", true}, {"tokenizer", true}, {"prompt", true},
                 {"max-tokens", true}, {"temperature", true}, {"top-k", true},
                 {"top-p", true}, {"seed", true}, {"no-kv-cache", false},
                 {"cpu", false}});
  cli::GenerateOptions o;
  o.checkpoint = f.required("checkpoint");
  o.tokenizer = f.required("tokenizer");
  if (!f.has("prompt"))
    throw UsageError("generate: --prompt is required");
  o.prompt = f.str("prompt", "");
  o.max_tokens = f.i64("max-tokens", o.max_tokens);
  if (o.max_tokens < 0)
    throw UsageError("--max-tokens: must be >= 0");
  o.sampling.temperature = f.f64("temperature", o.sampling.temperature);
  o.sampling.top_k = f.i64("top-k", o.sampling.top_k);
  o.sampling.top_p = f.f64("top-p", o.sampling.top_p);
  o.seed = f.u64("seed", o.seed);
  o.kv_cache = !f.has("no-kv-cache");
  o.cpu = f.has("cpu");
  as_usage_error([&] { o.sampling.validate(); });

  const cli::GenerateResult r = cli::run_generate(program, o);
  // The text alone on stdout so that scripts can capture it; speed on stderr.
  std::printf("%s\n", r.text.c_str());
  std::fflush(stdout);
  if (!r.device.empty())
    std::fprintf(stderr, "generated on the %s\n", r.device.c_str());
  std::fprintf(stderr, "%lld tokens in %.2f s, tokens/s: %.1f\n",
               static_cast<long long>(r.new_tokens), r.seconds,
               r.seconds > 0 ? static_cast<double>(r.new_tokens) / r.seconds : 0.0);
  if (r.used_kv_cache) {
    const double decode_s = r.seconds - r.prompt_seconds;
    std::fprintf(stderr,
                 "KV cache: prompt %lld tokens in %.3f s (%.1f tokens/s), "
                 "decode %lld tokens in %.3f s (%.1f tokens/s)\n",
                 static_cast<long long>(r.prompt_tokens), r.prompt_seconds,
                 r.prompt_seconds > 0 ? double(r.prompt_tokens) / r.prompt_seconds : 0.0,
                 static_cast<long long>(r.new_tokens), decode_s,
                 decode_s > 0 ? double(r.new_tokens) / decode_s : 0.0);
  } else {
    std::fprintf(stderr, "no KV cache: the whole window per token\n");
  }
  return 0;
}

int cmd_gradcheck(const ProgramInfo &program, int argc, char **argv) {
  const Flags f("gradcheck", argc, argv, 2,
                {{"seed", true}, {"step", true}, {"tolerance", true},
                 {"max-per-tensor", true}, {"weight-std", true}});
  cli::GradcheckOptions o;
  o.seed = f.u64("seed", o.seed);
  o.step = f.f64("step", o.step);
  o.tolerance = f.f64("tolerance", o.tolerance);
  o.max_per_tensor = f.i64("max-per-tensor", o.max_per_tensor);
  o.weight_std = f.f64("weight-std", o.weight_std);
  return cli::run_gradcheck(program, o) ? 0 : 1;
}

int cmd_memcheck(const ProgramInfo &program, int argc, char **argv) {
  const Flags f("memcheck", argc, argv, 2, {{"seed", true}});
  if (program.open_device) {
    const DeviceMemoryProbe m = cli::probe_device_memory(program, f.u64("seed", 1234));
    std::printf("device-train-arena-bytes: %lld\ndevice-train-arena-used-bytes: %lld\n"
                "device-eval-arena-bytes: %lld\ndevice-eval-arena-used-bytes: %lld\n"
                "device-held-bytes: %lld\n",
                static_cast<long long>(m.train_arena_bytes),
                static_cast<long long>(m.train_arena_used_bytes),
                static_cast<long long>(m.eval_arena_bytes),
                static_cast<long long>(m.eval_arena_used_bytes),
                static_cast<long long>(m.held_bytes));
    if (m.device_used_bytes >= 0)
      std::printf("device-used-bytes: %lld\n", static_cast<long long>(m.device_used_bytes));
    else
      std::printf("device-used-bytes: unknown (emulated)\n");
    return 0;
  }
  const cli::MemoryProbe m = cli::probe_memory(program, f.u64("seed", 1234));
  std::printf("train-arena-bytes: %lld\ntrain-arena-used-bytes: %lld\n"
              "eval-arena-bytes: %lld\neval-arena-used-bytes: %lld\n"
              "state-bytes: %lld\nallocated-bytes: %lld\nrss-growth-bytes: %lld\n",
              static_cast<long long>(m.train_arena_bytes),
              static_cast<long long>(m.train_arena_used_bytes),
              static_cast<long long>(m.eval_arena_bytes),
              static_cast<long long>(m.eval_arena_used_bytes),
              static_cast<long long>(m.state_bytes),
              static_cast<long long>(m.allocated_bytes),
              static_cast<long long>(m.rss_growth_bytes));
  return 0;
}

int cmd_info(const ProgramInfo &program, int argc, char **argv) {
  const Flags f("info", argc, argv, 2, {{"json", false}, {"config-json", false}});
  if (f.has("config-json")) {
    // The HF config.json the program was compiled from (export, references).
    std::printf("%s\n", program.config_json);
    return 0;
  }
  nlohmann::ordered_json j;
  j["model"] = program.model_name;
  j["dtype"] = dtype_name(program.dtype);
  j["batch"] = program.batch;
  j["seq_len"] = program.seq_len;
  j["vocab_size"] = program.vocab_size;
  j["params"] = program.param_numel;
  j["param_tensors"] = program.num_params;
  j["train_arena_bytes"] = program.train_arena_bytes;
  j["logits_arena_bytes"] = program.logits_arena_bytes;
  j["gen_batch"] = program.gen_batch;
  j["grid_dp"] = program.grid_dp;
  j["grid_tp"] = program.grid_tp;
  j["sequence_parallel"] = program.sequence_parallel != 0;
  j["global_batch"] = program.global_batch;
  j["full_params"] = program.full_param_numel;
  j["grad_buckets"] = std::max(1, program.num_grad_buckets);
  j["abi_version"] = program.abi_version;
  j["target"] = program.target ? program.target : "cpu";
  if (f.has("json")) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  for (const auto &item : j.items()) {
    const auto &v = item.value();
    std::printf("%s: %s\n", item.key().c_str(),
                v.is_string() ? v.get<std::string>().c_str() : v.dump().c_str());
  }
  return 0;
}

std::string grid_string(const ProgramInfo &program) {
  return "dp=" + std::to_string(program.grid_dp) + " x tp=" +
         std::to_string(program.grid_tp);
}

// `train` or `verify` of a partitioned program: one rank of a grid of MPI
// processes.
// comm::init comes first (it fails, naming the launcher command, when the
// job has the wrong number of ranks). Usage errors are the same on every
// rank (same command line, same files), so rank 0 alone reports them and all
// ranks leave together. Any other error may hit one rank alone while its
// peers wait for it in a collective: that rank prints its message and ends
// the whole job (comm::abort_job), so nobody hangs.
int run_partitioned(const ProgramInfo &program, int argc, char **argv,
                    const char *argv0, const std::string &command) {
  try {
    comm::init(program.grid_dp, program.grid_tp);
  } catch (const std::exception &e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s %s: error: %s\n", argv0, command.c_str(), e.what());
    comm::finalize();
    return 1;
  }
  int code = 0;
  try {
    code = command == "train" ? cmd_train(program, argc, argv)
                              : cmd_verify(program, argc, argv);
  } catch (const UsageError &e) {
    std::fflush(stdout);
    if (comm::rank() == 0)
      std::fprintf(stderr, "%s %s: error: %s\n", argv0, command.c_str(), e.what());
    comm::finalize();
    return 2;
  } catch (const std::exception &e) {
    std::fflush(stdout);
    comm::abort_job(std::string(argv0) + " " + command + ": error: " + e.what(), 1);
  }
  std::fflush(stdout);
  comm::finalize();
  return code;
}

} // namespace

int run_main(int argc, char **argv, const ProgramInfo *program) {
  const char *argv0 = argc > 0 ? argv[0] : "llama-train";
  if (argc < 2) {
    print_usage(stderr, argv0);
    return 2;
  }
  const std::string command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    print_usage(stdout, argv0);
    return 0;
  }
  // plot reads a run directory and needs no program: it works even with a
  // binary that cannot train.
  if (command == "plot")
    return observe::run_plot_command(argc - 1, argv + 1, argv0);
  const char *usage = command == "train"      ? kTrainUsage
                      : command == "verify"   ? kVerifyUsage
                      : command == "generate" ? kGenerateUsage
                      : command == "gradcheck" ? kGradcheckUsage
                      : command == "eval"     ? cli::kEvalUsage
                      : command == "export"   ? cli::kExportUsage
                      : command == "memcheck" ? kMemcheckUsage
                      : command == "info"     ? kInfoUsage
                                              : nullptr;
  if (!usage) {
    std::fprintf(stderr, "%s: error: unknown command '%s'\n", argv0, command.c_str());
    print_usage(stderr, argv0);
    return 2;
  }
  if (wants_help(argc, argv)) {
    std::printf(usage, argv0);
    return 0;
  }
  try {
    if (!program)
      throw std::runtime_error("llamart_program() returned null");
    validate_program(*program);
    if (!program->train_step &&
        (command == "train" || command == "verify" || command == "gradcheck" ||
         command == "memcheck"))
      throw UsageError(std::string(argv0) +
                       " was compiled with --mode generate (forward only): it "
                       "cannot " + command +
                       "; compile the model without --mode generate to train");
    if (is_partitioned(*program)) {
      if (command == "train" || command == "verify")
        return run_partitioned(*program, argc, argv, argv0, command);
      if (command != "info")
        throw UsageError(std::string(argv0) + " is partitioned for " +
                         grid_string(*program) + "; run " + command +
                         " with a single-rank binary of the same model "
                         "(llama-compile without --dp/--tp): checkpoints are "
                         "grid-independent");
    }
    if (command == "train")
      return cmd_train(*program, argc, argv);
    if (command == "verify")
      return cmd_verify(*program, argc, argv);
    if (command == "generate")
      return cmd_generate(*program, argc, argv);
    if (command == "eval")
      return cli::cmd_eval(*program, argc, argv);
    if (command == "export")
      return cli::cmd_export(*program, argc, argv);
    if (command == "gradcheck")
      return cmd_gradcheck(*program, argc, argv);
    if (command == "memcheck")
      return cmd_memcheck(*program, argc, argv);
    return cmd_info(*program, argc, argv);
  } catch (const UsageError &e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s %s: error: %s\n", argv0, command.c_str(), e.what());
    return 2;
  } catch (const std::exception &e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s %s: error: %s\n", argv0, command.c_str(), e.what());
    return 1;
  }
}

} // namespace llamart
