// Tokenizer files as runtime/tokenizer loads them (Tokenizer::load, which
// tells a tokenizer.json from a SentencePiece model by content), then used
// the way the tools use them: ids of a few texts with and without special
// tokens, decoding, every piece. Both loaders are reached from one corpus:
// SentencePiece protobufs and tokenizer.json files. Every rejection must be a
// std::runtime_error (a leaked nlohmann::json exception is a bug), and a
// tokenizer that loads must encode, decode and give pieces without crashing.
#include "fuzz_file.h"
#include "runtime/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// Text that reaches every pre-tokenizer branch: spaces, newlines, digits,
// contractions, punctuation, letters beyond ASCII, an emoji (byte fallback /
// byte-level), special-token spellings of Llama-2 and Llama-3.
const char *const kTexts[] = {
    "Hello world, 42 tokens\n\xc3\xa9t\xc3\xa9",
    "  I'm here\t\t1234567 ...!!\r\n\n <s>x</s> <|begin_of_text|>\xf0\x9f\xa6\x99",
    "",
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string &path = llama_fuzz::write_input(data, size, "tokenizer.model");
  std::vector<llamart::tokenizer::Tokenizer> loaded;
  try {
    loaded.push_back(llamart::tokenizer::Tokenizer::load(path));
  } catch (const std::runtime_error &) {
    return 0;
  }
  const llamart::tokenizer::Tokenizer &tok = loaded.front();
  const int32_t vocab = tok.vocab_size();
  if (vocab <= 0) {
    std::fprintf(stderr, "tokenizer_fuzz: loaded with vocab_size %d\n", vocab);
    std::abort();
  }
  for (const char *text : kTexts) {
    for (bool special : {false, true}) {
      std::vector<int32_t> ids;
      try {
        ids = tok.encode(text, special);
      } catch (const std::runtime_error &) {
        continue; // e.g. SentencePiece refusing the text
      }
      for (int32_t id : ids)
        if (id < 0 || id >= vocab) {
          std::fprintf(stderr, "tokenizer_fuzz: encode gave id %d outside [0, %d)\n", id, vocab);
          std::abort();
        }
      try {
        (void)tok.decode(ids);
      } catch (const std::runtime_error &) {
      }
    }
  }
  // Every piece of a small vocabulary (a gap in the ids may throw).
  std::vector<int32_t> all;
  for (int32_t id = 0; id < std::min(vocab, 4096); ++id) {
    try {
      (void)tok.id_to_piece(id);
      all.push_back(id);
    } catch (const std::runtime_error &) {
    }
  }
  try {
    (void)tok.decode(all);
  } catch (const std::runtime_error &) {
  }
  (void)tok.bos_id();
  (void)tok.stop_ids();
  return 0;
}
