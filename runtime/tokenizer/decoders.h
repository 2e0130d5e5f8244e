// tokenizer.json "decoder": turns the pieces of a token sequence back into
// text. Each decoder rewrites the list of token strings (HF's decode_chain);
// the result is their concatenation.
// Llama-2: Sequence[Replace("▁" -> " "), ByteFallback, Fuse, Strip(" ", 1, 0)];
// Llama-3: ByteLevel.
#pragma once
#include "runtime/tokenizer/json_util.h"

#include <memory>
#include <string>
#include <vector>

namespace llamart::tokenizer {

class Decoder {
public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string> &tokens) const = 0;
};

// Supported types: Sequence, Replace (String pattern), ByteFallback, Fuse,
// Strip, ByteLevel, Metaspace. null -> nullptr; anything else is an error.
std::unique_ptr<Decoder> make_decoder(const json &spec, const JsonLoc &at);

} // namespace llamart::tokenizer
