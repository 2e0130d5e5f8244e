#include "runtime/train/hf_weights.h"

#include "runtime/checkpoint/half.h"
#include "runtime/train/program_check.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace llamart::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char *kEmbedding = "model.embed_tokens.weight";
constexpr const char *kLmHead = "lm_head.weight";

bool ends_with(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Converts n little-endian elements of elem_bytes each, read by `load`, to T:
// widening is exact, narrowing (f64 -> f32) rounds to nearest even.
template <typename T, typename Load>
void convert_elements(const uint8_t *src, size_t elem_bytes, int64_t n, T *dest,
                      Load load) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    dest[i] = static_cast<T>(load(src + static_cast<size_t>(i) * elem_bytes));
}

// Converts tensor `name` (read from `path`) into n elements of T.
template <typename T>
void convert_tensor(const ckpt::Tensor &t, T *dest, const std::string &name,
                    const std::string &path) {
  const int64_t n = t.numel();
  const uint8_t *src = t.data.data();
  switch (t.dtype) {
  case ckpt::StDType::F32:
    if constexpr (std::is_same_v<T, float>) {
      std::memcpy(dest, src, static_cast<size_t>(n) * 4);
      return;
    }
    convert_elements(src, 4, n, dest, [](const uint8_t *p) {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    });
    return;
  case ckpt::StDType::F64:
    if constexpr (std::is_same_v<T, double>) {
      std::memcpy(dest, src, static_cast<size_t>(n) * 8);
      return;
    }
    convert_elements(src, 8, n, dest, [](const uint8_t *p) {
      double v;
      std::memcpy(&v, p, 8);
      return v;
    });
    return;
  case ckpt::StDType::BF16:
    convert_elements(src, 2, n, dest, [](const uint8_t *p) {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return ckpt::bf16_to_float(h);
    });
    return;
  case ckpt::StDType::F16:
    convert_elements(src, 2, n, dest, [](const uint8_t *p) {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return ckpt::f16_to_float(h);
    });
    return;
  case ckpt::StDType::I32:
  case ckpt::StDType::I64:
    break;
  }
  throw std::runtime_error(path + ": tensor " + name +
                           " is an integer tensor, expected F32, F64, F16 or BF16");
}

void check_shape(const ckpt::Tensor &t, const ParamInfo &info, const ProgramInfo &program,
                 const std::string &path) {
  const std::vector<int64_t> want = param_shape(info);
  if (t.shape != want)
    throw std::runtime_error(path + ": tensor " + std::string(info.name) + " has shape " +
                             shape_string(t.shape) + ", model " + program.model_name +
                             " expects " + shape_string(want));
}

} // namespace

json program_config(const ProgramInfo &program) {
  const char *text = program.config_json ? program.config_json : "";
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : json::object();
}

template <typename T>
std::string load_hf_folder_weights(const ProgramInfo &program, const std::string &dir,
                                   T *params) {
  const std::string config_path = (fs::path(dir) / ckpt::kHfConfigFile).string();
  ckpt::check_hf_config_compatible(ckpt::read_json_object_file(config_path), config_path,
                                   program_config(program), program.model_name);
  const ckpt::HfWeights weights = ckpt::find_hf_weights(dir);

  std::map<std::string, const ParamInfo *> by_name;
  for (int32_t p = 0; p < program.num_params; ++p)
    by_name[program.params[p].name] = &program.params[p];
  // A tied program has the embedding but no separate output matrix.
  const bool tied = by_name.count(kEmbedding) && !by_name.count(kLmHead);

  std::set<std::string> loaded;
  std::vector<T> tied_head; // a tied model's lm_head.weight, checked at the end
  std::string tied_head_path;
  for (const ckpt::HfWeightFile &wf : weights.files) {
    ckpt::File file = ckpt::read_safetensors(wf.path);
    if (!weights.index_path.empty()) {
      for (const std::string &name : wf.tensors)
        if (!file.tensors.count(name))
          throw std::runtime_error(wf.path + ": missing tensor " + name + " (" +
                                   weights.index_path + " maps it to this file)");
      for (const auto &entry : file.tensors)
        if (!std::binary_search(wf.tensors.begin(), wf.tensors.end(), entry.first))
          throw std::runtime_error(wf.path + ": holds tensor " + entry.first + ", which " +
                                   weights.index_path + " does not map to this file");
    }
    for (const auto &[name, tensor] : file.tensors) {
      // Old checkpoints saved RoPE's inverse frequencies as a buffer; they
      // follow from head_dim and rope_theta, which the config check covered.
      if (ends_with(name, ".rotary_emb.inv_freq"))
        continue;
      auto it = by_name.find(name);
      if (it == by_name.end()) {
        if (tied && name == kLmHead) {
          const ParamInfo &embed = *by_name.at(kEmbedding);
          if (tensor.shape != param_shape(embed))
            throw std::runtime_error(wf.path + ": tensor " + name + " has shape " +
                                     shape_string(tensor.shape) + ", but tied model " +
                                     program.model_name + " shares " + kEmbedding + " " +
                                     shape_string(param_shape(embed)));
          tied_head.resize(static_cast<size_t>(embed.numel));
          convert_tensor(tensor, tied_head.data(), name, wf.path);
          tied_head_path = wf.path;
          continue;
        }
        throw std::runtime_error(wf.path + ": unexpected tensor " + name + " (model " +
                                 program.model_name + " has no such parameter)");
      }
      const ParamInfo &info = *it->second;
      check_shape(tensor, info, program, wf.path);
      convert_tensor(tensor, params + info.offset, name, wf.path);
      loaded.insert(name);
    }
  }

  const std::string listing =
      weights.index_path.empty() ? weights.files.front().path : weights.index_path;
  for (int32_t p = 0; p < program.num_params; ++p)
    if (!loaded.count(program.params[p].name))
      throw std::runtime_error(listing + ": missing tensor " +
                               std::string(program.params[p].name) + " (model " +
                               program.model_name + " expects it)");
  if (!tied_head.empty()) {
    const T *embed = params + by_name.at(kEmbedding)->offset;
    if (!std::equal(tied_head.begin(), tied_head.end(), embed))
      throw std::runtime_error(tied_head_path + ": tensor " + std::string(kLmHead) +
                               " differs from " + kEmbedding + ", but model " +
                               program.model_name + " ties them (tie_word_embeddings)");
  }
  return dir;
}

template std::string load_hf_folder_weights<float>(const ProgramInfo &,
                                                   const std::string &, float *);
template std::string load_hf_folder_weights<double>(const ProgramInfo &,
                                                    const std::string &, double *);

} // namespace llamart::train
