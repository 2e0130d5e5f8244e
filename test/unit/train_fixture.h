// A hand-written ProgramInfo for testing the training driver without the
// compiler: a bigram language model
//   logits[b, t, :] = W[tokens[b, t], :] * g      W "model.embed_tokens.weight" [V, V]
//                                                 g "model.norm.weight" [V]
//   loss = mean over scored targets of cross-entropy(logits, target)
// W is 2-D (Normal init, weight decay), g is 1-D (Ones init, no decay), so
// both init kinds and the decay rule are exercised. train_step and logits are
// written out by hand in double; targets equal to -1 are not scored.
#pragma once
#include "runtime/program/program.h"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

namespace llamart::testing {

// One static program per (T, V, B, S); T is float or double.
template <typename T, int V, int B, int S> const ProgramInfo *bigram_program();

// The same model as one rank of a DP x TP grid (program.h, ABI v3), written
// the way a partitioned program must behave: GB global sequences, GB / DP per
// dp rank; W split by rows over tp (shard_dim 0: tp rank r holds the rows of
// tokens [r V/TP, (r+1) V/TP)), g whole on every tp rank. The logits rows are
// assembled with an all-reduce over tp, the loss and the scored-target count
// with all-reduces over dp, so every rank returns the global loss; the
// gradients written are this rank's share (summed over dp they are the
// single-rank program's). The local buffer has a 3-element gap between W and
// g, so the runtime's handling of gaps is exercised. No logits function, as
// for every partitioned program. Needs comm::init(DP, TP) to run.
template <typename T, int V, int GB, int S, int DP, int TP>
const ProgramInfo *bigram_grid_program();

// Test hooks: train_step calls counted over all bigram programs (grid ones
// included); when the count reaches raise_sigterm_at_call (> 0) the step
// raises SIGTERM, the way a scheduler preempting the job would.
extern std::atomic<int64_t> bigram_train_calls;
extern std::atomic<int64_t> raise_sigterm_at_call;

constexpr int64_t kBigramIgnoreIndex = -1;

// A noisy bigram chain: next = (5 tok + 3) % vocab with probability 0.9,
// uniform otherwise (for vocab 16 its entropy rate is about 0.57 nats, far
// below log(16) = 2.77), from `seed`.
std::vector<int32_t> bigram_chain_tokens(int64_t n, uint64_t seed, int vocab);

// Token shards of such chains in `dir` (created): train_00000.tok (3000
// tokens), train_00001.tok (1500) and, with_val, val_00000.tok (800).
// Returns dir.
std::string make_bigram_dataset(const std::string &dir, int vocab, bool with_val);

// A fresh directory per test (named after the test and the process), removed
// afterwards.
class TempDir {
public:
  explicit TempDir(const std::string &prefix) {
    const auto *info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            (prefix + "_" + std::string(info->test_suite_name()) + "_" +
             info->name() + "_" + std::to_string(getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;
  std::string operator/(const std::string &name) const { return (path_ / name).string(); }

private:
  std::filesystem::path path_;
};

// run_main of the training binary `argv0` with `args`, stdout and stderr
// captured.
struct CliResult {
  int code;
  std::string out, err;
};
CliResult run_cli(const ProgramInfo *program, const std::string &argv0,
                  std::vector<std::string> args);

} // namespace llamart::testing
