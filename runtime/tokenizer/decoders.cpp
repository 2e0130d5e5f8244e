#include "runtime/tokenizer/decoders.h"

#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/normalizers.h"
#include "runtime/tokenizer/unicode.h"

namespace llamart::tokenizer {

namespace {

const char *const kReplacementChar = "\xEF\xBF\xBD"; // U+FFFD

class SequenceDecoder final : public Decoder {
public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string> &tokens) const override {
    for (const auto &p : parts_)
      p->decode_chain(tokens);
  }

private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

class ReplaceDecoder final : public Decoder {
public:
  ReplaceDecoder(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  void decode_chain(std::vector<std::string> &tokens) const override {
    for (auto &t : tokens)
      t = replace_all(std::move(t), from_, to_);
  }

private:
  std::string from_, to_;
};

// "<0xAB>" -> 0xAB, else -1.
int byte_token(const std::string &t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>')
    return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// Runs of byte tokens become the text they spell; a run that is not valid
// UTF-8 becomes one U+FFFD per byte (HF's ByteFallback).
class ByteFallbackDecoder final : public Decoder {
public:
  void decode_chain(std::vector<std::string> &tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t byte_count = 0;
    auto flush = [&] {
      if (byte_count == 0)
        return;
      if (is_valid_utf8(bytes))
        out.push_back(bytes);
      else
        for (size_t i = 0; i < byte_count; ++i)
          out.emplace_back(kReplacementChar);
      bytes.clear();
      byte_count = 0;
    };
    for (auto &t : tokens) {
      if (const int b = byte_token(t); b >= 0) {
        bytes += static_cast<char>(b);
        ++byte_count;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
};

class FuseDecoder final : public Decoder {
public:
  void decode_chain(std::vector<std::string> &tokens) const override {
    std::string all;
    for (const auto &t : tokens)
      all += t;
    tokens.assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing `content` characters
// from every token.
class StripDecoder final : public Decoder {
public:
  StripDecoder(char32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string> &tokens) const override {
    for (auto &t : tokens) {
      const std::vector<char32_t> cps = decode_utf8(t, "Strip decoder");
      size_t b = 0, e = cps.size();
      while (b < start_ && b < e && cps[b] == content_)
        ++b;
      for (size_t k = 0; k < stop_ && e > b && cps[e - 1] == content_; ++k)
        --e;
      t = encode_utf8(std::u32string(cps.begin() + b, cps.begin() + e));
    }
  }

private:
  char32_t content_;
  size_t start_, stop_;
};

// Maps the byte-level characters back to bytes over the whole sequence and
// decodes it as UTF-8 with replacement. A token holding any character outside
// the table (an added token) contributes its own bytes unchanged.
class ByteLevelDecoder final : public Decoder {
public:
  void decode_chain(std::vector<std::string> &tokens) const override {
    std::string bytes;
    for (const auto &t : tokens) {
      const std::vector<char32_t> cps = decode_utf8(t, "ByteLevel decoder");
      std::string mapped;
      bool all_mapped = true;
      for (char32_t c : cps) {
        const int b = char_to_byte(c);
        if (b < 0) {
          all_mapped = false;
          break;
        }
        mapped += static_cast<char>(b);
      }
      bytes += all_mapped ? mapped : t;
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

// Metaspace's decoder: the replacement becomes a space, except in the first
// token, where it is dropped when the pre-tokenizer prepends one.
class MetaspaceDecoder final : public Decoder {
public:
  MetaspaceDecoder(char32_t replacement, bool drops_first) : drops_first_(drops_first) {
    append_utf8(replacement_, replacement);
  }
  void decode_chain(std::vector<std::string> &tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = replace_all(std::move(tokens[i]), replacement_, i == 0 && drops_first_ ? "" : " ");
  }

private:
  std::string replacement_;
  bool drops_first_;
};

size_t get_count(const json &spec, const char *key, const JsonLoc &at) {
  const int64_t v = get_int(spec, key, at);
  if (v < 0)
    (at / key).fail("must be >= 0");
  return static_cast<size_t>(v);
}

} // namespace

std::unique_ptr<Decoder> make_decoder(const json &spec, const JsonLoc &at) {
  if (spec.is_null())
    return nullptr;
  const std::string type = get_string(spec, "type", at);
  if (type == "Sequence") {
    const json &list = require(spec, "decoders", at);
    if (!list.is_array())
      (at / "decoders").fail("expected an array");
    std::vector<std::unique_ptr<Decoder>> parts;
    for (size_t i = 0; i < list.size(); ++i)
      if (auto p = make_decoder(list[i], (at / "decoders")[i]))
        parts.push_back(std::move(p));
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  if (type == "Replace") {
    bool is_regex = false;
    std::string pattern = get_pattern(spec, "pattern", at, &is_regex);
    if (is_regex)
      (at / "pattern").fail("unsupported Replace decoder with a Regex pattern");
    if (pattern.empty())
      (at / "pattern").fail("empty pattern");
    return std::make_unique<ReplaceDecoder>(std::move(pattern), get_string(spec, "content", at));
  }
  if (type == "ByteFallback")
    return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse")
    return std::make_unique<FuseDecoder>();
  if (type == "Strip")
    return std::make_unique<StripDecoder>(get_char(spec, "content", at), get_count(spec, "start", at),
                                          get_count(spec, "stop", at));
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    bool drops_first = get_bool(spec, "add_prefix_space", true, at);
    if (const auto s = get_optional_string(spec, "prepend_scheme", at))
      drops_first = *s != "never";
    return std::make_unique<MetaspaceDecoder>(get_char(spec, "replacement", at), drops_first);
  }
  at.fail("unsupported decoder type '" + type + "'");
}

} // namespace llamart::tokenizer
