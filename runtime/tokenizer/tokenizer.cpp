#include "runtime/tokenizer/tokenizer.h"

#include "runtime/tokenizer/engine.h"
#include "runtime/tokenizer/folder_config.h"
#include "runtime/tokenizer/normalizers.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace llamart::tokenizer {

namespace {

namespace fs = std::filesystem;

// tokenizer.json is a JSON object; a SentencePiece model is a protobuf,
// whose first byte is a field tag (0x0A for `pieces`), never '{'.
bool looks_like_json(const std::string &file) {
  std::ifstream in(file, std::ios::binary);
  if (!in)
    throw std::runtime_error(file + ": cannot open for reading");
  char c;
  while (in.get(c))
    if (!(c == ' ' || c == '\t' || c == '\n' || c == '\r'))
      return c == '{';
  throw std::runtime_error(file + ": empty tokenizer file");
}

// The tokenizer file `path` names: itself, or the one in its folder.
std::string tokenizer_file(const std::string &path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st))
    throw std::runtime_error(path + ": " + (ec ? ec.message() : std::strerror(ENOENT)));
  if (fs::is_directory(st)) {
    for (const char *name : {"tokenizer.json", "tokenizer.model"}) {
      const fs::path candidate = fs::path(path) / name;
      if (fs::is_regular_file(candidate, ec))
        return candidate.string();
    }
    throw std::runtime_error(path + ": holds neither tokenizer.json nor tokenizer.model");
  }
  if (!fs::is_regular_file(st))
    throw std::runtime_error(path + ": not a regular file or folder");
  return path;
}

} // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer &&) noexcept = default;
Tokenizer &Tokenizer::operator=(Tokenizer &&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string &path) {
  Tokenizer t;
  t.path_ = tokenizer_file(path);
  if (looks_like_json(t.path_)) {
    t.format_ = TokenizerFormat::TokenizerJson;
    t.engine_ = load_tokenizer_json_engine(t.path_);
  } else {
    t.format_ = TokenizerFormat::SentencePiece;
    t.engine_ = load_sentencepiece_engine(t.path_);
  }
  const Engine &engine = *t.engine_;
  const std::string dir = fs::path(t.path_).parent_path().string();
  const FolderConfig config = read_folder_config(dir.empty() ? "." : dir);
  const EngineSpecials own = engine.specials();

  auto check_id = [&](int64_t id, const std::string &source) {
    if (id < 0 || id >= engine.vocab_size() || !engine.id_to_piece(static_cast<int32_t>(id)))
      throw std::runtime_error(source + ": id " + std::to_string(id) + " is not in " + t.path_ +
                               " (vocabulary of " + std::to_string(engine.vocab_size()) + ")");
    return static_cast<int32_t>(id);
  };
  auto resolve = [&](const std::optional<NamedToken> &named, std::optional<int32_t> from_file,
                     std::optional<int64_t> from_generation, const char *generation_key) {
    if (named) {
      const auto id = engine.piece_to_id(named->content);
      if (!id)
        throw std::runtime_error(named->source + ": \"" + named->content + "\" is not a token of " +
                                 t.path_);
      return std::optional<int32_t>(*id);
    }
    if (from_file)
      return from_file;
    if (from_generation)
      return std::optional<int32_t>(
          check_id(*from_generation, config.generation_config + ": " + generation_key));
    return std::optional<int32_t>();
  };
  const std::optional<int64_t> first_generation_eos =
      config.generation_eos_ids.empty() ? std::nullopt
                                        : std::optional<int64_t>(config.generation_eos_ids[0]);
  t.bos_ = resolve(config.bos_token, own.bos, config.generation_bos_id, "bos_token_id");
  t.eos_ = resolve(config.eos_token, own.eos, first_generation_eos, "eos_token_id");
  t.unk_ = resolve(config.unk_token, own.unk, std::nullopt, "");
  t.pad_ = resolve(config.pad_token, own.pad, config.generation_pad_id, "pad_token_id");

  if (t.eos_)
    t.stop_ids_.push_back(*t.eos_);
  for (int64_t id : config.generation_eos_ids) {
    const int32_t checked = check_id(id, config.generation_config + ": eos_token_id");
    if (std::find(t.stop_ids_.begin(), t.stop_ids_.end(), checked) == t.stop_ids_.end())
      t.stop_ids_.push_back(checked);
  }

  // What encode(text, true) adds: the file's template, LLaMA's BOS-only
  // convention for SentencePiece, and tokenizer_config.json's flags over
  // either (as LlamaTokenizerFast rebuilds its post-processor from them).
  if (own.sequence_template) {
    t.prefix_ = own.sequence_template->prefix;
    t.suffix_ = own.sequence_template->suffix;
  } else if (t.bos_) {
    t.prefix_ = {*t.bos_};
  }
  auto apply_flag = [&](const std::optional<bool> &flag, const char *key,
                        const std::optional<int32_t> &id, const char *token_key,
                        std::vector<int32_t> &slot) {
    if (!flag)
      return;
    if (*flag && !id)
      throw std::runtime_error(config.add_special_source + ": " + key + " is true but no " +
                               token_key + " is defined");
    slot = *flag ? std::vector<int32_t>{*id} : std::vector<int32_t>{};
  };
  apply_flag(config.add_bos_token, "add_bos_token", t.bos_, "bos_token", t.prefix_);
  apply_flag(config.add_eos_token, "add_eos_token", t.eos_, "eos_token", t.suffix_);
  t.clean_up_spaces_ = config.clean_up_tokenization_spaces;
  return t;
}

std::vector<int32_t> Tokenizer::encode(const std::string &text, bool add_special) const {
  std::vector<int32_t> body = engine_->encode(text);
  if (!add_special)
    return body;
  std::vector<int32_t> ids;
  ids.reserve(prefix_.size() + body.size() + suffix_.size());
  ids.insert(ids.end(), prefix_.begin(), prefix_.end());
  ids.insert(ids.end(), body.begin(), body.end());
  ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t> &ids) const {
  for (int32_t id : ids)
    if (id < 0 || id >= engine_->vocab_size() || !engine_->id_to_piece(id))
      throw std::runtime_error(path_ + ": cannot decode id " + std::to_string(id) +
                               ": not in the vocabulary [0, " +
                               std::to_string(engine_->vocab_size()) + ")");
  std::string text = engine_->decode(ids);
  return clean_up_spaces_ ? clean_up_tokenization(std::move(text)) : text;
}

int32_t Tokenizer::vocab_size() const { return engine_->vocab_size(); }

std::string Tokenizer::id_to_piece(int32_t id) const {
  if (auto piece = engine_->id_to_piece(id))
    return *piece;
  throw std::runtime_error(path_ + ": id " + std::to_string(id) + " is not in the vocabulary [0, " +
                           std::to_string(engine_->vocab_size()) + ")");
}

std::optional<int32_t> Tokenizer::piece_to_id(const std::string &piece) const {
  return engine_->piece_to_id(piece);
}

bool Tokenizer::is_special(int32_t id) const { return engine_->is_special(id); }

bool Tokenizer::is_stop(int32_t id) const {
  return std::find(stop_ids_.begin(), stop_ids_.end(), id) != stop_ids_.end();
}

std::string clean_up_tokenization(std::string text) {
  // The replacements of transformers' PreTrainedTokenizerBase.clean_up_tokenization,
  // in its order.
  static const std::pair<const char *, const char *> kRules[] = {
      {" .", "."}, {" ?", "?"},     {" !", "!"},     {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto &[from, to] : kRules)
    text = replace_all(std::move(text), from, to);
  return text;
}

} // namespace llamart::tokenizer
