// The BPE model of tokenizer.json ("model": {"type": "BPE", ...}).
//
// A word starts as one symbol per character (a character missing from the
// vocabulary becomes its <0xAB> byte tokens with byte_fallback, else the unk
// token, fused with neighbouring unknowns when fuse_unk). Then the adjacent
// pair with the lowest merge rank is merged, leftmost first among equal
// ranks, until no adjacent pair has a merge. The merges run off a priority
// queue over a linked list of symbols, so a word of n characters costs
// O(n log n) however long it is (Llama-2's files have no pre-tokenizer: a
// whole paragraph is one word). With ignore_merges (Llama-3) a word that is
// itself in the vocabulary is emitted as is. Short words are cached per
// thread: text repeats its words, and a cache hit skips all of the above.
#pragma once
#include "runtime/tokenizer/flat_index.h"
#include "runtime/tokenizer/json_util.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llamart::tokenizer {

class BpeModel {
public:
  // Parses `spec` (the "model" object). Supports vocab, merges in both the
  // "a b" string and the ["a", "b"] pair forms, unk_token, fuse_unk,
  // byte_fallback, ignore_merges and a null or zero dropout; a
  // continuing_subword_prefix / end_of_word_suffix is an error.
  BpeModel(const json &spec, const JsonLoc &at);
  BpeModel(const BpeModel &) = delete;
  BpeModel &operator=(const BpeModel &) = delete;

  // Appends the ids of `word` (valid UTF-8, non-empty) to `out`.
  void encode_word(std::string_view word, std::vector<int32_t> &out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // nullptr when no vocabulary entry has this id.
  const std::string *id_to_token(int32_t id) const;
  // One past the largest id in the vocabulary.
  int32_t id_end() const { return static_cast<int32_t>(pieces_.size()); }
  std::optional<int32_t> unk_id() const { return unk_id_; }

private:
  using Merge = PairIndex::Value;
  void merge_word(std::string_view word, std::vector<int32_t> &out) const;

  const Merge *find_merge(int32_t a, int32_t b) const { return merges_.find(a, b); }

  std::vector<std::string> pieces_;         // id -> token ("" with has_piece_ false: a gap)
  std::vector<bool> has_piece_;
  StringIndex ids_; // over pieces_
  PairIndex merges_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  int32_t byte_ids_[256];                  // <0xAB> tokens, -1 where absent
  uint64_t instance_;                      // tells this model's cache entries apart
};

} // namespace llamart::tokenizer
