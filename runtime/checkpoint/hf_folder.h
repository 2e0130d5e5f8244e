// The Hugging Face model folder layout (what `save_pretrained` writes and
// `from_pretrained` reads), independent of any compiled program:
//
//   config.json                          LlamaForCausalLM settings
//   model.safetensors                    every tensor, or when it is large:
//   model-00001-of-00003.safetensors     shards, plus
//   model.safetensors.index.json         {"metadata": {"total_size": bytes},
//                                         "weight_map": {tensor: shard file}}
//   generation_config.json, tokenizer files (written by `export`)
//
// Reading validates the index against the folder (plain file names that
// exist, every file listed) so that a tensor can always be traced to the file
// that holds it in error messages. Writing splits tensors into shards the way
// transformers' `shard_checkpoint` does (in order, a new shard when the next
// tensor would overflow the limit, a tensor larger than the limit alone).
#pragma once
#include "runtime/checkpoint/safetensors.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace llamart::ckpt {

inline constexpr const char *kHfConfigFile = "config.json";
inline constexpr const char *kHfWeightsFile = "model.safetensors";
inline constexpr const char *kHfIndexFile = "model.safetensors.index.json";
// transformers' default max_shard_size, "5GB" (decimal units).
inline constexpr uint64_t kHfDefaultShardBytes = 5'000'000'000ULL;

// True when `dir` has config.json and model.safetensors or the index: a folder
// from_pretrained could load weights from.
bool is_hf_model_folder(const std::string &dir);

// Parses a JSON file that must hold an object. Throws "<path>: <problem>".
nlohmann::json read_json_object_file(const std::string &path);

struct HfWeightFile {
  std::string path;                 // dir/<file name>
  std::vector<std::string> tensors; // what the index maps to it (sorted); empty without an index
};

struct HfWeights {
  std::string index_path;          // "" when the folder has one model.safetensors
  std::vector<HfWeightFile> files; // sorted by file name
};

// The weight files of an HF folder. With model.safetensors.index.json (which
// wins over a model.safetensors next to it, as in transformers): weight_map
// must be an object of tensor name -> plain file name in `dir` that exists.
// Throws naming the index or the folder otherwise.
HfWeights find_hf_weights(const std::string &dir);

// Checks that an HF config.json (`folder`, read from `folder_path`) describes
// the model a program was compiled for (`program`, its embedded config.json):
// every field the program's config states among the shape fields
// (vocab_size, hidden_size, intermediate_size, num_hidden_layers,
// num_attention_heads, num_key_value_heads, head_dim, tie_word_embeddings)
// and the fields that change the math (model_type, hidden_act, rms_norm_eps,
// rope_theta, rope_scaling, attention_bias, mlp_bias) must be equal to the
// folder's value, read with transformers' defaults for absent fields (KV
// heads = heads, head_dim = hidden / heads, eps 1e-6, theta 1e4, untied,
// ...). Numbers compare by value. Throws "<folder_path>: <field> is X, but
// model <program_name> was compiled with Y ..." at the first difference.
void check_hf_config_compatible(const nlohmann::json &folder,
                                const std::string &folder_path,
                                const nlohmann::json &program,
                                const std::string &program_name);

// One tensor to write: its name, dtype and shape (its bytes come later).
struct HfTensorSpec {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  uint64_t bytes() const;
};

// Groups tensors (indices into `specs`, order kept) into shards of at most
// `max_shard_bytes` bytes of tensor data each; a tensor larger than the limit
// gets a shard of its own. max_shard_bytes must be > 0.
std::vector<std::vector<size_t>> plan_hf_shards(const std::vector<HfTensorSpec> &specs,
                                                uint64_t max_shard_bytes);

// "model-00002-of-00005.safetensors" for index 1 of 5 (transformers' name).
std::string hf_shard_file_name(size_t index, size_t count);

struct HfWriteResult {
  size_t num_files = 0;     // 1: model.safetensors, no index
  uint64_t total_bytes = 0; // tensor data, as the index's metadata.total_size
};

// Writes the weights of `specs` into `dir` (which must exist): one
// model.safetensors when they fit in one shard, else shards plus
// model.safetensors.index.json. `make(i)` returns the tensor of specs[i]
// (it must have that dtype and shape); only one shard's tensors are held in
// memory at a time. Every safetensors header carries `metadata` (HF loaders
// want {"format": "pt"}).
HfWriteResult write_hf_weights(const std::string &dir,
                               const std::vector<HfTensorSpec> &specs,
                               const std::function<Tensor(size_t)> &make,
                               uint64_t max_shard_bytes,
                               const std::map<std::string, std::string> &metadata);

} // namespace llamart::ckpt
