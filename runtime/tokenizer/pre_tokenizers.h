// tokenizer.json "pre_tokenizer": cuts normalized text into the words that
// BPE then encodes one by one (merges never cross a word boundary).
// Llama-3: Sequence[Split(<its regex>, Isolated), ByteLevel(use_regex=false)];
// newer Llama-2 conversions: Metaspace(prepend_scheme=first, split=false).
#pragma once
#include "runtime/tokenizer/json_util.h"

#include <memory>
#include <string>
#include <vector>

namespace llamart::tokenizer {

// A stretch of text in the pipeline. `at_start` is true when it begins at
// offset 0 of the original input (Metaspace's prepend_scheme "first" looks
// at that, like HF's offsets_original().0 == 0).
struct Piece {
  std::string text;
  bool at_start = false;
};

class PreTokenizer {
public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` with their splits; empty pieces are dropped.
  virtual void split(std::vector<Piece> &pieces) const = 0;
};

// Supported types: Sequence, Split (String or a recognised Regex; behaviors
// Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous; invert),
// Metaspace, ByteLevel. null -> nullptr; anything else is an error.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json &spec, const JsonLoc &at);

} // namespace llamart::tokenizer
