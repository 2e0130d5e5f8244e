// loadConfigFile on arbitrary bytes: HF config.json and Meta params.json are
// told apart by their keys, so one target covers both readers. Every rejection
// must be a std::runtime_error (a leaked nlohmann::json exception is a bug).
// Whatever it accepts must be a usable model: the parameter table and count
// are computed, and its HF config.json must read back to an equal config
// (the round trip that llama-compile --emit hf-config promises).
#include "models/LlamaConfig.h"
#include "fuzz_file.h"

#include <cstdio>
#include <stdexcept>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string &path = llama_fuzz::write_input(data, size, "config.json");
  llama::LlamaConfig config;
  try {
    llama::MetaParamsOptions meta;
    // Half of the inputs also take the vocab_size -1 path of params.json.
    if (size > 0 && (data[size - 1] & 1))
      meta.vocabSize = 32000;
    config = llama::loadConfigFile(path, meta);
  } catch (const std::runtime_error &) {
    return 0;
  }
  // Accepted: none of these may throw.
  (void)llama::paramCount(config);
  (void)llama::nonEmbeddingParamCount(config);
  (void)llama::paramTable(config);
  (void)llama::describe(config);
  const std::string json = llama::toHFConfigJson(config);
  const std::string &again = llama_fuzz::write_input(
      reinterpret_cast<const uint8_t *>(json.data()), json.size(), "config.json");
  if (llama::loadHFConfig(again) != config) {
    std::fprintf(stderr, "config_fuzz: HF round trip changed the config\n%s\n",
                 json.c_str());
    std::abort();
  }
  return 0;
}
