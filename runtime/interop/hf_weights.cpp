#include "runtime/interop/hf_weights.h"

#include "runtime/checkpoint/half.h"
#include "runtime/checkpoint/meta_folder.h"
#include "runtime/program/program_check.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace llamart::interop {

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
                 const std::string &path, const std::string &label) {
  const std::vector<int64_t> want = param_shape(info);
  if (t.shape != want)
    throw std::runtime_error(path + ": tensor " + label + " has shape " +
                             shape_string(t.shape) + ", model " + program.model_name +
                             " expects " + shape_string(want));
}

// Puts tensors named by HF name into the program's parameters, with the
// checks both folder kinds share: shapes, unexpected tensors, a tied model's
// lm_head.weight, and at the end every parameter loaded. `label(name)` is
// how a tensor is named in errors (a Meta folder adds its own name).
template <typename T> class ParamPlacer {
public:
  using Label = std::function<std::string(const std::string &)>;

  ParamPlacer(const ProgramInfo &program, T *params, Label label)
      : program_(program), params_(params), label_(std::move(label)) {
    for (int32_t p = 0; p < program.num_params; ++p)
      by_name_[program.params[p].name] = &program.params[p];
    // A tied program has the embedding but no separate output matrix.
    tied_ = by_name_.count(kEmbedding) && !by_name_.count(kLmHead);
  }

  // `path` is the file the tensor came from.
  void place(const std::string &name, const ckpt::Tensor &tensor, const std::string &path) {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) {
      if (tied_ && name == kLmHead) {
        const ParamInfo &embed = *by_name_.at(kEmbedding);
        if (tensor.shape != param_shape(embed))
          throw std::runtime_error(path + ": tensor " + label_(name) + " has shape " +
                                   shape_string(tensor.shape) + ", but tied model " +
                                   program_.model_name + " shares " + kEmbedding + " " +
                                   shape_string(param_shape(embed)));
        tied_head_.resize(static_cast<size_t>(embed.numel));
        convert_tensor(tensor, tied_head_.data(), name, path);
        tied_head_path_ = path;
        return;
      }
      throw std::runtime_error(path + ": unexpected tensor " + label_(name) + " (model " +
                               program_.model_name + " has no such parameter)");
    }
    const ParamInfo &info = *it->second;
    check_shape(tensor, info, program_, path, label_(name));
    convert_tensor(tensor, params_ + info.offset, name, path);
    loaded_.insert(name);
  }

  // `listing` is the file that lists the tensors (the index, the one file).
  void finish(const std::string &listing) const {
    for (int32_t p = 0; p < program_.num_params; ++p)
      if (!loaded_.count(program_.params[p].name))
        throw std::runtime_error(listing + ": missing tensor " +
                                 label_(program_.params[p].name) + " (model " +
                                 program_.model_name + " expects it)");
    if (!tied_head_.empty()) {
      const T *embed = params_ + by_name_.at(kEmbedding)->offset;
      if (!std::equal(tied_head_.begin(), tied_head_.end(), embed))
        throw std::runtime_error(tied_head_path_ + ": tensor " + label_(kLmHead) +
                                 " differs from " + kEmbedding + ", but model " +
                                 program_.model_name + " ties them (tie_word_embeddings)");
    }
  }

private:
  const ProgramInfo &program_;
  T *params_;
  Label label_;
  std::map<std::string, const ParamInfo *> by_name_;
  bool tied_ = false;
  std::set<std::string> loaded_;
  std::vector<T> tied_head_; // a tied model's lm_head.weight, checked at the end
  std::string tied_head_path_;
};

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

  ParamPlacer<T> placer(program, params, [](const std::string &name) { return name; });
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
      placer.place(name, tensor, wf.path);
    }
  }
  placer.finish(weights.index_path.empty() ? weights.files.front().path : weights.index_path);
  return dir;
}

template <typename T>
std::string load_meta_folder_weights(const ProgramInfo &program, const std::string &dir,
                                     T *params) {
  const std::string params_path = (fs::path(dir) / ckpt::kMetaParamsFile).string();
  // params.json is checked before the (large) consolidated files are opened.
  ckpt::check_meta_params_compatible(ckpt::read_meta_params(params_path), params_path,
                                     program_config(program), program.model_name);
  const ckpt::MetaFolder folder(dir);

  // Errors name tensors as the folder does, with the HF name the program uses.
  ParamPlacer<T> placer(program, params, [](const std::string &hf) {
    const std::string meta = ckpt::hf_to_meta_name(hf);
    return meta.empty() ? hf : meta + " (" + hf + ")";
  });
  // A merged tensor spans every file; errors name the first.
  const std::string &first = folder.shard_path(0);
  for (size_t i = 0; i < folder.tensors().size(); ++i)
    placer.place(folder.tensors()[i].hf_name, folder.read(i), first);
  placer.finish(first);
  return dir;
}

template std::string load_hf_folder_weights<float>(const ProgramInfo &,
                                                   const std::string &, float *);
template std::string load_hf_folder_weights<double>(const ProgramInfo &,
                                                    const std::string &, double *);
template std::string load_meta_folder_weights<float>(const ProgramInfo &,
                                                     const std::string &, float *);
template std::string load_meta_folder_weights<double>(const ProgramInfo &,
                                                      const std::string &, double *);

} // namespace llamart::interop
