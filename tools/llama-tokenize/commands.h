// The subcommands of llama-tokenize. Each takes the arguments after its name,
// returns the process exit status, and throws UsageError (exit 2) for bad
// flags or unusable input files and std::runtime_error (exit 1) otherwise.
#pragma once
#include <string>
#include <vector>

namespace llama_tokenize {

extern const char *const kTrainHelp;
extern const char *const kEncodeHelp;
extern const char *const kDecodeHelp;

int run_train(const std::vector<std::string> &args);
int run_encode(const std::vector<std::string> &args);
int run_decode(const std::vector<std::string> &args);

} // namespace llama_tokenize
