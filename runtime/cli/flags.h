// A small strict flag parser for the subcommands: `--name value`,
// `--name=value` and boolean `--name`; unknown, repeated or malformed flags
// are usage errors naming the flag.
#pragma once
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace llamart::cli {

// Bad command-line input: reported with exit status 2.
class UsageError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

struct FlagSpec {
  const char *name;  // without the leading "--"
  bool takes_value;
};

class Flags {
public:
  // Parses argv[first, argc) for `command` against `specs`.
  Flags(const std::string &command, int argc, char **argv, int first,
        const std::vector<FlagSpec> &specs);

  bool has(const std::string &name) const { return values_.count(name) != 0; }
  std::string str(const std::string &name, const std::string &fallback) const;
  // Like str() but a usage error when absent.
  std::string required(const std::string &name) const;
  int64_t i64(const std::string &name, int64_t fallback) const;
  uint64_t u64(const std::string &name, uint64_t fallback) const;
  double f64(const std::string &name, double fallback) const;

private:
  std::string command_;
  std::map<std::string, std::string> values_;
};

} // namespace llamart::cli
