// Command-line parsing for llama-tokenize's subcommands.
//
// Each subcommand declares its options; parse() accepts `--name value`,
// `--name=value` and, for list options, `--name v1 v2 ...` (values run until
// the next argument that starts with '-'). Every mistake is a UsageError,
// which main() turns into one line on stderr and exit status 2.
#pragma once
#include "runtime/tokenizer/tokenizer.h"

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace llama_tokenize {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class OptKind { Value, List, Flag };

struct OptSpec {
  std::string name;  // "--input"
  std::string alias; // "-o", or empty
  OptKind kind;
};

class Args {
public:
  // argv holds the arguments after the subcommand; `command` names it in
  // error messages.
  static Args parse(const std::string &command, const std::vector<OptSpec> &specs,
                    const std::vector<std::string> &argv);

  bool has(const std::string &name) const { return values_.count(name) != 0; }
  std::string str(const std::string &name) const;              // required
  std::string str(const std::string &name, const std::string &fallback) const;
  std::vector<std::string> list(const std::string &name) const; // required, non-empty
  int64_t integer(const std::string &name, int64_t fallback, int64_t min, int64_t max) const;
  double real(const std::string &name, double fallback, double min, double max) const;

private:
  std::string command_;
  std::map<std::string, std::vector<std::string>> values_;
};

// Throws UsageError "<file>: <why>" unless every file is a readable regular
// file that does not look binary (a NUL byte in its first 64 KiB) - which
// catches globs such as fortunes/* that also match the .dat index files.
void check_text_inputs(const std::vector<std::string> &files);

// Throws UsageError "<file>: <why>" unless `file` is a readable regular file.
void check_readable(const std::string &file);

// Throws UsageError "<dir>: <why>" unless `dir` is an existing writable
// directory.
void check_writable_dir(const std::string &dir);

// Loads a tokenizer: a SentencePiece model, a tokenizer.json, or a model
// folder holding one. A path that does not give a usable tokenizer is a
// UsageError carrying the loader's one-line message.
llamart::tokenizer::Tokenizer load_tokenizer(const std::string &path);

} // namespace llama_tokenize
