// Meta's LLaMA checkpoint folder (what github.com/meta-llama/llama's
// download.sh fetches, and the `original/` folder of Meta's HF repos):
//
//   params.json                dim, n_layers, n_heads, [n_kv_heads],
//                              vocab_size (-1: the tokenizer's), multiple_of,
//                              [ffn_dim_multiplier], norm_eps, [rope_theta]
//   consolidated.00.pth        torch.save(state_dict) of model-parallel rank 0
//   consolidated.01.pth ...    one file per model-parallel rank
//
// Each consolidated file holds every tensor of the model, each one that
// rank's slice in fairscale's layouts:
//   tok_embeddings             ParallelEmbedding: split on dim 1 (Llama 1/2);
//                              VocabParallelEmbedding: on dim 0 (Llama 3),
//                              told apart by the slice's shape
//   wq wk wv w1 w3, output     ColumnParallelLinear: split on dim 0
//   wo w2                      RowParallelLinear: split on dim 1
//   *norm                      replicated (checked to agree)
//   rope.freqs                 a buffer of old checkpoints, ignored
// Reading merges the slices and renames the tensors to Hugging Face's names
// (model.layers.L.self_attn.q_proj.weight, ...), and permutes the rows of
// wq and wk the way transformers' convert_llama_weights_to_hf.py `permute`
// does: Meta's RoPE rotates interleaved pairs (2i, 2i+1) of each head, HF's
// rotates halves (i, i + head_dim/2), so row 2i+j of a head becomes row
// j*head_dim/2 + i. The result is the tensor set an HF folder of the same
// model holds.
#pragma once
#include "runtime/checkpoint/safetensors.h"
#include "runtime/checkpoint/torch_zip.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace llamart::ckpt {

inline constexpr const char *kMetaParamsFile = "params.json";

// "consolidated.00.pth" for model-parallel rank 0 (two digits, as Meta names them).
std::string meta_shard_file_name(size_t rank);

// True when `dir` has params.json and consolidated.00.pth.
bool is_meta_model_folder(const std::string &dir);

// params.json, as Meta's ModelArgs reads it.
struct MetaParams {
  int64_t dim = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;  // n_heads when absent or null
  int64_t vocab_size = -1; // <= 0: set from the tokenizer at run time
  std::optional<int64_t> multiple_of;
  std::optional<double> ffn_dim_multiplier;
  double norm_eps = 0;
  double rope_theta = 10000.0;
  bool use_scaled_rope = false; // Llama 3.1's RoPE frequency scaling

  int64_t head_dim() const { return dim / n_heads; }
  // Meta's FeedForward hidden size (int(2 * 4 * dim / 3), times
  // ffn_dim_multiplier, rounded up to multiple_of); nullopt without multiple_of.
  std::optional<int64_t> ffn_hidden_size() const;
};

// Reads and validates params.json (required fields present, positive,
// n_heads dividing dim, n_kv_heads dividing n_heads, an even head_dim).
// Throws "<path>: <problem>".
MetaParams read_meta_params(const std::string &path);

// Checks params.json against the config.json a program was compiled with:
// dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size (when > 0), the
// FFN size (when multiple_of is given), norm_eps, rope_theta and
// use_scaled_rope against the fields the program states; a program that ties
// its embeddings, uses biases or another activation cannot hold Meta weights
// either. Throws "<params_path>: <field> is X, but model <name> was compiled
// with <hf field> Y ..." at the first difference.
void check_meta_params_compatible(const MetaParams &params, const std::string &params_path,
                                  const nlohmann::json &program,
                                  const std::string &program_name);

// "layers.3.attention.wq.weight" -> "model.layers.3.self_attn.q_proj.weight";
// "" for a name Meta's model does not save (rope.freqs included).
std::string meta_to_hf_name(const std::string &meta_name);
// The inverse; "" for an HF name with no Meta counterpart.
std::string hf_to_meta_name(const std::string &hf_name);

// One tensor of the merged model.
struct MetaTensor {
  std::string meta_name;
  std::string hf_name;
  StDType dtype;
  std::vector<int64_t> shape; // merged
  int split_dim = -1;         // -1: replicated
  int64_t rope_heads = 0;     // > 0: wq/wk, rows permuted per head of this many
};

// An open Meta folder: params.json read, every consolidated file opened and
// its tensor table checked against the others (same names, dtypes and slice
// shapes). Tensors are read one at a time, so memory holds one merged tensor
// plus its slices. Throws "<file>: <problem>".
class MetaFolder {
public:
  explicit MetaFolder(const std::string &dir);
  ~MetaFolder();
  MetaFolder(const MetaFolder &) = delete;
  MetaFolder &operator=(const MetaFolder &) = delete;

  const std::string &dir() const { return dir_; }
  const std::string &params_path() const { return params_path_; }
  const MetaParams &params() const { return params_; }
  size_t num_shards() const { return shards_.size(); }
  const std::string &shard_path(size_t rank) const;
  // In consolidated.00.pth's order, rope.freqs left out.
  const std::vector<MetaTensor> &tensors() const { return tensors_; }

  // Tensor i merged across the shards and permuted: the HF layout, in the
  // checkpoint's dtype. Replicated tensors that differ between shards are an
  // error naming both files.
  Tensor read(size_t i) const;
  // Every tensor under its HF name (small models, tests).
  File read_all() const;

private:
  std::string dir_;
  std::string params_path_;
  MetaParams params_;
  std::vector<std::unique_ptr<TorchFile>> shards_;
  std::vector<MetaTensor> tensors_;
  std::vector<std::vector<size_t>> index_; // [tensor][shard] -> index in that file
};

} // namespace llamart::ckpt
