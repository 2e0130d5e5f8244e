#include "runtime/tokenizer/split_patterns.h"

#include "runtime/tokenizer/unicode.h"

namespace llamart::tokenizer {

namespace {

const char *const kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char *const kLlama3SingleDigitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char *const kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// [^\s\p{L}\p{N}]: punctuation, symbols, controls other than whitespace.
bool is_other(char32_t c) { return !is_whitespace(c) && !is_letter(c) && !is_number(c); }
bool is_newline(char32_t c) { return c == '\r' || c == '\n'; }

template <typename Pred>
size_t run_end(const std::vector<char32_t> &s, size_t from, Pred pred) {
  while (from < s.size() && pred(s[from]))
    ++from;
  return from;
}

// Simple case folding for the letters of the contractions: Oniguruma's (?i)
// also folds U+017F LATIN SMALL LETTER LONG S to 's'.
char32_t fold(char32_t c) {
  if (c >= 'A' && c <= 'Z')
    return c + ('a' - 'A');
  if (c == 0x17F)
    return 's';
  return c;
}

// 's|'t|'re|'ve|'m|'ll|'d at p (case-insensitively when `fold_case`);
// returns the match length or 0.
size_t contraction(const std::vector<char32_t> &s, size_t p, bool fold_case) {
  if (s[p] != '\'' || p + 1 >= s.size())
    return 0;
  auto at = [&](size_t i) { return fold_case ? fold(s[i]) : s[i]; };
  const char32_t c1 = at(p + 1);
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd')
    return 2;
  if (p + 2 < s.size()) {
    const char32_t c2 = at(p + 2);
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
      return 3;
  }
  return 0;
}

// \s+(?!\S) then \s+ at a whitespace position p whose run ends at e: the
// run, minus its last character when a non-space follows and the run is
// longer than one (the lookahead backs off by one; the last alternative takes
// a single space).
size_t trailing_whitespace(const std::vector<char32_t> &s, size_t p, size_t e) {
  if (e == s.size() || e - p == 1)
    return e - p;
  return e - 1 - p;
}

size_t match_llama3(const std::vector<char32_t> &s, size_t p, size_t max_digits) {
  const char32_t c = s[p];
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
  if (const size_t n = contraction(s, p, /*fold_case=*/true))
    return n;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (is_letter(c))
    return run_end(s, p, is_letter) - p;
  if (!is_newline(c) && !is_number(c) && p + 1 < s.size() && is_letter(s[p + 1]))
    return run_end(s, p + 1, is_letter) - p;
  // \p{N}{1,3}
  if (is_number(c)) {
    const size_t e = run_end(s, p, is_number);
    return std::min(e - p, max_digits);
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  const size_t q = c == ' ' ? p + 1 : p;
  if (q < s.size() && is_other(s[q]))
    return run_end(s, run_end(s, q, is_other), is_newline) - p;
  // Only whitespace is left.
  const size_t e = run_end(s, p, is_whitespace);
  // \s*[\r\n]+: \s* backs off to the last line break of the run.
  for (size_t k = e; k > p; --k)
    if (is_newline(s[k - 1]))
      return k - p;
  return trailing_whitespace(s, p, e);
}

size_t match_gpt2(const std::vector<char32_t> &s, size_t p) {
  if (const size_t n = contraction(s, p, /*fold_case=*/false))
    return n;
  //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+
  const size_t q = s[p] == ' ' ? p + 1 : p;
  if (q < s.size()) {
    if (is_letter(s[q]))
      return run_end(s, q, is_letter) - p;
    if (is_number(s[q]))
      return run_end(s, q, is_number) - p;
    if (is_other(s[q]))
      return run_end(s, q, is_other) - p;
  }
  return trailing_whitespace(s, p, run_end(s, p, is_whitespace));
}

} // namespace

std::optional<SplitPattern> recognize_split_pattern(const std::string &regex) {
  if (regex == kLlama3Regex)
    return SplitPattern::Llama3;
  if (regex == kLlama3SingleDigitRegex)
    return SplitPattern::Llama3SingleDigits;
  if (regex == kGpt2Regex)
    return SplitPattern::Gpt2;
  return std::nullopt;
}

std::vector<std::pair<size_t, size_t>> find_pattern_matches(SplitPattern pattern,
                                                            const std::vector<char32_t> &text) {
  std::vector<std::pair<size_t, size_t>> matches;
  for (size_t p = 0; p < text.size();) {
    size_t n = 0;
    switch (pattern) {
    case SplitPattern::Llama3: n = match_llama3(text, p, 3); break;
    case SplitPattern::Llama3SingleDigits: n = match_llama3(text, p, 1); break;
    case SplitPattern::Gpt2: n = match_gpt2(text, p); break;
    }
    // Every code point is a letter, number, whitespace or "other", and each
    // class has an alternative that matches it, so n >= 1.
    matches.emplace_back(p, p + n);
    p += n;
  }
  return matches;
}

} // namespace llamart::tokenizer
