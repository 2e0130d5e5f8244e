#include "runtime/interop/hf_export.h"

#include "runtime/checkpoint/fs_util.h"
#include "runtime/checkpoint/hf_folder.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/checkpoint/half.h"
#include "runtime/program/program_check.h"
#include "runtime/tokenizer/folder_config.h"
#include "runtime/tokenizer/tokenizer.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <type_traits>
#include <unistd.h>

namespace llamart::interop {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

namespace {

ckpt::StDType st_dtype(ExportDType d) {
  switch (d) {
  case ExportDType::F32:
    return ckpt::StDType::F32;
  case ExportDType::BF16:
    return ckpt::StDType::BF16;
  case ExportDType::F16:
    return ckpt::StDType::F16;
  }
  throw std::runtime_error("invalid ExportDType");
}

// A token id field of config.json: an integer, the first of a list (Llama 3
// lists several EOS ids), or -1 when absent or null.
int64_t config_token_id(const ordered_json &config, const char *key) {
  if (!config.contains(key))
    return -1;
  const ordered_json &v = config.at(key);
  if (v.is_array() && !v.empty())
    return v.front().is_number_integer() ? v.front().get<int64_t>() : -1;
  return v.is_number_integer() ? v.get<int64_t>() : -1;
}

std::string read_binary_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad())
    throw std::runtime_error(path + ": read error");
  return ss.str();
}

void write_json(const fs::path &path, const ordered_json &j) {
  ckpt::atomic_write_file(path.string(), j.dump(2) + "\n");
}

// transformers' serialized AddedToken: special tokens are matched verbatim.
ordered_json added_token(const std::string &content) {
  return ordered_json{{"content", content}, {"lstrip", false}, {"normalized", false},
                      {"rstrip", false},     {"single_word", false}};
}

// The tokenizer files of a Llama folder: the tokenizer file itself, and a
// config under which transformers encodes as `generate` and `eval` do
// (LlamaTokenizer over tokenizer.model, LlamaTokenizerFast over
// tokenizer.json, both honouring add_bos_token / add_eos_token). Token ids
// must agree with the model's config: an exported model whose tokenizer
// starts sequences with another BOS than the one it was trained on would
// load and silently degrade.
void write_tokenizer_files(const fs::path &dir, const std::string &tokenizer_path,
                           const ordered_json &config, const ProgramInfo &program) {
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(tokenizer_path);
  const bool json_format = tok.format() == tokenizer::TokenizerFormat::TokenizerJson;
  const int64_t pieces = tok.vocab_size();
  if (pieces > program.vocab_size)
    throw std::runtime_error(tokenizer_path + ": has " + std::to_string(pieces) +
                             " pieces, model " + program.model_name + " only " +
                             std::to_string(program.vocab_size) + " tokens");
  const struct {
    const char *field;
    std::optional<int32_t> tokenizer_id;
  } ids[] = {{"bos_token_id", tok.bos_id()}, {"eos_token_id", tok.eos_id()}};
  for (const auto &id : ids) {
    const int64_t model_id = config_token_id(config, id.field);
    if (id.tokenizer_id && model_id >= 0 && *id.tokenizer_id != model_id)
      throw std::runtime_error(tokenizer_path + ": " + id.field + " is " +
                               std::to_string(*id.tokenizer_id) + ", but model " +
                               program.model_name + " has " + std::to_string(model_id));
  }
  // What encode(text, true) adds must be expressible as the two flags.
  const std::vector<int32_t> &prefix = tok.special_prefix(), &suffix = tok.special_suffix();
  const bool add_bos = !prefix.empty(), add_eos = !suffix.empty();
  if ((add_bos && (prefix.size() != 1 || prefix[0] != tok.bos_id())) ||
      (add_eos && (suffix.size() != 1 || suffix[0] != tok.eos_id())))
    throw std::runtime_error(tok.path() + ": puts other special tokens around the text "
                             "than one BOS before and one EOS after, which "
                             "tokenizer_config.json's add_bos_token / add_eos_token "
                             "cannot express");
  // clean_up_tokenization_spaces as the tokenizer's folder says (Llama-3's
  // does), so that decoding reads the same after the export.
  const fs::path folder = fs::path(tok.path()).parent_path();
  const bool clean_up =
      tokenizer::read_folder_config(folder.empty() ? "." : folder.string()).clean_up_tokenization_spaces;

  const std::string bytes = read_binary_file(tok.path());
  ckpt::AtomicFileWriter copy(
      (dir / (json_format ? "tokenizer.json" : "tokenizer.model")).string());
  copy.write(bytes.data(), bytes.size());
  copy.commit();

  struct Special {
    const char *key;
    std::optional<int32_t> id;
  };
  const Special specials[] = {{"unk_token", tok.unk_id()},
                              {"bos_token", tok.bos_id()},
                              {"eos_token", tok.eos_id()},
                              {"pad_token", tok.pad_id()}};
  ordered_json decoder = ordered_json::object();
  ordered_json special_map = ordered_json::object();
  for (const Special &s : specials) {
    if (!s.id)
      continue;
    const std::string piece = tok.id_to_piece(*s.id);
    ordered_json entry = added_token(piece);
    entry["special"] = true;
    decoder[std::to_string(*s.id)] = std::move(entry);
    special_map[s.key] = added_token(piece);
  }
  auto piece_or_null = [&](std::optional<int32_t> id) {
    return id ? ordered_json(tok.id_to_piece(*id)) : ordered_json(nullptr);
  };
  const int64_t max_len = config.contains("max_position_embeddings") &&
                                  config["max_position_embeddings"].is_number_integer()
                              ? config["max_position_embeddings"].get<int64_t>()
                              : program.seq_len;
  ordered_json tc;
  tc["add_bos_token"] = add_bos;
  tc["add_eos_token"] = add_eos;
  tc["added_tokens_decoder"] = std::move(decoder);
  tc["bos_token"] = piece_or_null(tok.bos_id());
  tc["clean_up_tokenization_spaces"] = clean_up;
  tc["eos_token"] = piece_or_null(tok.eos_id());
  if (!json_format) {
    // legacy: plain SentencePiece encoding, which is what `generate`, `eval`
    // and llama-tokenize do; it also spares the slow tokenizer the protobuf
    // rewrite of the model that legacy=false needs. (tokenizer.json spells
    // out its own normalization; legacy only matters to a slow tokenizer.)
    tc["legacy"] = true;
  }
  tc["model_max_length"] = max_len;
  tc["pad_token"] = piece_or_null(tok.pad_id());
  if (!json_format)
    tc["sp_model_kwargs"] = ordered_json::object();
  tc["tokenizer_class"] = json_format ? "LlamaTokenizerFast" : "LlamaTokenizer";
  tc["unk_token"] = piece_or_null(tok.unk_id());
  write_json(dir / "tokenizer_config.json", tc);
  write_json(dir / "special_tokens_map.json", special_map);
}

// Moves the finished temporary folder to `out`. An existing `out` is only
// replaced when it is empty or an earlier export, never an unrelated folder.
void publish_folder(const fs::path &tmp, const fs::path &out) {
  std::error_code ec;
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  fs::path old;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec))
      throw std::runtime_error("--out: " + out.string() + " exists and is not a directory");
    if (!fs::is_empty(out, ec) && !fs::exists(out / ckpt::kHfConfigFile, ec))
      throw std::runtime_error("--out: " + out.string() +
                               " exists and is not an earlier export (no config.json); "
                               "refusing to replace it");
    old = out;
    old += ".old." + std::to_string(getpid());
    fs::remove_all(old, ec);
    fs::rename(out, old, ec);
    if (ec)
      throw std::runtime_error("--out: cannot move " + out.string() + " aside: " +
                               ec.message());
  }
  fs::rename(tmp, out, ec);
  if (ec) {
    const std::string why = ec.message();
    if (!old.empty())
      fs::rename(old, out, ec); // put the earlier export back
    throw std::runtime_error("--out: cannot rename " + tmp.string() + " to " +
                             out.string() + ": " + why);
  }
  ckpt::fsync_dir(parent.string());
  if (!old.empty())
    fs::remove_all(old, ec);
}

// Removes the temporary folder unless the export completed.
class TempFolder {
public:
  explicit TempFolder(fs::path path) : path_(std::move(path)) {}
  ~TempFolder() {
    if (!released_) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  const fs::path &path() const { return path_; }
  void release() { released_ = true; }

private:
  fs::path path_;
  bool released_ = false;
};

template <typename T>
ckpt::Tensor export_tensor(const ParamInfo &info, const T *src, ExportDType dtype) {
  ckpt::Tensor t;
  t.dtype = st_dtype(dtype);
  t.shape = param_shape(info);
  const size_t n = static_cast<size_t>(info.numel);
  if (dtype == ExportDType::F32) {
    if constexpr (std::is_same_v<T, float>) {
      return ckpt::Tensor::from_f32(std::move(t.shape), src);
    } else {
      const std::vector<float> narrowed(src, src + n); // f64 program: round once
      return ckpt::Tensor::from_f32(std::move(t.shape), narrowed.data());
    }
  }
  t.data.resize(n * 2);
  uint16_t *out = reinterpret_cast<uint16_t *>(t.data.data());
  bool overflow = false;
#pragma omp parallel for schedule(static) reduction(|| : overflow)
  for (size_t i = 0; i < n; ++i) {
    // An f64 program rounds twice (to f32, then to 16 bits); the result can
    // differ from a direct rounding only for values within 2^-29 relative
    // of a 16-bit tie, far below what a 16-bit export preserves anyway.
    const float v = static_cast<float>(src[i]);
    out[i] = dtype == ExportDType::BF16 ? ckpt::float_to_bf16(v) : ckpt::float_to_f16(v);
    // f16 tops out at 65504: a finite weight must not turn into infinity.
    if (dtype == ExportDType::F16 && std::isfinite(v) &&
        (out[i] & 0x7c00u) == 0x7c00u)
      overflow = true;
  }
  if (overflow)
    throw std::runtime_error("--dtype f16: tensor " + std::string(info.name) +
                             " holds values beyond float16's range (65504); "
                             "export bf16 or f32 instead");
  return t;
}

} // namespace

ordered_json exportable_hf_config(const ProgramInfo &program) {
  const char *text = program.config_json ? program.config_json : "";
  ordered_json config = ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object() || !config.contains("model_type"))
    throw std::runtime_error(std::string("program ") + program.model_name +
                             " carries no Hugging Face config.json (compiled from MLIR "
                             "without a llama.config attribute), so it cannot be "
                             "exported as an HF folder");
  return config;
}

template <typename T>
HfExportResult write_hf_folder(const ProgramInfo &program, const T *params,
                               const HfExportOptions &o) {
  validate_program(program);
  const ordered_json base_config = exportable_hf_config(program);
  HfExportResult result;
  // "DIR/" names DIR: the temporary folder must be its sibling, not its child.
  fs::path out = fs::path(o.out).lexically_normal();
  if (!out.has_filename())
    out = out.parent_path();
  if (out.empty() || out.filename() == "." || out.filename() == ".." || out == out.root_path())
    throw std::runtime_error("--out: '" + o.out + "' does not name a folder to create");
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec)
    throw std::runtime_error("--out: cannot create " + parent.string() + ": " +
                             ec.message());
  fs::path tmp_path = out;
  tmp_path += ".tmp." + std::to_string(getpid());
  fs::remove_all(tmp_path, ec);
  if (!fs::create_directory(tmp_path, ec) || ec)
    throw std::runtime_error("--out: cannot create " + tmp_path.string() + ": " +
                             ec.message());
  TempFolder tmp(tmp_path);

  std::vector<ckpt::HfTensorSpec> specs;
  for (int32_t p = 0; p < program.num_params; ++p)
    specs.push_back({program.params[p].name, st_dtype(o.dtype),
                     param_shape(program.params[p])});
  const ckpt::HfWriteResult written = ckpt::write_hf_weights(
      tmp.path().string(), specs,
      [&](size_t i) {
        const ParamInfo &info = program.params[i];
        return export_tensor<T>(info, params + info.offset, o.dtype);
      },
      o.shard_bytes, {{"format", "pt"}});
  result.weight_files = written.num_files;
  result.weight_bytes = written.total_bytes;

  ordered_json config = base_config;
  config["torch_dtype"] = torch_dtype_name(o.dtype);
  write_json(tmp.path() / ckpt::kHfConfigFile, config);

  ordered_json generation;
  generation["_from_model_config"] = true;
  for (const char *key : {"bos_token_id", "eos_token_id"})
    if (config_token_id(config, key) >= 0)
      generation[key] = config.at(key);
  write_json(tmp.path() / "generation_config.json", generation);

  if (!o.tokenizer.empty())
    write_tokenizer_files(tmp.path(), o.tokenizer, config, program);

  ckpt::fsync_dir(tmp.path().string());
  publish_folder(tmp.path(), out);
  tmp.release();
  return result;
}

template HfExportResult write_hf_folder<float>(const ProgramInfo &, const float *,
                                               const HfExportOptions &);
template HfExportResult write_hf_folder<double>(const ProgramInfo &, const double *,
                                                const HfExportOptions &);


const char *torch_dtype_name(ExportDType dtype) {
  switch (dtype) {
  case ExportDType::F32:
    return "float32";
  case ExportDType::BF16:
    return "bfloat16";
  case ExportDType::F16:
    return "float16";
  }
  return "?";
}

} // namespace llamart::interop
