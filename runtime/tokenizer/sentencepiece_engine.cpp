// SentencePiece tokenizer.model files, through libsentencepiece itself: it is
// the reference implementation of the format, and what LLaMA's own code uses.
#include "runtime/tokenizer/engine.h"

#include <sentencepiece_processor.h>

#include <stdexcept>

namespace llamart::tokenizer {

namespace {

class SentencePieceEngine final : public Engine {
public:
  explicit SentencePieceEngine(const std::string &path) : path_(path) {
    if (const auto s = sp_.Load(path); !s.ok())
      throw std::runtime_error(path + ": not a SentencePiece model: " + s.ToString());
    if (sp_.GetPieceSize() <= 0)
      throw std::runtime_error(path + ": SentencePiece model has no pieces");
  }

  std::vector<int32_t> encode(const std::string &text) const override {
    std::vector<int> ids;
    if (const auto s = sp_.Encode(text, &ids); !s.ok())
      throw std::runtime_error(path_ + ": cannot encode: " + s.ToString());
    return std::vector<int32_t>(ids.begin(), ids.end());
  }

  std::string decode(const std::vector<int32_t> &ids) const override {
    // SentencePiece drops control pieces (<s>, </s>) itself.
    std::string text;
    if (const auto s = sp_.Decode(std::vector<int>(ids.begin(), ids.end()), &text); !s.ok())
      throw std::runtime_error(path_ + ": cannot decode: " + s.ToString());
    return text;
  }

  int32_t vocab_size() const override { return sp_.GetPieceSize(); }

  std::optional<std::string> id_to_piece(int32_t id) const override {
    if (id < 0 || id >= sp_.GetPieceSize())
      return std::nullopt;
    return sp_.IdToPiece(id);
  }

  std::optional<int32_t> piece_to_id(const std::string &piece) const override {
    // PieceToId answers unk_id for unknown pieces.
    const int id = sp_.PieceToId(piece);
    if (id < 0 || sp_.IdToPiece(id) != piece)
      return std::nullopt;
    return id;
  }

  bool is_special(int32_t id) const override { return sp_.IsControl(id) || sp_.IsUnknown(id); }

  EngineSpecials specials() const override {
    auto opt = [](int id) { return id >= 0 ? std::optional<int32_t>(id) : std::nullopt; };
    EngineSpecials s;
    s.bos = opt(sp_.bos_id());
    s.eos = opt(sp_.eos_id());
    s.unk = opt(sp_.unk_id());
    s.pad = opt(sp_.pad_id());
    return s;
  }

private:
  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
};

} // namespace

std::unique_ptr<Engine> load_sentencepiece_engine(const std::string &path) {
  return std::make_unique<SentencePieceEngine>(path);
}

} // namespace llamart::tokenizer
