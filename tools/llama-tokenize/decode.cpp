// `llama-tokenize decode`: ids (from the command line or a shard) back to
// text, for checking what a data set or a model's output actually contains.
#include "runtime/data/shards.h"
#include "tools/llama-tokenize/args.h"
#include "tools/llama-tokenize/commands.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace llama_tokenize {

const char *const kDecodeHelp =
    R"(usage: llama-tokenize decode --tokenizer PATH (--ids 1,2,3 | --shard FILE) [options]

Prints the text of token ids (special tokens such as BOS left out), or with
--pieces the pieces themselves.

  --tokenizer PATH    SentencePiece tokenizer.model, Hugging Face tokenizer.json,
                      or a model folder holding one (required)
  --ids LIST          comma-separated token ids
  --shard FILE        a token shard (train_00000.tok ...)
  --offset N          first token of the shard to decode (default 0)
  --count N           number of shard tokens to decode (default 256)
  --pieces            print space-separated pieces instead of text
)";

namespace {

std::vector<int32_t> parse_ids(const std::string &text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, comma - pos);
    errno = 0;
    char *end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno == ERANGE || v < INT32_MIN || v > INT32_MAX)
      throw UsageError("decode: --ids expects comma-separated integers, got '" + item + "'");
    ids.push_back(static_cast<int32_t>(v));
    pos = comma + 1;
  }
  return ids;
}

} // namespace

int run_decode(const std::vector<std::string> &argv) {
  const Args args = Args::parse("decode",
                                {{"--tokenizer", "", OptKind::Value},
                                 {"--ids", "", OptKind::Value},
                                 {"--shard", "", OptKind::Value},
                                 {"--offset", "", OptKind::Value},
                                 {"--count", "", OptKind::Value},
                                 {"--pieces", "", OptKind::Flag},
                                 {"--help", "-h", OptKind::Flag}},
                                argv);
  if (args.has("--help")) {
    std::fputs(kDecodeHelp, stdout);
    return 0;
  }
  const std::string model = args.str("--tokenizer");
  if (args.has("--ids") == args.has("--shard"))
    throw UsageError("decode: give exactly one of --ids and --shard");
  const llamart::tokenizer::Tokenizer tok = load_tokenizer(model);
  const int32_t vocab_size = tok.vocab_size();

  std::vector<int32_t> ids;
  if (args.has("--ids")) {
    ids = parse_ids(args.str("--ids"));
  } else {
    const std::string path = args.str("--shard");
    check_readable(path);
    const llamart::data::Shard shard(path);
    if (shard.header().vocab_size > static_cast<uint64_t>(vocab_size))
      throw UsageError(path + ": shard vocab_size " + std::to_string(shard.header().vocab_size) +
                       " does not match the tokenizer's " + std::to_string(vocab_size));
    const auto offset = static_cast<uint64_t>(args.integer("--offset", 0, 0, INT64_MAX));
    const auto count = static_cast<uint64_t>(args.integer("--count", 256, 0, INT64_MAX));
    for (uint64_t i = offset; i < shard.size() && i - offset < count; ++i)
      ids.push_back(shard.at(i));
  }
  for (int32_t id : ids)
    if (id < 0 || id >= vocab_size)
      throw UsageError("decode: id " + std::to_string(id) + " is outside the tokenizer's [0, " +
                       std::to_string(vocab_size) + ")");

  if (args.has("--pieces")) {
    for (size_t i = 0; i < ids.size(); ++i)
      std::printf("%s%s", i ? " " : "", tok.id_to_piece(ids[i]).c_str());
    std::printf("\n");
    return 0;
  }
  const std::string text = tok.decode(ids);
  std::printf("%s\n", text.c_str());
  return 0;
}

} // namespace llama_tokenize
