// `llama-tokenize train`: a SentencePiece BPE tokenizer with LLaMA's settings
// (Touvron et al. 2023, section 2.1: BPE, digits split, unknown UTF-8 falls
// back to bytes), trained in-process.
//
// Sentences come from our own iterator rather than SentencePiece's file
// reader so that separator lines ("%" in fortune files) and blank lines are
// not learned as text, and the model comes back as a serialized proto rather
// than <prefix>.model, so it lands exactly at -o, written atomically.
#include "runtime/checkpoint/fs_util.h"
#include "runtime/checkpoint/safetensors.h"
#include "tools/llama-tokenize/args.h"
#include "tools/llama-tokenize/commands.h"
#include "tools/llama-tokenize/documents.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <sstream>
#include <unordered_map>

// Exported by libsentencepiece (common.h, not installed). Without it the
// trainer prints several hundred INFO lines; --verbose keeps them.
namespace sentencepiece::logging {
void SetMinLogLevel(int v);
}

namespace llama_tokenize {

const char *const kTrainHelp =
    R"(usage: llama-tokenize train --input FILE... --vocab-size N -o OUT.model [options]

Trains a SentencePiece BPE tokenizer with LLaMA's settings (split digits, byte
fallback, identity normalization, whitespace kept; unk=0 bos=1 eos=2, no pad).
Every non-blank line of the inputs is one training sentence.

  --input FILE...             UTF-8 text files (required)
  --vocab-size N              vocabulary size including the 259 special and byte pieces (required)
  -o, --output OUT            model file to write; OUT.vocab (or OUT without ".model" + ".vocab")
                              receives the human-readable piece list
  --separator LINE            skip lines equal to LINE (e.g. '%' for fortune files)
  --max-sentence-length L     longer lines (bytes) are skipped by the trainer (default 4192)
  --input-sentence-size S     train on a random sample of S lines (default 0 = all)
  --threads T                 trainer threads (default 2)
  --verbose                   show SentencePiece's training log
)";

namespace {

// Feeds SentencePiece one non-blank, non-separator line at a time.
class LineIterator : public sentencepiece::SentenceIterator {
public:
  LineIterator(std::vector<std::string> files, std::optional<std::string> separator)
      : lines_(std::move(files)), separator_(std::move(separator)) {
    Next();
  }
  bool done() const override { return done_; }
  void Next() override {
    try {
      while (lines_.next(&value_)) {
        if (is_blank(value_) || (separator_ && value_ == *separator_))
          continue;
        ++count_;
        return;
      }
    } catch (const std::exception &e) {
      status_ = sentencepiece::util::Status(sentencepiece::util::StatusCode::kInternal, e.what());
    }
    done_ = true;
  }
  const std::string &value() const override { return value_; }
  sentencepiece::util::Status status() const override { return status_; }
  uint64_t count() const { return count_; }

private:
  LineReader lines_;
  std::optional<std::string> separator_;
  std::string value_;
  bool done_ = false;
  uint64_t count_ = 0;
  sentencepiece::util::Status status_;
};

std::string vocab_path_for(const std::string &model_path) {
  const std::string ext = ".model";
  if (model_path.size() > ext.size() &&
      model_path.compare(model_path.size() - ext.size(), ext.size(), ext) == 0)
    return model_path.substr(0, model_path.size() - ext.size()) + ".vocab";
  return model_path + ".vocab";
}

} // namespace

int run_train(const std::vector<std::string> &argv) {
  const Args args = Args::parse("train",
                                {{"--input", "", OptKind::List},
                                 {"--vocab-size", "", OptKind::Value},
                                 {"--output", "-o", OptKind::Value},
                                 {"--separator", "", OptKind::Value},
                                 {"--max-sentence-length", "", OptKind::Value},
                                 {"--input-sentence-size", "", OptKind::Value},
                                 {"--threads", "", OptKind::Value},
                                 {"--verbose", "", OptKind::Flag},
                                 {"--help", "-h", OptKind::Flag}},
                                argv);
  if (args.has("--help")) {
    std::fputs(kTrainHelp, stdout);
    return 0;
  }
  const std::vector<std::string> inputs = args.list("--input");
  // 3 control pieces + 256 byte pieces are always present; BPE needs room
  // for at least one learned piece beyond them.
  const int64_t vocab_size = args.integer("--vocab-size", -1, 260, INT32_MAX);
  if (vocab_size < 0)
    throw UsageError("train: missing required option --vocab-size");
  const std::string out = args.str("--output");
  const int64_t max_sentence_length =
      args.integer("--max-sentence-length", 4192, 1, INT32_MAX);
  const int64_t input_sentence_size = args.integer("--input-sentence-size", 0, 0, INT64_MAX);
  const int64_t threads = args.integer("--threads", 2, 1, 1024);
  std::optional<std::string> separator;
  if (args.has("--separator"))
    separator = args.str("--separator");
  check_text_inputs(inputs);
  check_writable_dir(llamart::ckpt::parent_dir(out)); // before, not after, an hour of training

  sentencepiece::logging::SetMinLogLevel(args.has("--verbose") ? 0 : 1);

  const std::unordered_map<std::string, std::string> spec = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"split_digits", "true"},
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"character_coverage", "0.99995"},
      {"pad_id", "-1"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"num_threads", std::to_string(threads)},
      {"max_sentence_length", std::to_string(max_sentence_length)},
      {"input_sentence_size", std::to_string(input_sentence_size)},
      {"shuffle_input_sentence", "true"},
  };

  const auto start = std::chrono::steady_clock::now();
  LineIterator sentences(inputs, separator);
  std::string model_proto;
  const auto status = sentencepiece::SentencePieceTrainer::Train(spec, &sentences, &model_proto);
  if (!sentences.status().ok())
    throw std::runtime_error(std::string("train: ") + sentences.status().message());
  if (!status.ok())
    throw std::runtime_error(std::string("train: SentencePiece: ") + status.message());

  // Round-trip through the processor: proves the proto loads and gives the
  // piece table for the .vocab file.
  sentencepiece::SentencePieceProcessor sp;
  if (const auto s = sp.LoadFromSerializedProto(model_proto); !s.ok())
    throw std::runtime_error(out + ": trained model does not load: " + s.message());
  llamart::ckpt::atomic_write_file(out, model_proto);

  std::ostringstream vocab;
  for (int id = 0; id < sp.GetPieceSize(); ++id)
    vocab << sp.IdToPiece(id) << '\t' << sp.GetScore(id) << '\n';
  const std::string vocab_path = vocab_path_for(out);
  llamart::ckpt::atomic_write_file(vocab_path, vocab.str());

  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("llama-tokenize train: %d pieces from %llu lines of %zu file(s) in %.1f s\n"
              "  wrote %s and %s\n",
              sp.GetPieceSize(), static_cast<unsigned long long>(sentences.count()),
              inputs.size(), seconds, out.c_str(), vocab_path.c_str());
  return 0;
}

} // namespace llama_tokenize
