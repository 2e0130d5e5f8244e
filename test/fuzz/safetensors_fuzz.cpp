// read_safetensors on arbitrary bytes: every malformed file must be a
// std::runtime_error, never a crash, an out-of-bounds read or a huge
// allocation. Accepted files are decoded further, as a checkpoint load would.
#include "runtime/checkpoint/safetensors.h"
#include "fuzz_file.h"

#include <stdexcept>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string &path = llama_fuzz::write_input(data, size, "model.safetensors");
  try {
    const auto file = llamart::ckpt::read_safetensors(path);
    for (const auto &[name, tensor] : file.tensors) {
      if (tensor.data.size() > (1u << 20))
        continue; // to_f64 of a large tensor is correct but slow; skip it
      try {
        (void)tensor.to_f64(); // throws for integer dtypes
      } catch (const std::runtime_error &) {
      }
    }
  } catch (const std::runtime_error &) {
  }
  return 0;
}
