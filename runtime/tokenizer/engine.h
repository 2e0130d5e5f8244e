// The two tokenizer implementations behind Tokenizer (tokenizer.h): one per
// file format. An engine encodes without special tokens and reports what its
// own file says about them; Tokenizer combines that with the HF folder's
// config files.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace llamart::tokenizer {

// Special tokens as the tokenizer file itself names them.
struct EngineSpecials {
  std::optional<int32_t> bos, eos, unk, pad;
  // Ids the file puts before / after a sequence when special tokens are
  // requested (tokenizer.json's post_processor). Unset when the format has
  // no such notion (SentencePiece), in which case LLaMA's convention applies.
  struct Template {
    std::vector<int32_t> prefix, suffix;
  };
  std::optional<Template> sequence_template;
};

class Engine {
public:
  virtual ~Engine() = default;
  // Token ids of `text`, without special tokens around it. Thread-safe.
  virtual std::vector<int32_t> encode(const std::string &text) const = 0;
  // Text of `ids` (all valid), leaving out special tokens. Thread-safe.
  virtual std::string decode(const std::vector<int32_t> &ids) const = 0;
  // One past the largest id.
  virtual int32_t vocab_size() const = 0;
  // nullopt for an id without a piece (a gap in the vocabulary).
  virtual std::optional<std::string> id_to_piece(int32_t id) const = 0;
  virtual std::optional<int32_t> piece_to_id(const std::string &piece) const = 0;
  virtual bool is_special(int32_t id) const = 0;
  virtual EngineSpecials specials() const = 0;
};

// Both throw std::runtime_error "<path>: <what is wrong>".
std::unique_ptr<Engine> load_sentencepiece_engine(const std::string &path);
std::unique_ptr<Engine> load_tokenizer_json_engine(const std::string &path);

} // namespace llamart::tokenizer
