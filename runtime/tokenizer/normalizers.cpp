#include "runtime/tokenizer/normalizers.h"

#include <vector>

namespace llamart::tokenizer {

std::string replace_all(std::string text, const std::string &from, const std::string &to) {
  if (from.empty())
    return text;
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = text.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(text, pos, hit - pos);
    out += to;
  }
  if (pos == 0)
    return text;
  out.append(text, pos, std::string::npos);
  return out;
}

namespace {

class SequenceNormalizer final : public Normalizer {
public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  std::string normalize(std::string text) const override {
    for (const auto &p : parts_)
      text = p->normalize(std::move(text));
    return text;
  }

private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

// Prepends only to non-empty text, as HF's Prepend does.
class PrependNormalizer final : public Normalizer {
public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string normalize(std::string text) const override {
    return text.empty() ? text : prefix_ + text;
  }

private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
public:
  ReplaceNormalizer(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  std::string normalize(std::string text) const override {
    return replace_all(std::move(text), from_, to_);
  }

private:
  std::string from_, to_;
};

} // namespace

std::unique_ptr<Normalizer> make_normalizer(const json &spec, const JsonLoc &at) {
  if (spec.is_null())
    return nullptr;
  const std::string type = get_string(spec, "type", at);
  if (type == "Sequence") {
    const json &list = require(spec, "normalizers", at);
    if (!list.is_array())
      (at / "normalizers").fail("expected an array");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < list.size(); ++i)
      if (auto p = make_normalizer(list[i], (at / "normalizers")[i]))
        parts.push_back(std::move(p));
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  if (type == "Prepend")
    return std::make_unique<PrependNormalizer>(get_string(spec, "prepend", at));
  if (type == "Replace") {
    bool is_regex = false;
    std::string pattern = get_pattern(spec, "pattern", at, &is_regex);
    if (is_regex)
      (at / "pattern").fail("unsupported Replace normalizer with a Regex pattern");
    if (pattern.empty())
      (at / "pattern").fail("empty pattern");
    return std::make_unique<ReplaceNormalizer>(std::move(pattern), get_string(spec, "content", at));
  }
  at.fail("unsupported normalizer type '" + type + "'");
}

} // namespace llamart::tokenizer
