// The torch.save reader on arbitrary bytes: an input starting with a zip
// local header ("PK\3\4") is a consolidated.00.pth (TorchFile: zip directory,
// data.pkl, storages, byteorder; then the Meta folder it forms with a fixed
// params.json: layouts, renaming, the RoPE permutation), anything else is a
// data.pkl for the unpickler alone. Every malformed input must be a
// std::runtime_error, never a crash, an out-of-bounds access or a huge
// allocation.
#include "runtime/checkpoint/meta_folder.h"
#include "runtime/checkpoint/torch_pickle.h"
#include "runtime/checkpoint/torch_zip.h"
#include "fuzz_file.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace {

// The model of the seeds' consolidated.00.pth (make-seeds writes it).
constexpr const char *kParams =
    R"({"dim": 4, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "vocab_size": 3,)"
    R"( "multiple_of": 4, "norm_eps": 1e-05})";

std::string &params_path() {
  static std::string path;
  return path;
}

void read_meta_folder(const std::string &shard_path) {
  if (params_path().empty()) {
    params_path() = shard_path.substr(0, shard_path.rfind('/')) + "/params.json";
    std::ofstream(params_path()) << kParams;
    // Registered after fuzz_file's own handler, so it runs first and the
    // folder is empty when that one removes it.
    std::atexit([] { std::remove(params_path().c_str()); });
  }
  const llamart::ckpt::MetaFolder folder(shard_path.substr(0, shard_path.rfind('/')));
  for (size_t i = 0; i < folder.tensors().size(); ++i)
    (void)folder.read(i);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  try {
    if (size >= 4 && std::memcmp(data, "PK\x03\x04", 4) == 0) {
      const std::string &path =
          llama_fuzz::write_input(data, size, "consolidated.00.pth");
      const llamart::ckpt::TorchFile file(path);
      for (size_t i = 0; i < file.num_tensors(); ++i)
        (void)file.read(i);
      read_meta_folder(path);
    } else {
      (void)llamart::ckpt::parse_torch_state_dict(data, size, "data.pkl");
    }
  } catch (const std::runtime_error &) {
  }
  return 0;
}
