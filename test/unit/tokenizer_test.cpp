// runtime/tokenizer against independent references:
//   - golden ids of the real Llama-2 and Llama-3 tokenizer.json files
//     (Inputs/tokenizer/golden.json), computed by Hugging Face's tokenizers.js
//     and confirmed by llama-tokenizer-js / llama3-tokenizer-js
//     (Inputs/tokenizer/make_golden.mjs says where everything comes from).
//     The files are Meta's and not in the repository: tools/install-deps --tests
//     builds them (tools/fetch-tokenizer-data); the tests that need them fail
//     without them, saying so;
//   - libsentencepiece itself: a LLaMA-style SentencePiece BPE model trained
//     here, converted to tokenizer.json the way transformers' LlamaConverter
//     does, must encode and decode exactly as SentencePiece does;
//   - hand-derived expectations for the parts (UTF-8, byte-level table, the
//     split pattern, folder configs) and for every error path.
#include "runtime/checkpoint/fnv1a.h"
#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/pre_tokenizers.h"
#include "runtime/tokenizer/split_patterns.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/unicode.h"

#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unistd.h>

#include <gtest/gtest.h>

// Exported by libsentencepiece (common.h, not installed); quiets the trainer
// as tools/llama-tokenize/train.cpp does.
namespace sentencepiece::logging {
void SetMinLogLevel(int v);
}

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using llamart::tokenizer::Tokenizer;
using llamart::tokenizer::TokenizerFormat;
using Ids = std::vector<int32_t>;

const std::string kInputs = LLAMA_TOKENIZER_INPUTS;

// The folder of the Llama-2/3 tokenizer.json files: $LLAMA_TOKENIZER_DATA,
// else the one tools/fetch-tokenizer-data fills by default (CMake's
// LLAMA_TOKENIZER_DATA_DIR).
std::string llama_data_dir() {
  const char *env = std::getenv("LLAMA_TOKENIZER_DATA");
  return env && *env ? env : LLAMA_TOKENIZER_DATA_DIR;
}

std::string llama_data_file(const std::string &model) {
  return llama_data_dir() + "/" + model + "/tokenizer.json";
}

// Empty when both files are there, else the one line that says what to run.
std::string missing_llama_data() {
  for (const char *model : {"llama2", "llama3"})
    if (!fs::is_regular_file(llama_data_file(model)))
      return llama_data_file(model) +
             ": missing (Meta's tokenizer data is not in the repository); run "
             "tools/install-deps --tests or tools/fetch-tokenizer-data " + llama_data_dir();
  return {};
}

// The suites of the tests that read the real Llama files: without them, each
// fails at once with missing_llama_data()'s line rather than being skipped.
class LlamaData : public ::testing::Test {
protected:
  void SetUp() override {
    if (const std::string missing = missing_llama_data(); !missing.empty())
      GTEST_FAIL() << missing;
  }
};
using TokenizerGolden = LlamaData;
using TokenizerRoundTrip = LlamaData;
using TokenizerDecode = LlamaData;
using TokenizerSpecials = LlamaData;
using TokenizerThreads = LlamaData;
using TokenizerFolderErrors = LlamaData;

std::string read_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error(path + ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string &path, const std::string &bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  if (!out)
    throw std::runtime_error(path + ": cannot write");
}

// A folder removed with everything in it when the object goes.
class TempFolder {
public:
  explicit TempFolder(const std::string &name)
      : path_(fs::temp_directory_path() / (name + "_" + std::to_string(getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempFolder() { fs::remove_all(path_); }
  TempFolder(const TempFolder &) = delete;
  TempFolder &operator=(const TempFolder &) = delete;
  // A new subfolder.
  std::string make(const std::string &name) const {
    fs::create_directories(path_ / name);
    return (path_ / name).string();
  }

private:
  fs::path path_;
};

// Llama-3's merges are stored implicitly: the hub file's 280147 merges are
// exactly, in order, for each token by id every split into two tokens, the
// splits sorted by the ids of their halves (its tiktoken origin: a token's
// rank is its id). make_golden.mjs recorded their count and hash to prove it.
json rebuild_llama3_merges(const json &vocab) {
  std::vector<std::string> by_id(vocab.size());
  std::unordered_map<std::string, int64_t> ids;
  for (const auto &[token, id] : vocab.items()) {
    by_id.at(static_cast<size_t>(id.get<int64_t>())) = token;
    ids.emplace(token, id.get<int64_t>());
  }
  json merges = json::array();
  for (const std::string &token : by_id) {
    std::vector<std::pair<int64_t, int64_t>> local;
    for (size_t i = 1; i < token.size(); ++i) {
      if ((static_cast<unsigned char>(token[i]) & 0xC0) == 0x80)
        continue; // split at code point boundaries only
      const auto l = ids.find(token.substr(0, i)), r = ids.find(token.substr(i));
      if (l != ids.end() && r != ids.end())
        local.emplace_back(l->second, r->second);
    }
    std::sort(local.begin(), local.end());
    for (const auto &[l, r] : local)
      merges.push_back(by_id[static_cast<size_t>(l)] + " " + by_id[static_cast<size_t>(r)]);
  }
  return merges;
}

// The model folders (the data files plus their configs) and their
// tokenizers, each made on first use: ctest runs every test in its own
// process, so a test pays only for the models it touches.
class Models {
public:
  const json &golden() const { return once(golden_, [] { return json::parse(read_file(kInputs + "/golden.json")); }); }

  const std::string &llama2_dir() const {
    return once(llama2_dir_, [this] {
      const std::string dir = root_.make("llama2");
      fs::copy(llama_data_file("llama2"), dir + "/tokenizer.json");
      fs::copy(kInputs + "/llama2/tokenizer_config.json", dir);
      return dir;
    });
  }

  // Llama-3's tokenizer.json with its merges rebuilt.
  const json &llama3_json() const {
    return once(llama3_json_, [] {
      json j = json::parse(read_file(llama_data_file("llama3")));
      j["model"]["merges"] = rebuild_llama3_merges(j["model"]["vocab"]);
      return j;
    });
  }

  const std::string &llama3_dir() const {
    return once(llama3_dir_, [this] {
      const std::string dir = root_.make("llama3");
      write_file(dir + "/tokenizer.json", llama3_json().dump());
      fs::copy(kInputs + "/llama3/tokenizer_config.json", dir);
      fs::copy(kInputs + "/llama3/generation_config.json", dir);
      return dir;
    });
  }

  const Tokenizer &llama2() const { return once(llama2_, [this] { return Tokenizer::load(llama2_dir()); }); }
  const Tokenizer &llama3() const { return once(llama3_, [this] { return Tokenizer::load(llama3_dir()); }); }
  // The file alone: no config, so no clean-up and no folder tokens.
  const Tokenizer &llama3_bare() const {
    return once(llama3_bare_, [this] {
      const std::string file = root_.make("llama3_bare") + "/tokenizer.json";
      fs::copy(llama3_dir() + "/tokenizer.json", file);
      return Tokenizer::load(file);
    });
  }
  // The Llama-2 variant make_golden.mjs converts with legacy=false.
  const Tokenizer &llama2_metaspace() const {
    return once(llama2_metaspace_, [this] {
      json j = json::parse(read_file(llama2_dir() + "/tokenizer.json"));
      j["normalizer"] = nullptr;
      j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"},
                            {"prepend_scheme", "first"}, {"split", false}};
      const std::string dir = root_.make("llama2_metaspace");
      write_file(dir + "/tokenizer.json", j.dump());
      fs::copy(kInputs + "/llama2/tokenizer_config.json", dir);
      return Tokenizer::load(dir);
    });
  }
  // The variant make_golden.mjs encodes GPT-2 style.
  const Tokenizer &gpt2() const {
    return once(gpt2_, [this] {
      json j = llama3_json();
      j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true},
                            {"trim_offsets", true}, {"use_regex", true}};
      j["post_processor"] = nullptr;
      const std::string file = root_.make("gpt2_style") + "/tokenizer.json";
      write_file(file, j.dump());
      return Tokenizer::load(file);
    });
  }

  std::vector<std::string> plain_texts() const {
    std::vector<std::string> texts;
    for (const auto &c : golden()["gpt2_style"]) // the cases without special tokens
      texts.push_back(c["text"].get<std::string>());
    return texts;
  }

private:
  template <typename T, typename Make>
  static const T &once(std::optional<T> &slot, Make make) {
    if (!slot)
      slot.emplace(make());
    return *slot;
  }

  TempFolder root_{"llama_tokenizer_test"};
  mutable std::optional<json> golden_, llama3_json_;
  mutable std::optional<std::string> llama2_dir_, llama3_dir_;
  mutable std::optional<Tokenizer> llama2_, llama3_, llama3_bare_, gpt2_, llama2_metaspace_;
};

const Models &models() {
  static const Models m;
  return m;
}

std::string show(const std::string &text) { return json(text).dump(); }

// encode / decode against every golden case of `name`.
void check_golden(const Tokenizer &tok, const std::string &name) {
  const json &cases = models().golden().at(name);
  ASSERT_GT(cases.size(), 100u);
  int failures = 0;
  for (const json &c : cases) {
    const std::string text = c["text"];
    const Ids ids = c["ids"], ids_special = c["ids_special"];
    const Ids got = tok.encode(text, false), got_special = tok.encode(text, true);
    EXPECT_EQ(got, ids) << name << " encode " << show(text);
    EXPECT_EQ(got_special, ids_special) << name << " encode with special tokens " << show(text);
    EXPECT_EQ(tok.decode(ids_special), c["decoded"].get<std::string>())
        << name << " decode of " << show(text);
    failures += got != ids;
    ASSERT_LT(failures, 5) << "stopping after 5 mismatches";
  }
}

TEST_F(TokenizerGolden, Llama2MatchesReferences) {
  const Tokenizer &tok = models().llama2();
  EXPECT_EQ(tok.format(), TokenizerFormat::TokenizerJson);
  EXPECT_EQ(tok.vocab_size(), 32000);
  check_golden(tok, "llama2");
}

TEST_F(TokenizerGolden, Llama3MatchesReferences) {
  const json &m = models().llama3_json()["model"]["merges"];
  std::string joined;
  for (size_t i = 0; i < m.size(); ++i)
    joined += (i ? "\n" : "") + m[i].get<std::string>();
  const json &want = models().golden()["llama3_merges"];
  ASSERT_EQ(m.size(), want["count"].get<size_t>());
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(llamart::fnv1a64(joined.data(), joined.size())));
  ASSERT_EQ(hex, want["fnv1a64"].get<std::string>()) << "rebuilt merges differ from the hub file's";

  const Tokenizer &tok = models().llama3();
  EXPECT_EQ(tok.vocab_size(), 128256);
  check_golden(tok, "llama3");
}

TEST_F(TokenizerGolden, Llama2MetaspaceMatchesReference) {
  check_golden(models().llama2_metaspace(), "llama2_metaspace");
  // "first": only the start of the input gets a "▁", not text after <s>.
  EXPECT_EQ(models().llama2_metaspace().encode("<s>Hello", false), (Ids{1, 10994}));
  EXPECT_EQ(models().llama2().encode("<s>Hello", false), (Ids{1, 15043}));
}

TEST_F(TokenizerGolden, Gpt2PatternMatchesReference) { check_golden(models().gpt2(), "gpt2_style"); }

// Spot checks that make the golden data readable: known Llama ids.
TEST_F(TokenizerGolden, WellKnownIds) {
  const Models &m = models();
  EXPECT_EQ(m.llama2().encode("Hello world", true), (Ids{1, 15043, 3186}));
  EXPECT_EQ(m.llama3().encode("Hello world", true), (Ids{128000, 9906, 1917}));
  // Llama-3 splits digit runs into groups of at most three.
  EXPECT_EQ(m.llama3().encode("1234567", false).size(), 3u);
  EXPECT_EQ(m.llama3().id_to_piece(m.llama3().encode("1234567", false)[0]), "123");
  // Llama-2 spells a character outside its vocabulary with byte tokens.
  const Ids llama = m.llama2().encode("🦙", false);
  EXPECT_EQ(llama, (Ids{29871, 243, 162, 169, 156})) << "▁ <0xF0> <0x9F> <0xA6> <0x99>";
  EXPECT_EQ(m.llama2().id_to_piece(243), "<0xF0>");
}

TEST_F(TokenizerRoundTrip, ByteLevelAndByteFallbackAreLossless) {
  // Llama-3's byte-level BPE promises decode(encode(x)) == x for any text;
  // Llama-2's Prepend + Strip + byte fallback does too, for text without
  // "▁" or special tokens. (The Llama-3 folder's clean_up_tokenization_spaces
  // would turn " ." into ".", so the bare file is used.)
  const Models &m = models();
  for (const std::string &text : m.plain_texts()) {
    EXPECT_EQ(m.llama3_bare().decode(m.llama3_bare().encode(text, true)), text) << show(text);
    EXPECT_EQ(m.llama2().decode(m.llama2().encode(text, true)), text) << show(text);
  }
}

TEST_F(TokenizerRoundTrip, CleanUpTokenizationFollowsTheConfig) {
  const Models &m = models();
  const std::string text = "Hello , world . Is n't it ? I 'm sure ' quote ' .";
  EXPECT_EQ(m.llama3_bare().decode(m.llama3_bare().encode(text, false)), text);
  EXPECT_EQ(m.llama3().decode(m.llama3().encode(text, false)),
            "Hello, world. Isn't it? I'm sure'quote '."); // " ." goes first
}

TEST_F(TokenizerDecode, PartialCharactersBecomeReplacementCharacters) {
  const Models &m = models();
  const Ids llama3 = m.llama3().encode("🦙", false); // 4 bytes, several tokens
  ASSERT_GT(llama3.size(), 1u);
  EXPECT_EQ(m.llama3().decode({llama3[0]}), "\xEF\xBF\xBD");
  EXPECT_EQ(m.llama3().decode(llama3), "🦙");
  // Llama-2: <0xF0> <0x9F> alone is not UTF-8: one U+FFFD per byte.
  EXPECT_EQ(m.llama2().decode({243, 162}), "\xEF\xBF\xBD\xEF\xBF\xBD");
  // Special tokens are left out of the text.
  EXPECT_EQ(m.llama3().decode({128000, 9906, 128009}), "Hello");
  EXPECT_EQ(m.llama2().decode({1, 15043, 2}), "Hello");
}

TEST_F(TokenizerSpecials, FolderConfigsDecideBosEosAndStops) {
  const Models &m = models();
  EXPECT_EQ(m.llama2().bos_id(), 1);
  EXPECT_EQ(m.llama2().eos_id(), 2);
  EXPECT_EQ(m.llama2().unk_id(), 0);
  EXPECT_EQ(m.llama2().pad_id(), std::nullopt);
  EXPECT_EQ(m.llama2().stop_ids(), (Ids{2}));
  EXPECT_EQ(m.llama2().special_prefix(), (Ids{1}));
  EXPECT_TRUE(m.llama2().special_suffix().empty());

  EXPECT_EQ(m.llama3().bos_id(), 128000);
  EXPECT_EQ(m.llama3().eos_id(), 128001);
  EXPECT_EQ(m.llama3().unk_id(), std::nullopt);
  EXPECT_EQ(m.llama3().stop_ids(), (Ids{128001, 128009})); // + generation_config's <|eot_id|>
  EXPECT_TRUE(m.llama3().is_stop(128009));
  EXPECT_FALSE(m.llama3().is_stop(128000));
  EXPECT_TRUE(m.llama3().is_special(128009));
  EXPECT_FALSE(m.llama3().is_special(9906));
  EXPECT_EQ(m.llama3().piece_to_id("<|eot_id|>"), 128009);
  EXPECT_EQ(m.llama3().piece_to_id("Hello"), 9906);
  EXPECT_EQ(m.llama3().piece_to_id("no such piece"), std::nullopt);

  // The file alone: BOS from its post-processor template, no EOS known.
  EXPECT_EQ(m.llama3_bare().bos_id(), 128000);
  EXPECT_EQ(m.llama3_bare().eos_id(), std::nullopt);
  EXPECT_TRUE(m.llama3_bare().stop_ids().empty());
}

// Writes a folder holding the Llama-2 tokenizer.json and `config` as
// tokenizer_config.json.
std::string llama2_folder_with(const TempFolder &root, const std::string &name, const json &config) {
  const std::string dir = root.make(name);
  fs::copy(models().llama2_dir() + "/tokenizer.json", dir);
  write_file(dir + "/tokenizer_config.json", config.dump());
  return dir;
}

TEST_F(TokenizerSpecials, AddBosAndAddEosFlagsOverrideTheTemplate) {
  TempFolder root("tok_flags");
  const Tokenizer both = Tokenizer::load(llama2_folder_with(
      root, "both", {{"add_bos_token", true}, {"add_eos_token", true}, {"eos_token", "</s>"}}));
  EXPECT_EQ(both.encode("Hello", true), (Ids{1, 15043, 2}));
  const Tokenizer none = Tokenizer::load(
      llama2_folder_with(root, "none", {{"add_bos_token", false}}));
  EXPECT_EQ(none.encode("Hello", true), (Ids{15043}));
  // special_tokens_map.json names tokens when tokenizer_config.json does not,
  // as an AddedToken object here; generation_config.json adds stop ids.
  const std::string dir = llama2_folder_with(root, "map", json::object());
  write_file(dir + "/special_tokens_map.json",
             json{{"eos_token", {{"content", "<unk>"}, {"lstrip", false}}}}.dump());
  write_file(dir + "/generation_config.json", json{{"eos_token_id", 2}}.dump());
  const Tokenizer mapped = Tokenizer::load(dir);
  EXPECT_EQ(mapped.eos_id(), 0);
  EXPECT_EQ(mapped.stop_ids(), (Ids{0, 2}));
}

// --- SentencePiece: libsentencepiece against our tokenizer.json engine ------

// transformers' LlamaConverter (convert_slow_tokenizer.py) for a BPE
// SentencePiece model: same vocabulary; merges from SentencePieceExtractor
// (every split of a piece into two pieces, ordered by the piece's score,
// highest first, ties in vocabulary order, splits by the ids of their
// halves); control and unknown pieces as special added tokens; the
// legacy normalizer, decoder and <s> template of Llama-2's files.
json convert_llama_sentencepiece(const sentencepiece::SentencePieceProcessor &sp) {
  const int n = sp.GetPieceSize();
  json vocab = json::object();
  std::map<std::string, int> ids;
  for (int i = 0; i < n; ++i) {
    vocab[sp.IdToPiece(i)] = i;
    ids[sp.IdToPiece(i)] = i;
  }
  struct Candidate {
    float score;
    int order;
    std::string left, right;
  };
  std::vector<Candidate> candidates;
  for (int i = 0; i < n; ++i) {
    const std::string piece = sp.IdToPiece(i);
    // LlamaConverter gives the first three pieces (unk, bos, eos) score 0.
    const float score = i < 3 ? 0.0f : sp.GetScore(i);
    std::vector<std::pair<std::pair<int, int>, std::pair<std::string, std::string>>> local;
    for (size_t k = 1; k < piece.size(); ++k) {
      if ((static_cast<unsigned char>(piece[k]) & 0xC0) == 0x80)
        continue;
      const std::string l = piece.substr(0, k), r = piece.substr(k);
      if (ids.count(l) && ids.count(r))
        local.push_back({{ids[l], ids[r]}, {l, r}});
    }
    std::sort(local.begin(), local.end());
    for (auto &[key, lr] : local)
      candidates.push_back({score, static_cast<int>(candidates.size()), lr.first, lr.second});
  }
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate &a, const Candidate &b) { return a.score > b.score; });
  json merges = json::array();
  for (const Candidate &c : candidates)
    merges.push_back(json::array({c.left, c.right})); // the pair form
  json added = json::array();
  for (int i = 0; i < n; ++i)
    if (sp.IsControl(i) || sp.IsUnknown(i))
      added.push_back({{"id", i}, {"content", sp.IdToPiece(i)}, {"single_word", false},
                       {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                       {"special", true}});
  const std::string bos = sp.IdToPiece(sp.bos_id());
  return {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "▁"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                    {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"special_tokens", {{bos, {{"id", bos}, {"ids", {sp.bos_id()}}, {"tokens", {bos}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", sp.IdToPiece(sp.unk_id())},
        {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
        {"fuse_unk", true}, {"byte_fallback", true}, {"vocab", vocab}, {"merges", merges}}}};
}

struct SentencePieceModels {
  TempFolder root{"llama_tokenizer_sp_test"};
  std::string model_file, json_file;
  std::vector<std::string> texts;

  SentencePieceModels() {
    // Train on the golden texts (prose, code, many scripts), with the
    // settings of `llama-tokenize train` (LLaMA's).
    texts = models().plain_texts();
    std::string corpus;
    for (const std::string &t : texts)
      corpus += t + "\n";
    const std::string dir = root.make("model");
    write_file(dir + "/corpus.txt", corpus);
    sentencepiece::logging::SetMinLogLevel(2);
    const auto status = sentencepiece::SentencePieceTrainer::Train(
        {{"input", dir + "/corpus.txt"}, {"model_prefix", dir + "/tok"}, {"model_type", "bpe"},
         {"vocab_size", "700"}, {"split_digits", "true"}, {"byte_fallback", "true"},
         {"normalization_rule_name", "identity"}, {"remove_extra_whitespaces", "false"},
         {"allow_whitespace_only_pieces", "true"}, {"character_coverage", "0.9995"},
         {"pad_id", "-1"}, {"unk_id", "0"}, {"bos_id", "1"}, {"eos_id", "2"},
         {"num_threads", "1"}});
    if (!status.ok())
      throw std::runtime_error("spm training failed: " + status.ToString());
    model_file = dir + "/tok.model";
    sentencepiece::SentencePieceProcessor sp;
    if (!sp.Load(model_file).ok())
      throw std::runtime_error("cannot load the trained model");
    json_file = root.make("converted") + "/tokenizer.json";
    write_file(json_file, convert_llama_sentencepiece(sp).dump());
    // Lines of the corpus are texts of their own too.
    for (const std::string &t : models().plain_texts()) {
      std::istringstream lines(t);
      for (std::string line; std::getline(lines, line);)
        texts.push_back(line);
    }
  }
};

const SentencePieceModels &sentencepiece_models() {
  static const SentencePieceModels m;
  return m;
}

TEST(TokenizerSentencePiece, ConvertedJsonEncodesLikeLibsentencepiece) {
  const SentencePieceModels &m = sentencepiece_models();
  const Tokenizer sp = Tokenizer::load(m.model_file);
  const Tokenizer hf = Tokenizer::load(m.json_file);
  ASSERT_EQ(sp.format(), TokenizerFormat::SentencePiece);
  ASSERT_EQ(hf.format(), TokenizerFormat::TokenizerJson);
  ASSERT_EQ(sp.vocab_size(), hf.vocab_size());
  sentencepiece::SentencePieceProcessor raw;
  ASSERT_TRUE(raw.Load(m.model_file).ok());
  size_t byte_pieces = 0, failures = 0;
  for (const std::string &text : m.texts) {
    std::vector<int> want;
    ASSERT_TRUE(raw.Encode(text, &want).ok());
    const Ids expected(want.begin(), want.end());
    EXPECT_EQ(sp.encode(text, false), expected) << show(text);
    EXPECT_EQ(hf.encode(text, false), expected) << show(text);
    EXPECT_EQ(hf.encode(text, true), sp.encode(text, true)) << show(text);
    for (int id : want)
      byte_pieces += raw.IsByte(id);
    std::string decoded;
    ASSERT_TRUE(raw.Decode(want, &decoded).ok());
    EXPECT_EQ(sp.decode(expected), decoded) << show(text);
    EXPECT_EQ(hf.decode(expected), decoded) << show(text);
    EXPECT_EQ(decoded, text) << "SentencePiece round trip of " << show(text);
    failures += hf.encode(text, false) != expected;
    ASSERT_LT(failures, 5u) << "stopping after 5 mismatches";
  }
  EXPECT_GT(m.texts.size(), 300u);
  EXPECT_GT(byte_pieces, 50u) << "the texts should exercise byte fallback";
}

TEST(TokenizerSentencePiece, SpecialsFromTheModel) {
  const Tokenizer sp = Tokenizer::load(sentencepiece_models().model_file);
  EXPECT_EQ(sp.bos_id(), 1);
  EXPECT_EQ(sp.eos_id(), 2);
  EXPECT_EQ(sp.unk_id(), 0);
  EXPECT_EQ(sp.pad_id(), std::nullopt);
  EXPECT_EQ(sp.stop_ids(), (Ids{2}));
  EXPECT_EQ(sp.special_prefix(), (Ids{1})); // LLaMA: BOS, no EOS
  const Ids ids = sp.encode("hello", true);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(sp.decode(ids), "hello");
  EXPECT_EQ(sp.id_to_piece(1), "<s>");
  EXPECT_EQ(sp.piece_to_id("<s>"), 1);
  EXPECT_EQ(sp.piece_to_id("surely not a piece"), std::nullopt);
  EXPECT_TRUE(sp.is_special(1));
}

TEST(TokenizerLoad, FolderPrefersTokenizerJson) {
  TempFolder root("tok_folder");
  const std::string dir = root.make("both");
  fs::copy(sentencepiece_models().model_file, dir + "/tokenizer.model");
  EXPECT_EQ(Tokenizer::load(dir).format(), TokenizerFormat::SentencePiece);
  fs::copy(sentencepiece_models().json_file, dir + "/tokenizer.json");
  const Tokenizer t = Tokenizer::load(dir);
  EXPECT_EQ(t.format(), TokenizerFormat::TokenizerJson);
  EXPECT_EQ(t.path(), dir + "/tokenizer.json");
}

TEST_F(TokenizerThreads, ConcurrentEncodesAgree) {
  const Tokenizer &tok = models().llama3();
  const std::vector<std::string> texts = models().plain_texts();
  std::vector<Ids> serial;
  for (const auto &t : texts)
    serial.push_back(tok.encode(t, true));
  std::vector<std::vector<Ids>> results(4);
  std::vector<std::thread> pool;
  for (size_t k = 0; k < results.size(); ++k)
    pool.emplace_back([&, k] {
      for (const auto &t : texts)
        results[k].push_back(tok.encode(t, true));
    });
  for (auto &th : pool)
    th.join();
  for (const auto &r : results)
    EXPECT_EQ(r, serial);
}

// --- the parts ----------------------------------------------------------------

TEST(TokenizerUnicode, CategoriesAndUtf8) {
  using namespace llamart::tokenizer;
  EXPECT_TRUE(is_letter(U'a') && is_letter(U'Ж') && is_letter(U'日') && is_letter(U'ſ'));
  EXPECT_FALSE(is_letter(U'1') || is_letter(U'_') || is_letter(U'🦙') || is_letter(0x301));
  EXPECT_TRUE(is_number(U'7') && is_number(U'٣') && is_number(U'½') && is_number(U'Ⅻ'));
  EXPECT_FALSE(is_number(U'x'));
  for (char32_t c : {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x200A,
                     0x2028, 0x2029, 0x202F, 0x205F, 0x3000})
    EXPECT_TRUE(is_whitespace(c)) << std::hex << c;
  for (char32_t c : {0x1C, 0x200B, 0xFEFF, 0x180E})
    EXPECT_FALSE(is_whitespace(c)) << std::hex << c;

  EXPECT_EQ(decode_utf8("a\xC3\xA9\xF0\x9F\xA6\x99", "t"), (std::vector<char32_t>{U'a', U'é', U'🦙'}));
  for (const char *bad : {"\xC0\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xE2\x82", "\x80"})
    EXPECT_THROW(decode_utf8(bad, "t"), std::runtime_error) << show(bad);
  // Rust's from_utf8_lossy: one U+FFFD per maximal invalid subpart.
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(utf8_lossy("a\xF0\x9F\xA6"), "a" + r);        // truncated 4-byte sequence
  EXPECT_EQ(utf8_lossy("\xC0\x80z"), r + r + "z");         // overlong: two bytes, two U+FFFD
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), r + r + r);         // a surrogate
  EXPECT_EQ(utf8_lossy("\xE2\x82\xAC\xE2\x82"), "€" + r);
}

TEST(TokenizerByteLevel, Gpt2Table) {
  using namespace llamart::tokenizer;
  EXPECT_EQ(byte_to_char(' '), 0x120);  // Ġ
  EXPECT_EQ(byte_to_char('\n'), 0x10A); // Ċ
  EXPECT_EQ(byte_to_char('A'), U'A');
  EXPECT_EQ(byte_to_char(0xAD), 0x143); // the last of the 68 remapped bytes
  for (int b = 0; b < 256; ++b)
    EXPECT_EQ(char_to_byte(byte_to_char(static_cast<unsigned char>(b))), b);
  EXPECT_EQ(char_to_byte(U'日'), -1);
  EXPECT_EQ(bytes_to_chars("a b"), "aĠb");
}

TEST(TokenizerSplitPattern, Llama3Alternatives) {
  using namespace llamart::tokenizer;
  auto pieces = [](const std::u32string &s) {
    const std::vector<char32_t> cps(s.begin(), s.end());
    std::vector<std::u32string> out;
    for (const auto &[b, e] : find_pattern_matches(SplitPattern::Llama3, cps))
      out.push_back(s.substr(b, e - b));
    return out;
  };
  using V = std::vector<std::u32string>;
  // Contractions are case-insensitive; a letter run may take one leading
  // non-letter; digits go by three; punctuation keeps a leading space and
  // trailing newlines; whitespace before a word leaves its last space to it.
  EXPECT_EQ(pieces(U"I'M here"), (V{U"I", U"'M", U" here"}));
  EXPECT_EQ(pieces(U"12345"), (V{U"123", U"45"}));
  EXPECT_EQ(pieces(U"a ...\n\nb"), (V{U"a", U" ...\n\n", U"b"}));
  EXPECT_EQ(pieces(U"x   y"), (V{U"x", U"  ", U" y"}));
  EXPECT_EQ(pieces(U"x \n \n  y"), (V{U"x", U" \n \n", U" ", U" y"}));
  EXPECT_EQ(pieces(U"end  "), (V{U"end", U"  "}));
  EXPECT_EQ(pieces(U"$x"), (V{U"$x"}));
  EXPECT_FALSE(recognize_split_pattern("\\w+"));
  // Qwen2's variant of the pattern takes digits one by one.
  const std::u32string digits = U"12345";
  EXPECT_EQ(find_pattern_matches(SplitPattern::Llama3SingleDigits,
                                 std::vector<char32_t>(digits.begin(), digits.end()))
                .size(),
            5u);
}

// Words of `text` after the pre-tokenizer `spec`.
std::vector<std::string> pre_tokenize(const json &spec, const std::string &text) {
  using namespace llamart::tokenizer;
  const auto pre = make_pre_tokenizer(spec, JsonLoc{"test", "pre_tokenizer"});
  std::vector<Piece> pieces{{text, true}};
  pre->split(pieces);
  std::vector<std::string> words;
  for (const Piece &p : pieces)
    words.push_back(p.text);
  return words;
}

TEST(TokenizerPreTokenizers, SplitBehaviorsAsDocumented) {
  // The example of tokenizers' SplitDelimiterBehavior documentation.
  using V = std::vector<std::string>;
  auto split = [](const char *behavior, bool invert = false) {
    return pre_tokenize({{"type", "Split"}, {"pattern", {{"String", "-"}}},
                         {"behavior", behavior}, {"invert", invert}},
                        "the-final--countdown");
  };
  EXPECT_EQ(split("Removed"), (V{"the", "final", "countdown"}));
  EXPECT_EQ(split("Isolated"), (V{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(split("MergedWithPrevious"), (V{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(split("MergedWithNext"), (V{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(split("Contiguous"), (V{"the", "-", "final", "--", "countdown"}));
  EXPECT_EQ(split("Removed", /*invert=*/true), (V{"-", "-", "-"}));
}

TEST(TokenizerPreTokenizers, MetaspaceAndByteLevel) {
  using V = std::vector<std::string>;
  // tokenizers' own Metaspace tests.
  const json metaspace = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}};
  EXPECT_EQ(pre_tokenize(metaspace, "Hey friend!"), (V{"▁Hey", "▁friend!"}));
  EXPECT_EQ(pre_tokenize(metaspace, "Hey   friend!"), (V{"▁Hey", "▁", "▁", "▁friend!"}));
  const json never = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "never"},
                      {"split", false}};
  EXPECT_EQ(pre_tokenize(never, "Hey friend"), (V{"Hey▁friend"}));
  // ByteLevel with its GPT-2 regex and a prefix space: bytes become Ġ etc.
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  EXPECT_EQ(pre_tokenize(byte_level, "Hello  world\n"), (V{"ĠHello", "Ġ", "Ġworld", "Ċ"}));
}

// --- errors: one line naming the file and what is wrong -------------------------

// Loading `tokenizer_json` (written to a file) must fail with a message
// containing every string of `expected`.
void expect_load_error(const json &tokenizer_json, const std::vector<std::string> &expected) {
  TempFolder root("tok_errors");
  const std::string file = root.make("t") + "/tokenizer.json";
  write_file(file, tokenizer_json.dump());
  try {
    Tokenizer::load(file);
    ADD_FAILURE() << "loaded without error: " << tokenizer_json.dump().substr(0, 200);
  } catch (const std::runtime_error &e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    EXPECT_EQ(what.rfind(file, 0), 0u) << "message should start with the file: " << what;
    for (const auto &s : expected)
      EXPECT_NE(what.find(s), std::string::npos) << "'" << s << "' missing from: " << what;
  }
}

json tiny_tokenizer() {
  return {{"model",
           {{"type", "BPE"},
            {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}},
            {"merges", {"a b"}}}}};
}

TEST(TokenizerErrors, UnsupportedComponentsAreNamed) {
  json t = tiny_tokenizer();
  {
    TempFolder root("tok_tiny");
    const std::string file = root.make("ok") + "/tokenizer.json";
    write_file(file, t.dump());
    EXPECT_EQ(Tokenizer::load(file).encode("abab", false), (Ids{2, 2}));
  }
  t["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_load_error(t, {"pre_tokenizer", "unsupported pre_tokenizer type 'Whitespace'"});
  t = tiny_tokenizer();
  t["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "\\d+"}}},
                                            {"behavior", "Isolated"}, {"invert", false}}}}};
  expect_load_error(t, {"pre_tokenizer.pretokenizers[0].pattern", "unsupported Split regex", "\\d+"});
  t = tiny_tokenizer();
  t["normalizer"] = {{"type", "NFKC"}};
  expect_load_error(t, {"normalizer", "'NFKC'"});
  t = tiny_tokenizer();
  t["decoder"] = {{"type", "WordPiece"}};
  expect_load_error(t, {"decoder", "'WordPiece'"});
  t = tiny_tokenizer();
  t["post_processor"] = {{"type", "BertProcessing"}};
  expect_load_error(t, {"post_processor", "'BertProcessing'"});
  t = tiny_tokenizer();
  t["model"]["type"] = "Unigram";
  expect_load_error(t, {"model", "unsupported model type 'Unigram'"});
  t = tiny_tokenizer();
  t["model"]["dropout"] = 0.1;
  expect_load_error(t, {"model.dropout", "unsupported BPE dropout"});
  t = tiny_tokenizer();
  t["model"]["continuing_subword_prefix"] = "##";
  expect_load_error(t, {"model.continuing_subword_prefix"});
}

TEST(TokenizerErrors, MalformedFilesAreNamed) {
  json t = tiny_tokenizer();
  t["model"]["merges"] = {"a c"};
  expect_load_error(t, {"model.merges[0]", "\"c\" is not in the vocabulary"});
  t["model"]["merges"] = {"b a"};
  expect_load_error(t, {"model.merges[0]", "merged token \"ba\""});
  t["model"]["merges"] = {"ab"};
  expect_load_error(t, {"model.merges[0]", "exactly one space"});
  t = tiny_tokenizer();
  t["model"]["vocab"]["c"] = 1;
  expect_load_error(t, {"model.vocab", "id 1 is used by both"});
  t = tiny_tokenizer();
  t["model"]["vocab"]["c"] = 2000000000;
  expect_load_error(t, {"model.vocab", "sparse"});
  t = tiny_tokenizer();
  t["model"]["unk_token"] = "<unk>";
  expect_load_error(t, {"model.unk_token", "\"<unk>\" is not in the vocabulary"});
  t = tiny_tokenizer();
  t["model"].erase("merges");
  expect_load_error(t, {"model.merges: missing"});
  t = tiny_tokenizer();
  t["added_tokens"] = {{{"id", 3}, {"content", ""}}};
  expect_load_error(t, {"added_tokens[0].content", "empty"});
  t = tiny_tokenizer();
  t["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
                         {"special_tokens", {{"<s>", {{"ids", {7}}}}}}};
  expect_load_error(t, {"post_processor", "id 7 is not in the vocabulary"});

  TempFolder root("tok_malformed");
  const std::string bad_json = root.make("j") + "/tokenizer.json";
  write_file(bad_json, "{\"model\": ");
  EXPECT_THROW(
      {
        try {
          Tokenizer::load(bad_json);
        } catch (const std::runtime_error &e) {
          EXPECT_EQ(std::string(e.what()).rfind(bad_json + ": not valid JSON", 0), 0u) << e.what();
          throw;
        }
      },
      std::runtime_error);
}

// `fn` must throw a std::runtime_error whose message contains `needle`.
void expect_error(const std::function<void()> &fn, const std::string &needle) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TokenizerErrors, Paths) {
  TempFolder root("tok_paths");
  const std::string missing = root.make("x") + "/missing.model";
  expect_error([&] { Tokenizer::load(missing); }, missing + ": ");
  const std::string empty_dir = root.make("empty");
  expect_error([&] { Tokenizer::load(empty_dir); },
               empty_dir + ": holds neither tokenizer.json nor tokenizer.model");
  const std::string not_sp = root.make("garbage") + "/tokenizer.model";
  write_file(not_sp, "\x01\x02garbage");
  expect_error([&] { Tokenizer::load(not_sp); }, not_sp + ": not a SentencePiece model");
}

TEST_F(TokenizerFolderErrors, ConfigsAndIds) {
  TempFolder root("tok_configs");
  const std::string dir = llama2_folder_with(root, "badbos", {{"bos_token", "<bos>"}});
  expect_error([&] { Tokenizer::load(dir); },
               dir + "/tokenizer_config.json: bos_token: \"<bos>\" is not a token of");
  const std::string dir2 = llama2_folder_with(root, "badflag", {{"add_bos_token", "yes"}});
  expect_error([&] { Tokenizer::load(dir2); }, "tokenizer_config.json: add_bos_token: expected true or false");
  const std::string dir3 = llama2_folder_with(root, "badgen", json::object());
  write_file(dir3 + "/generation_config.json", json{{"eos_token_id", {2, 99999}}}.dump());
  expect_error([&] { Tokenizer::load(dir3); }, "generation_config.json: eos_token_id: id 99999 is not in");
  // Llama-2's tokenizer.json names no EOS, so add_eos_token needs eos_token.
  const std::string dir4 = llama2_folder_with(root, "noeos", {{"add_eos_token", true}});
  expect_error([&] { Tokenizer::load(dir4); },
               "tokenizer_config.json: add_eos_token is true but no eos_token is defined");

  const Tokenizer &tok = models().llama3();
  expect_error([&] { tok.decode({5, 128256}); }, "cannot decode id 128256");
  expect_error([&] { tok.decode({-1}); }, "cannot decode id -1");
  expect_error([&] { tok.id_to_piece(200000); }, "id 200000 is not in the vocabulary");
  expect_error([&] { tok.encode("ok \xFF", false); }, "invalid UTF-8 at byte 3");
}

} // namespace
