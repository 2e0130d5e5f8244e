// One tokenizer interface over LLaMA's two tokenizer formats:
//   - SentencePiece tokenizer.model (LLaMA 1/2, TinyLlama, ours from
//     `llama-tokenize train`), through libsentencepiece;
//   - Hugging Face tokenizer.json (Llama-2's SentencePiece-style BPE with byte
//     fallback, Llama-3's byte-level BPE), implemented in this folder.
//
// Tokenizer::load(path) accepts either file, or a model folder holding one
// of them (tokenizer.json is preferred). The folder's tokenizer_config.json,
// special_tokens_map.json and generation_config.json, when present next to
// the tokenizer file, decide the BOS/EOS tokens and whether encode adds them,
// the way transformers reads them:
//   bos/eos/unk/pad: tokenizer_config.json, else special_tokens_map.json,
//     else the tokenizer file itself (SentencePiece's ids; tokenizer.json's
//     post-processor template), else generation_config.json's *_token_id;
//   encode(text, add_special=true): tokenizer_config.json's add_bos_token /
//     add_eos_token where given; otherwise tokenizer.json's post-processor,
//     or for SentencePiece LLaMA's convention (BOS, no EOS);
//   stop_ids(): the EOS plus every eos_token_id of generation_config.json.
//
// Encoding and decoding are const and thread-safe. Every error is a one-line
// std::runtime_error; those about a file start with its path, and text that
// is not UTF-8 is refused by tokenizer.json ("... invalid UTF-8 at byte N").
//
// Typical use (generation: a prompt starts with the BOS but gets no EOS,
// whatever add_eos_token says, so it takes special_prefix() by hand):
//   const Tokenizer tok = Tokenizer::load(options.tokenizer);
//   std::vector<int32_t> ids = tok.special_prefix();
//   const std::vector<int32_t> prompt = tok.encode(options.prompt, /*add_special=*/false);
//   ids.insert(ids.end(), prompt.begin(), prompt.end());
//   ... sample until tok.is_stop(next) ...
//   std::string text = tok.decode(ids);
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace llamart::tokenizer {

class Engine;

enum class TokenizerFormat { SentencePiece, TokenizerJson };

class Tokenizer {
public:
  // `path`: a tokenizer.model, a tokenizer.json (recognised by content, not
  // name), or a folder holding one of them.
  static Tokenizer load(const std::string &path);

  Tokenizer(Tokenizer &&) noexcept;
  Tokenizer &operator=(Tokenizer &&) noexcept;
  ~Tokenizer();

  // Token ids of `text` (UTF-8). With add_special, the special tokens the
  // model's files ask for are added around them (see above).
  std::vector<int32_t> encode(const std::string &text, bool add_special) const;

  // Text of `ids`, leaving out special tokens (<s>, <|eot_id|>, ...; for
  // SentencePiece its control pieces, while its unknown piece reads " ⁇ " as
  // libsentencepiece renders it), with transformers' clean_up_tokenization
  // when tokenizer_config.json asks for it. Bytes that do not form UTF-8
  // read as U+FFFD. Throws for an id outside [0, vocab_size()) or without a
  // piece.
  std::string decode(const std::vector<int32_t> &ids) const;

  // One past the largest token id (tokenizer.json: including added tokens).
  int32_t vocab_size() const;
  // The piece of an id as the file spells it ("▁the", "Ġthe", "<0x0A>");
  // throws for ids without one.
  std::string id_to_piece(int32_t id) const;
  std::optional<int32_t> piece_to_id(const std::string &piece) const;
  // Control / special tokens, which decode() leaves out.
  bool is_special(int32_t id) const;

  std::optional<int32_t> bos_id() const { return bos_; }
  std::optional<int32_t> eos_id() const { return eos_; }
  std::optional<int32_t> unk_id() const { return unk_; }
  std::optional<int32_t> pad_id() const { return pad_; }
  // Ids that end generation: eos_id() and generation_config.json's eos ids.
  const std::vector<int32_t> &stop_ids() const { return stop_ids_; }
  bool is_stop(int32_t id) const;
  // What encode(text, true) puts around the text.
  const std::vector<int32_t> &special_prefix() const { return prefix_; }
  const std::vector<int32_t> &special_suffix() const { return suffix_; }

  TokenizerFormat format() const { return format_; }
  // The tokenizer file that was loaded (inside the folder when given one).
  const std::string &path() const { return path_; }

private:
  Tokenizer();
  std::unique_ptr<Engine> engine_;
  TokenizerFormat format_ = TokenizerFormat::SentencePiece;
  std::string path_;
  std::optional<int32_t> bos_, eos_, unk_, pad_;
  std::vector<int32_t> stop_ids_, prefix_, suffix_;
  bool clean_up_spaces_ = false;
};

// transformers' clean_up_tokenization: " ." -> ".", " n't" -> "n't", ...
std::string clean_up_tokenization(std::string text);

} // namespace llamart::tokenizer
