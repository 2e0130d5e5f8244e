// The regular expressions that Llama-family tokenizer.json files split text
// with, implemented by hand over code points.
//
// std::regex has no \p{L}/\p{N} and no Unicode classes, and pulling in a
// regex engine for two fixed patterns is not worth a dependency. So the
// pre-tokenizer recognises a pattern by its exact text and runs the matcher
// below, which reproduces Oniguruma's leftmost-first alternation semantics
// (what Hugging Face tokenizers uses) for that pattern. Any other pattern is
// rejected at load time with its text in the message.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace llamart::tokenizer {

enum class SplitPattern {
  // Llama-3 (= OpenAI cl100k): (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|
  //   \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  Llama3,
  // The same with single digits (\p{N} instead of \p{N}{1,3}), as in Qwen2.
  Llama3SingleDigits,
  // GPT-2, also what the ByteLevel pre-tokenizer uses with use_regex:
  //   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Gpt2,
};

// The pattern whose regex text is `regex`, if it is one of the above.
std::optional<SplitPattern> recognize_split_pattern(const std::string &regex);

// The matches of `pattern` in `text` (code points), as [begin, end) index
// pairs in order, as a regex find_iter would return them. These patterns
// match every position, so the matches tile the text.
std::vector<std::pair<size_t, size_t>> find_pattern_matches(SplitPattern pattern,
                                                            const std::vector<char32_t> &text);

} // namespace llamart::tokenizer
