// llama-tokenize: train a LLaMA-style SentencePiece tokenizer, encode text
// into the token shards the training binaries read, and decode for checks.
#include "tools/llama-tokenize/args.h"
#include "tools/llama-tokenize/commands.h"

#include <cstdio>
#include <cstring>
#include <exception>

namespace {

const char *const kUsage =
    R"(usage: llama-tokenize <command> [options]

commands:
  train    train a SentencePiece BPE tokenizer with LLaMA's settings
  encode   encode text documents into train/val token shards
  decode   decode token ids (or a shard) back to text

Run `llama-tokenize <command> --help` for the options of a command.
)";

} // namespace

int main(int argc, char **argv) {
  using namespace llama_tokenize;
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (command == "train")
      return run_train(args);
    if (command == "encode")
      return run_encode(args);
    if (command == "decode")
      return run_decode(args);
    std::fprintf(stderr, "llama-tokenize: unknown command '%s' (train, encode, decode)\n",
                 command.c_str());
    return 2;
  } catch (const UsageError &e) {
    std::fprintf(stderr, "llama-tokenize: %s\n", e.what());
    return 2;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "llama-tokenize: %s\n", e.what());
    return 1;
  }
}
