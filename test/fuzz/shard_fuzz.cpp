// Shard on arbitrary bytes: the header, size and checksum checks must reject
// every malformed file with std::runtime_error. Accepted shards are read in
// full, which touches every mapped token.
#include "runtime/data/shards.h"
#include "fuzz_file.h"

#include <stdexcept>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string &path = llama_fuzz::write_input(data, size, "train_00000.tok");
  try {
    llamart::data::Shard shard(path);
    int64_t sum = 0;
    for (uint64_t i = 0; i < shard.size(); ++i)
      sum += shard.at(i);
    if (shard.size() > 0 && sum == INT64_MIN)
      return -1; // never true; keeps the loop from being optimised away
  } catch (const std::runtime_error &) {
  }
  return 0;
}
