// `llama-tokenize encode`: text documents -> train/val token shards.
//
// Each document becomes BOS + its tokens (LLaMA adds BOS and no EOS), and
// whole documents go to train or val by a hash of their index, so the split
// is reproducible and needs no second pass. Documents are encoded in batches
// on all cores (Tokenizer::encode is const and thread-safe) and appended in
// input order, so the output does not depend on the thread count. The
// tokenizer is a SentencePiece model, a Hugging Face tokenizer.json or a
// model folder holding either (runtime/tokenizer).
#include "runtime/data/shards.h"
#include "runtime/data/shuffle.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tools/llama-tokenize/args.h"
#include "tools/llama-tokenize/commands.h"
#include "tools/llama-tokenize/documents.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <thread>

namespace llama_tokenize {

const char *const kEncodeHelp =
    R"(usage: llama-tokenize encode --tokenizer PATH --input FILE... -o DIR [options]

Encodes documents into token shards DIR/train_00000.tok ... and DIR/val_00000.tok ...
A document is a paragraph (text between blank lines) or, with --separator, the
text between lines equal to the separator. Each document is BOS + its tokens.

  --tokenizer PATH        SentencePiece tokenizer.model (e.g. from `llama-tokenize train`),
                          Hugging Face tokenizer.json, or a model folder holding one (required)
  --input FILE...         UTF-8 text files (required)
  -o, --output DIR        output directory, created if missing (required)
  --val-fraction F        fraction of documents held out for validation (default 0.05)
  --shard-tokens N        tokens per shard, K/M/G suffixes allowed (default 16M)
  --separator LINE        document separator line (e.g. '%' for fortune files)
  --threads T             encoding threads (default: all cores)
  --overwrite             replace existing train_*.tok / val_*.tok shards in DIR
)";

namespace {

namespace fs = std::filesystem;

bool is_shard_name(const std::string &name) {
  auto ends_with = [&](const std::string &s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return ends_with(".tok") && (name.rfind("train_", 0) == 0 || name.rfind("val_", 0) == 0);
}

// Stale shards from an earlier, longer run would silently join the data set.
void prepare_output_dir(const std::string &dir, bool overwrite) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    throw UsageError(dir + ": cannot create directory: " + ec.message());
  check_writable_dir(dir);
  std::vector<fs::path> existing;
  for (const auto &entry : fs::directory_iterator(dir))
    if (is_shard_name(entry.path().filename().string()))
      existing.push_back(entry.path());
  if (existing.empty())
    return;
  if (!overwrite)
    throw UsageError(dir + ": already holds token shards (" +
                     existing.front().filename().string() +
                     ", ...); pass --overwrite to replace them");
  for (const auto &p : existing)
    if (!fs::remove(p, ec) || ec)
      throw std::runtime_error(p.string() + ": cannot remove: " + ec.message());
}

// Documents go to val with probability `fraction`, decided by a hash of the
// document index alone (splitmix64 is a good 64-bit mixer).
bool is_val_document(uint64_t index, double fraction) {
  uint64_t state = index;
  const uint64_t h = llamart::data::splitmix64(state);
  return static_cast<double>(h >> 11) * 0x1.0p-53 < fraction;
}

// Accumulates one split's tokens and writes a shard every `shard_tokens`.
class ShardSink {
public:
  ShardSink(std::string dir, std::string split, uint64_t shard_tokens, uint64_t vocab_size)
      : dir_(std::move(dir)), split_(std::move(split)), shard_tokens_(shard_tokens),
        vocab_size_(vocab_size) {}

  void append(int32_t bos, const std::vector<int32_t> &ids) {
    ++documents_;
    buffer_.push_back(bos);
    buffer_.insert(buffer_.end(), ids.begin(), ids.end());
    while (buffer_.size() >= shard_tokens_) {
      std::vector<int32_t> rest(buffer_.begin() + static_cast<std::ptrdiff_t>(shard_tokens_),
                                buffer_.end());
      buffer_.resize(shard_tokens_);
      write();
      buffer_.swap(rest);
    }
  }

  void finish() {
    if (!buffer_.empty())
      write();
  }

  uint64_t documents() const { return documents_; }
  uint64_t tokens() const { return tokens_; }
  uint64_t shards() const { return shards_; }

private:
  void write() {
    // Five digits keep name order == shard order, which Dataset relies on.
    if (shards_ > 99999)
      throw std::runtime_error(dir_ + ": more than 100000 " + split_ +
                               " shards; raise --shard-tokens");
    char name[32];
    std::snprintf(name, sizeof name, "%s_%05llu.tok", split_.c_str(),
                  static_cast<unsigned long long>(shards_));
    llamart::data::write_shard((fs::path(dir_) / name).string(), buffer_, vocab_size_);
    tokens_ += buffer_.size();
    ++shards_;
    buffer_.clear();
  }

  std::string dir_, split_;
  uint64_t shard_tokens_, vocab_size_;
  std::vector<int32_t> buffer_;
  uint64_t documents_ = 0, tokens_ = 0, shards_ = 0;
};

// Encodes docs[i] into ids[i]; `first_index` numbers the documents in
// messages (over all inputs, from 0).
void encode_batch(const llamart::tokenizer::Tokenizer &tok, const std::vector<std::string> &docs,
                  uint64_t first_index, std::vector<std::vector<int32_t>> &ids, unsigned threads) {
  ids.assign(docs.size(), {});
  std::vector<std::string> errors(threads);
  auto work = [&](unsigned t) {
    for (size_t i = t; i < docs.size(); i += threads) {
      try {
        ids[i] = tok.encode(docs[i], /*add_special=*/false);
      } catch (const std::exception &e) {
        errors[t] = "document " + std::to_string(first_index + i) + ": " + e.what();
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t)
    pool.emplace_back(work, t);
  work(0);
  for (auto &th : pool)
    th.join();
  for (const auto &e : errors)
    if (!e.empty())
      throw std::runtime_error("encode: " + e);
}

} // namespace

int run_encode(const std::vector<std::string> &argv) {
  const Args args = Args::parse("encode",
                                {{"--tokenizer", "", OptKind::Value},
                                 {"--input", "", OptKind::List},
                                 {"--output", "-o", OptKind::Value},
                                 {"--val-fraction", "", OptKind::Value},
                                 {"--shard-tokens", "", OptKind::Value},
                                 {"--separator", "", OptKind::Value},
                                 {"--threads", "", OptKind::Value},
                                 {"--overwrite", "", OptKind::Flag},
                                 {"--help", "-h", OptKind::Flag}},
                                argv);
  if (args.has("--help")) {
    std::fputs(kEncodeHelp, stdout);
    return 0;
  }
  const std::string model = args.str("--tokenizer");
  const std::vector<std::string> inputs = args.list("--input");
  const std::string out_dir = args.str("--output");
  const double val_fraction = args.real("--val-fraction", 0.05, 0.0, 1.0);
  const int64_t shard_tokens = args.integer("--shard-tokens", int64_t(16) << 20, 1, INT64_MAX);
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const auto threads = static_cast<unsigned>(args.integer("--threads", hw, 1, 1024));
  std::optional<std::string> separator;
  if (args.has("--separator"))
    separator = args.str("--separator");

  check_text_inputs(inputs);
  const llamart::tokenizer::Tokenizer tok = load_tokenizer(model);
  if (!tok.bos_id())
    throw UsageError(tok.path() + ": tokenizer defines no BOS token");
  const int32_t bos = *tok.bos_id();
  const uint64_t vocab_size = static_cast<uint64_t>(tok.vocab_size());
  prepare_output_dir(out_dir, args.has("--overwrite"));

  const auto start = std::chrono::steady_clock::now();
  ShardSink train(out_dir, "train", static_cast<uint64_t>(shard_tokens), vocab_size);
  ShardSink val(out_dir, "val", static_cast<uint64_t>(shard_tokens), vocab_size);
  DocumentReader reader(inputs, separator);
  uint64_t doc_index = 0;
  uint64_t text_bytes = 0;
  std::vector<std::string> batch;
  std::vector<std::vector<int32_t>> ids;
  bool more = true;
  while (more) {
    // Batches of ~8 MiB of text keep every thread busy without holding the
    // corpus in memory.
    batch.clear();
    size_t batch_bytes = 0;
    std::string doc;
    while (batch_bytes < (size_t(8) << 20) && (more = reader.next(&doc))) {
      batch_bytes += doc.size();
      batch.push_back(std::move(doc));
    }
    text_bytes += batch_bytes;
    encode_batch(tok, batch, doc_index, ids, threads);
    for (const auto &doc_ids : ids)
      (is_val_document(doc_index++, val_fraction) ? val : train).append(bos, doc_ids);
  }
  train.finish();
  val.finish();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::printf("llama-tokenize encode: %llu documents (%llu train, %llu val), %.1f MB of text "
              "from %zu file(s) in %.1f s\n"
              "  train: %llu tokens in %llu shard(s)\n"
              "  val:   %llu tokens in %llu shard(s)\n"
              "  vocab %llu (%s tokens), %.2f bytes of text per token, wrote %s\n",
              static_cast<unsigned long long>(doc_index),
              static_cast<unsigned long long>(train.documents()),
              static_cast<unsigned long long>(val.documents()), static_cast<double>(text_bytes) / 1e6,
              inputs.size(),
              seconds, static_cast<unsigned long long>(train.tokens()),
              static_cast<unsigned long long>(train.shards()),
              static_cast<unsigned long long>(val.tokens()),
              static_cast<unsigned long long>(val.shards()),
              static_cast<unsigned long long>(vocab_size), vocab_size <= 65535 ? "uint16" : "int32",
              train.tokens() + val.tokens() ? double(text_bytes) / double(train.tokens() + val.tokens()) : 0.0,
              out_dir.c_str());
  if (val_fraction > 0 && val.documents() == 0)
    std::fprintf(stderr, "llama-tokenize encode: warning: no document was assigned to val "
                         "(corpus too small for --val-fraction %g)\n", val_fraction);
  if (train.documents() == 0)
    std::fprintf(stderr, "llama-tokenize encode: warning: no train documents were written\n");
  return 0;
}

} // namespace llama_tokenize
