#include "tools/llama-tokenize/args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

namespace llama_tokenize {

Args Args::parse(const std::string &command, const std::vector<OptSpec> &specs,
                 const std::vector<std::string> &argv) {
  Args args;
  args.command_ = command;
  auto find = [&](const std::string &name) -> const OptSpec * {
    for (const auto &s : specs)
      if (name == s.name || (!s.alias.empty() && name == s.alias))
        return &s;
    return nullptr;
  };

  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string &arg = argv[i];
    if (arg.size() < 2 || arg[0] != '-')
      throw UsageError(command + ": unexpected argument '" + arg + "'");
    std::string name = arg;
    std::string inline_value;
    bool has_inline = false;
    if (const size_t eq = arg.find('='); arg.compare(0, 2, "--") == 0 && eq != std::string::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
      has_inline = true;
    }
    const OptSpec *spec = find(name);
    if (!spec)
      throw UsageError(command + ": unknown option '" + name + "' (see --help)");
    auto &slot = args.values_[spec->name];
    switch (spec->kind) {
    case OptKind::Flag:
      if (has_inline)
        throw UsageError(command + ": option '" + name + "' takes no value");
      slot.push_back("1");
      break;
    case OptKind::Value:
      if (!slot.empty())
        throw UsageError(command + ": option '" + name + "' given twice");
      if (has_inline) {
        slot.push_back(inline_value);
      } else {
        if (i + 1 >= argv.size())
          throw UsageError(command + ": option '" + name + "' needs a value");
        slot.push_back(argv[++i]);
      }
      break;
    case OptKind::List:
      if (has_inline)
        slot.push_back(inline_value);
      // A single "-" is a value, everything else starting with '-' ends the list.
      while (i + 1 < argv.size() && (argv[i + 1].empty() || argv[i + 1][0] != '-' ||
                                     argv[i + 1] == "-"))
        slot.push_back(argv[++i]);
      if (slot.empty())
        throw UsageError(command + ": option '" + name + "' needs at least one value");
      break;
    }
  }
  return args;
}

std::string Args::str(const std::string &name) const {
  auto it = values_.find(name);
  if (it == values_.end())
    throw UsageError(command_ + ": missing required option " + name);
  return it->second.front();
}

std::string Args::str(const std::string &name, const std::string &fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.front();
}

std::vector<std::string> Args::list(const std::string &name) const {
  auto it = values_.find(name);
  if (it == values_.end())
    throw UsageError(command_ + ": missing required option " + name);
  return it->second;
}

int64_t Args::integer(const std::string &name, int64_t fallback, int64_t min, int64_t max) const {
  if (!has(name))
    return fallback;
  const std::string text = str(name);
  // Accept the K/M/G suffixes people write token counts with (16M).
  int64_t scale = 1;
  std::string digits = text;
  if (!digits.empty()) {
    switch (digits.back()) {
    case 'K': case 'k': scale = int64_t(1) << 10; break;
    case 'M': case 'm': scale = int64_t(1) << 20; break;
    case 'G': case 'g': scale = int64_t(1) << 30; break;
    default: break;
    }
    if (scale != 1)
      digits.pop_back();
  }
  errno = 0;
  char *end = nullptr;
  const long long v = std::strtoll(digits.c_str(), &end, 10);
  int64_t scaled = 0;
  if (digits.empty() || *end != '\0' || errno == ERANGE ||
      __builtin_mul_overflow(static_cast<int64_t>(v), scale, &scaled))
    throw UsageError(command_ + ": " + name + " expects an integer, got '" + text + "'");
  if (scaled < min || scaled > max)
    throw UsageError(command_ + ": " + name + " must be in [" + std::to_string(min) + ", " +
                     std::to_string(max) + "], got " + text);
  return scaled;
}

double Args::real(const std::string &name, double fallback, double min, double max) const {
  if (!has(name))
    return fallback;
  const std::string text = str(name);
  errno = 0;
  char *end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v))
    throw UsageError(command_ + ": " + name + " expects a number, got '" + text + "'");
  if (v < min || v > max)
    throw UsageError(command_ + ": " + name + " must be in [" + std::to_string(min) + ", " +
                     std::to_string(max) + "], got " + text);
  return v;
}

void check_readable(const std::string &file) {
  struct stat st;
  if (::stat(file.c_str(), &st) != 0)
    throw UsageError(file + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    throw UsageError(file + ": not a regular file");
  std::ifstream in(file, std::ios::binary);
  if (!in)
    throw UsageError(file + ": cannot open for reading");
}

void check_writable_dir(const std::string &dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0)
    throw UsageError(dir + ": output directory: " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode))
    throw UsageError(dir + ": not a directory");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw UsageError(dir + ": directory is not writable");
}

void check_text_inputs(const std::vector<std::string> &files) {
  for (const auto &file : files) {
    check_readable(file);
    std::ifstream in(file, std::ios::binary);
    std::string head(64 * 1024, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
    if (head.find('\0') != std::string::npos)
      throw UsageError(file + ": contains NUL bytes; not a text file");
  }
}

llamart::tokenizer::Tokenizer load_tokenizer(const std::string &path) {
  try {
    return llamart::tokenizer::Tokenizer::load(path);
  } catch (const std::runtime_error &e) {
    throw UsageError(e.what());
  }
}

} // namespace llama_tokenize
