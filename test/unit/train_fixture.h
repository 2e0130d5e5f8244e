// A hand-written ProgramInfo for testing the training driver without the
// compiler: a bigram language model
//   logits[b, t, :] = W[tokens[b, t], :] * g      W "model.embed_tokens.weight" [V, V]
//                                                 g "model.norm.weight" [V]
//   loss = mean over scored targets of cross-entropy(logits, target)
// W is 2-D (Normal init, weight decay), g is 1-D (Ones init, no decay), so
// both init kinds and the decay rule are exercised. train_step and logits are
// written out by hand in double; targets equal to -1 are not scored.
#pragma once
#include "runtime/train/program.h"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <unistd.h>

#include <gtest/gtest.h>

namespace llamart::testing {

// One static program per (T, V, B, S); T is float or double.
template <typename T, int V, int B, int S> const ProgramInfo *bigram_program();

// Test hooks: train_step calls counted over all bigram programs; when the
// count reaches raise_sigterm_at_call (> 0) the step raises SIGTERM, the way a
// scheduler preempting the job would.
extern std::atomic<int64_t> bigram_train_calls;
extern std::atomic<int64_t> raise_sigterm_at_call;

constexpr int64_t kBigramIgnoreIndex = -1;

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

} // namespace llamart::testing
