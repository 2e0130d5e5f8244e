// tokenizer.json "normalizer": rewrites each stretch of text between added
// tokens before pre-tokenization. Llama-2's files use
//   Sequence[Prepend("▁"), Replace(" " -> "▁")]
// i.e. SentencePiece's dummy prefix and space escaping.
#pragma once
#include "runtime/tokenizer/json_util.h"

#include <memory>
#include <string>

namespace llamart::tokenizer {

class Normalizer {
public:
  virtual ~Normalizer() = default;
  virtual std::string normalize(std::string text) const = 0;
};

// Builds the normalizer `spec` describes (null -> nullptr). Supported types:
// Sequence, Prepend, Replace (String pattern). Anything else is an error
// naming the file and the field.
std::unique_ptr<Normalizer> make_normalizer(const json &spec, const JsonLoc &at);

// Replaces every non-overlapping occurrence of `from` (left to right).
std::string replace_all(std::string text, const std::string &from, const std::string &to);

} // namespace llamart::tokenizer
