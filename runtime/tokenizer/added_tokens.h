// tokenizer.json "added_tokens": strings matched in the text before the model
// sees it (<|begin_of_text|>, <s>, ...), each becoming its id directly.
//
// Matching is leftmost-longest over the text, as HF's Aho-Corasick matcher
// with MatchKind::LeftmostLongest; a token with single_word matches only
// between non-word characters, lstrip/rstrip widen the match over adjacent
// whitespace. Tokens with normalized=false are matched in the raw input,
// those with normalized=true in the normalized text (against their own
// normalized form).
#pragma once
#include "runtime/tokenizer/json_util.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace llamart::tokenizer {

struct AddedToken {
  int32_t id;
  std::string content;
  bool single_word, lstrip, rstrip, normalized, special;
};

// A stretch of text between matches, or a matched token.
struct Split {
  std::optional<int32_t> id; // set for a matched token
  size_t begin, end;         // byte range in the searched text
};

class TokenMatcher {
public:
  TokenMatcher() = default;
  // `patterns` pairs the string to look for with the token it stands for.
  explicit TokenMatcher(std::vector<std::pair<std::string, const AddedToken *>> patterns);
  bool empty() const { return patterns_.empty(); }
  // Cuts `text` into gaps and matches; empty gaps are left out.
  std::vector<Split> split(std::string_view text) const;

private:
  std::vector<std::pair<std::string, const AddedToken *>> patterns_;
  // Pattern indices by first byte, longest first.
  std::vector<std::vector<size_t>> by_first_byte_;
};

std::vector<AddedToken> parse_added_tokens(const json &spec, const JsonLoc &at);

} // namespace llamart::tokenizer
