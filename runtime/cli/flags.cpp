#include "runtime/cli/flags.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace llamart::cli {

Flags::Flags(const std::string &command, int argc, char **argv, int first,
             const std::vector<FlagSpec> &specs)
    : command_(command) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0)
      throw UsageError(command + ": unexpected argument '" + arg +
                       "' (flags start with --)");
    std::string name = arg.substr(2), value;
    bool inline_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    const FlagSpec *spec = nullptr;
    for (const FlagSpec &s : specs)
      if (name == s.name)
        spec = &s;
    if (!spec)
      throw UsageError(command + ": unknown flag --" + name + " (see --help)");
    if (values_.count(name))
      throw UsageError("--" + name + ": given twice");
    if (spec->takes_value && !inline_value) {
      if (i + 1 >= argc)
        throw UsageError("--" + name + ": missing value");
      value = argv[++i];
    } else if (!spec->takes_value && inline_value) {
      throw UsageError("--" + name + ": takes no value");
    }
    values_[name] = value;
  }
}

std::string Flags::str(const std::string &name, const std::string &fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

std::string Flags::required(const std::string &name) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty())
    throw UsageError(command_ + ": --" + name + " is required");
  return it->second;
}

int64_t Flags::i64(const std::string &name, int64_t fallback) const {
  auto it = values_.find(name);
  if (it == values_.end())
    return fallback;
  const char *s = it->second.c_str();
  char *end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s, &end, 10);
  if (*s == '\0' || *end != '\0' || errno == ERANGE)
    throw UsageError("--" + name + ": expected an integer, got '" + it->second + "'");
  return v;
}

uint64_t Flags::u64(const std::string &name, uint64_t fallback) const {
  auto it = values_.find(name);
  if (it == values_.end())
    return fallback;
  const char *s = it->second.c_str();
  char *end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (*s == '\0' || *s == '-' || *end != '\0' || errno == ERANGE)
    throw UsageError("--" + name + ": expected a non-negative integer, got '" +
                     it->second + "'");
  return v;
}

double Flags::f64(const std::string &name, double fallback) const {
  auto it = values_.find(name);
  if (it == values_.end())
    return fallback;
  const char *s = it->second.c_str();
  char *end = nullptr;
  errno = 0;
  const double v = std::strtod(s, &end);
  if (*s == '\0' || *end != '\0' || errno == ERANGE || !std::isfinite(v))
    throw UsageError("--" + name + ": expected a number, got '" + it->second + "'");
  return v;
}

} // namespace llamart::cli
