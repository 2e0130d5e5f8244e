// SentencePiece model bytes, loaded the way runtime/train/generate.cpp and
// llama-tokenize do (SentencePieceProcessor::Load of the file), then used the
// way they use it: piece count, encode, decode. A malformed model must come
// back as a non-ok status, never a crash.
#include "fuzz_file.h"

#include <sentencepiece_processor.h>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string &path = llama_fuzz::write_input(data, size, "tokenizer.model");
  sentencepiece::SentencePieceProcessor sp;
  if (!sp.Load(path).ok())
    return 0;
  (void)sp.GetPieceSize();
  std::vector<int> ids;
  if (!sp.Encode("Hello world, 42 tokens\n\xc3\xa9t\xc3\xa9", &ids).ok())
    return 0;
  std::string text;
  (void)sp.Decode(ids, &text);
  return 0;
}
