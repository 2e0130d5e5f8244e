#include "runtime/tokenizer/added_tokens.h"

#include "runtime/tokenizer/unicode.h"

#include <algorithm>

namespace llamart::tokenizer {

namespace {

// The code point that ends `text[0, end)` / starts `text[begin, ...)`.
char32_t last_char(std::string_view text, size_t end) {
  size_t b = end;
  while (b > 0 && (static_cast<unsigned char>(text[b - 1]) & 0xC0) == 0x80)
    --b;
  if (b > 0)
    --b;
  return decode_utf8(text.substr(b, end - b), "added token context").front();
}

char32_t first_char(std::string_view text, size_t begin) {
  const size_t n = utf8_length(static_cast<unsigned char>(text[begin]));
  return decode_utf8(text.substr(begin, n), "added token context").front();
}

// Start of the whitespace run that ends at `end`.
size_t whitespace_run_start(std::string_view text, size_t end) {
  while (end > 0) {
    size_t b = end - 1;
    while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80)
      --b;
    if (!is_whitespace(first_char(text, b)))
      break;
    end = b;
  }
  return end;
}

// End of the whitespace run that starts at `begin`.
size_t whitespace_run_end(std::string_view text, size_t begin) {
  while (begin < text.size() && is_whitespace(first_char(text, begin)))
    begin += utf8_length(static_cast<unsigned char>(text[begin]));
  return begin;
}

} // namespace

TokenMatcher::TokenMatcher(std::vector<std::pair<std::string, const AddedToken *>> patterns)
    : patterns_(std::move(patterns)), by_first_byte_(256) {
  for (size_t i = 0; i < patterns_.size(); ++i)
    if (!patterns_[i].first.empty())
      by_first_byte_[static_cast<unsigned char>(patterns_[i].first[0])].push_back(i);
  for (auto &bucket : by_first_byte_)
    std::stable_sort(bucket.begin(), bucket.end(), [&](size_t a, size_t b) {
      return patterns_[a].first.size() > patterns_[b].first.size();
    });
}

std::vector<Split> TokenMatcher::split(std::string_view text) const {
  std::vector<Split> out;
  if (patterns_.empty()) {
    if (!text.empty())
      out.push_back({std::nullopt, 0, text.size()});
    return out;
  }
  size_t emitted = 0; // end of the last match
  for (size_t pos = 0; pos < text.size();) {
    // The longest token starting here; like HF, a match that fails its
    // single_word condition is skipped as a whole, not retried shorter.
    const AddedToken *token = nullptr;
    size_t length = 0;
    for (size_t i : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
      const std::string &p = patterns_[i].first;
      if (text.compare(pos, p.size(), p) == 0) {
        token = patterns_[i].second;
        length = p.size();
        break; // the bucket is longest first
      }
    }
    if (!token) {
      pos += utf8_length(static_cast<unsigned char>(text[pos]));
      continue;
    }
    if (token->single_word) {
      const bool word_before = pos > 0 && is_alphanumeric(last_char(text, pos));
      const bool word_after =
          pos + length < text.size() && is_alphanumeric(first_char(text, pos + length));
      if (word_before || word_after) {
        pos += length;
        continue;
      }
    }
    size_t begin = pos, end = pos + length;
    if (token->lstrip)
      begin = std::max(whitespace_run_start(text, begin), emitted);
    if (token->rstrip)
      end = whitespace_run_end(text, end);
    if (begin > emitted)
      out.push_back({std::nullopt, emitted, begin});
    out.push_back({token->id, begin, end});
    emitted = pos = end;
  }
  if (emitted < text.size())
    out.push_back({std::nullopt, emitted, text.size()});
  return out;
}

std::vector<AddedToken> parse_added_tokens(const json &spec, const JsonLoc &at) {
  std::vector<AddedToken> tokens;
  if (spec.is_null())
    return tokens;
  if (!spec.is_array())
    at.fail("expected an array");
  for (size_t i = 0; i < spec.size(); ++i) {
    const JsonLoc here = at[i];
    const json &t = spec[i];
    const int64_t id = get_int(t, "id", here);
    if (id < 0 || id >= INT32_MAX)
      (here / "id").fail("out of range");
    const bool special = get_bool(t, "special", false, here);
    AddedToken token{static_cast<int32_t>(id), get_string(t, "content", here),
                     get_bool(t, "single_word", false, here), get_bool(t, "lstrip", false, here),
                     get_bool(t, "rstrip", false, here),
                     get_bool(t, "normalized", !special, here), special};
    if (token.content.empty())
      (here / "content").fail("empty");
    tokens.push_back(std::move(token));
  }
  return tokens;
}

} // namespace llamart::tokenizer
