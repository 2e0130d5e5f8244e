// Hugging Face tokenizer.json files, implemented here from the format's
// definition (the Rust `tokenizers` crate): added tokens are cut out of the
// text first, each stretch in between is normalized, split again at
// normalized added tokens, pre-tokenized into words, and each word is
// encoded by the BPE model. Decoding maps ids to pieces, leaves out special
// tokens and runs the decoder chain.
#include "runtime/tokenizer/added_tokens.h"
#include "runtime/tokenizer/bpe.h"
#include "runtime/tokenizer/decoders.h"
#include "runtime/tokenizer/engine.h"
#include "runtime/tokenizer/normalizers.h"
#include "runtime/tokenizer/pre_tokenizers.h"
#include "runtime/tokenizer/unicode.h"

#include <unordered_map>

namespace llamart::tokenizer {

namespace {

// post_processor: TemplateProcessing gives the ids around a single
// sequence; ByteLevel only adjusts offsets, which we do not produce.
void parse_post_processor(const json &spec, const JsonLoc &at,
                          std::optional<EngineSpecials::Template> &out) {
  if (spec.is_null())
    return;
  const std::string type = get_string(spec, "type", at);
  if (type == "ByteLevel")
    return;
  if (type == "Sequence") {
    const json &list = require(spec, "processors", at);
    if (!list.is_array())
      (at / "processors").fail("expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      parse_post_processor(list[i], (at / "processors")[i], out);
    return;
  }
  if (type != "TemplateProcessing")
    at.fail("unsupported post_processor type '" + type + "'");
  if (out)
    at.fail("more than one TemplateProcessing");
  const json &tokens = require(spec, "special_tokens", at);
  if (!tokens.is_object())
    (at / "special_tokens").fail("expected an object");
  const json &single = require(spec, "single", at);
  if (!single.is_array())
    (at / "single").fail("expected an array");
  EngineSpecials::Template t;
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const JsonLoc here = (at / "single")[i];
    const json &item = single[i];
    if (const json *seq = optional_member(item, "Sequence")) {
      const std::string id = get_string(*seq, "id", here / "Sequence");
      if (id != "A" || seen_sequence)
        here.fail("a single-sequence template must hold exactly one $A");
      seen_sequence = true;
      continue;
    }
    const json *special = optional_member(item, "SpecialToken");
    if (!special)
      here.fail("expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
    const std::string name = get_string(*special, "id", here / "SpecialToken");
    const auto entry = tokens.find(name);
    if (entry == tokens.end())
      (here / "SpecialToken").fail("\"" + name + "\" is not in special_tokens");
    const JsonLoc entry_at = at / "special_tokens" / name;
    const json &ids = require(*entry, "ids", entry_at);
    if (!ids.is_array())
      (entry_at / "ids").fail("expected an array");
    for (const json &id : ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= INT32_MAX)
        (entry_at / "ids").fail("expected non-negative integer ids");
      (seen_sequence ? t.suffix : t.prefix).push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
  }
  if (!seen_sequence)
    (at / "single").fail("has no $A");
  out = std::move(t);
}

class TokenizerJsonEngine final : public Engine {
public:
  explicit TokenizerJsonEngine(const std::string &path) : path_(path) {
    const json root = parse_json_file(path);
    const JsonLoc at{path, ""};
    if (!root.is_object())
      at.fail("expected a JSON object");
    const json &model = require(root, "model", at);
    const std::string type = model.contains("type") ? get_string(model, "type", at / "model") : "BPE";
    if (type != "BPE")
      (at / "model").fail("unsupported model type '" + type + "' (only BPE)");
    model_ = std::make_unique<BpeModel>(model, at / "model");
    // "truncation" and "padding" are ignored, as transformers does: it
    // resets both on every call to what the call asks for (none here).

    static const json kNull;
    auto member = [&](const char *key) -> const json & {
      const json *v = optional_member(root, key);
      return v ? *v : kNull;
    };
    normalizer_ = make_normalizer(member("normalizer"), at / "normalizer");
    pre_tokenizer_ = make_pre_tokenizer(member("pre_tokenizer"), at / "pre_tokenizer");
    decoder_ = make_decoder(member("decoder"), at / "decoder");
    parse_post_processor(member("post_processor"), at / "post_processor", template_);
    if (!template_)
      template_.emplace(); // no post-processor: nothing is added

    added_ = parse_added_tokens(member("added_tokens"), at / "added_tokens");
    vocab_size_ = model_->id_end();
    for (const AddedToken &t : added_) {
      by_id_[t.id] = &t;
      by_content_.emplace(t.content, t.id);
      vocab_size_ = std::max(vocab_size_, t.id + 1);
    }
    std::vector<std::pair<std::string, const AddedToken *>> raw, normalized;
    for (const AddedToken &t : added_) {
      if (!t.normalized)
        raw.emplace_back(t.content, &t);
      else
        normalized.emplace_back(normalizer_ ? normalizer_->normalize(t.content) : t.content, &t);
    }
    raw_matcher_ = TokenMatcher(std::move(raw));
    normalized_matcher_ = TokenMatcher(std::move(normalized));
    for (const auto &[name, ids] : {std::pair{"prefix", &template_->prefix},
                                    std::pair{"suffix", &template_->suffix}})
      for (int32_t id : *ids)
        if (!id_to_piece(id))
          (at / "post_processor").fail(std::string("template ") + name + " id " +
                                       std::to_string(id) + " is not in the vocabulary");
  }

  std::vector<int32_t> encode(const std::string &text) const override {
    if (!is_valid_utf8(text))
      decode_utf8(text, "text to encode"); // throws with the byte offset
    std::vector<int32_t> ids;
    std::vector<Piece> words;
    for (const Split &s : raw_matcher_.split(text)) {
      if (s.id) {
        ids.push_back(*s.id);
        continue;
      }
      std::string piece = text.substr(s.begin, s.end - s.begin);
      if (normalizer_)
        piece = normalizer_->normalize(std::move(piece));
      for (const Split &n : normalized_matcher_.split(piece)) {
        if (n.id) {
          ids.push_back(*n.id);
          continue;
        }
        words.assign(1, Piece{piece.substr(n.begin, n.end - n.begin), s.begin == 0 && n.begin == 0});
        if (pre_tokenizer_)
          pre_tokenizer_->split(words);
        for (const Piece &w : words)
          model_->encode_word(w.text, ids);
      }
    }
    return ids;
  }

  std::string decode(const std::vector<int32_t> &ids) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids)
      if (!is_special(id))
        tokens.push_back(*id_to_piece(id));
    if (!decoder_) {
      // HF joins undecoded tokens with spaces.
      std::string text;
      for (size_t i = 0; i < tokens.size(); ++i)
        text += (i ? " " : "") + tokens[i];
      return text;
    }
    decoder_->decode_chain(tokens);
    std::string text;
    for (const auto &t : tokens)
      text += t;
    return text;
  }

  int32_t vocab_size() const override { return vocab_size_; }

  std::optional<std::string> id_to_piece(int32_t id) const override {
    if (const auto it = by_id_.find(id); it != by_id_.end())
      return it->second->content;
    if (const std::string *p = model_->id_to_token(id))
      return *p;
    return std::nullopt;
  }

  std::optional<int32_t> piece_to_id(const std::string &piece) const override {
    if (const auto it = by_content_.find(piece); it != by_content_.end())
      return it->second;
    return model_->token_to_id(piece);
  }

  bool is_special(int32_t id) const override {
    const auto it = by_id_.find(id);
    return it != by_id_.end() && it->second->special;
  }

  EngineSpecials specials() const override {
    EngineSpecials s;
    s.unk = model_->unk_id();
    s.sequence_template = template_;
    // A template of one token before / after the text names BOS / EOS.
    if (template_->prefix.size() == 1)
      s.bos = template_->prefix[0];
    if (template_->suffix.size() == 1)
      s.eos = template_->suffix[0];
    return s;
  }

private:
  std::string path_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  std::optional<EngineSpecials::Template> template_;
  std::vector<AddedToken> added_; // never resized after construction: matchers point into it
  std::unordered_map<int32_t, const AddedToken *> by_id_;
  std::unordered_map<std::string, int32_t> by_content_;
  TokenMatcher raw_matcher_, normalized_matcher_;
  int32_t vocab_size_ = 0;
};

} // namespace

std::unique_ptr<Engine> load_tokenizer_json_engine(const std::string &path) {
  return std::make_unique<TokenizerJsonEngine>(path);
}

} // namespace llamart::tokenizer
