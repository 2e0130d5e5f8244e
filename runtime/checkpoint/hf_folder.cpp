#include "runtime/checkpoint/hf_folder.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace llamart::ckpt {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A weight_map value must name a file directly inside the folder: an index
// pointing elsewhere ("../x", "/etc/passwd") is refused rather than followed.
bool is_plain_file_name(const std::string &name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find('/') == std::string::npos && name.find('\\') == std::string::npos;
}

// rope_scaling in one spelling: "type" (older configs) read as "rope_type",
// transformers 5's rope_theta beside it dropped, plain RoPE as null.
json canonical_rope_scaling(const json &r) {
  if (!r.is_object())
    return r;
  json out = r;
  if (!out.contains("rope_type") && out.contains("type"))
    out["rope_type"] = out["type"];
  out.erase("type");
  out.erase("rope_theta");
  if (out.contains("rope_type") && out["rope_type"] == "default" && out.size() == 1)
    return nullptr;
  return out;
}

// A config's fields that decide whether weights fit a program; with
// `hf_defaults`, completed by the defaults transformers' LlamaConfig applies
// when a field is absent or null. A field without a value is left out.
json resolve_config_fields(const json &c, bool hf_defaults) {
  json out = json::object();
  auto take = [&](const char *key) {
    if (c.contains(key) && !c.at(key).is_null())
      out[key] = c.at(key);
  };
  for (const char *key :
       {"model_type", "vocab_size", "hidden_size", "intermediate_size",
        "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "tie_word_embeddings", "hidden_act", "rms_norm_eps", "rope_theta",
        "attention_bias", "mlp_bias"})
    take(key);
  // rope_scaling null is a value (plain RoPE), not an absent field.
  if (c.contains("rope_scaling"))
    out["rope_scaling"] = canonical_rope_scaling(c.at("rope_scaling"));
  // transformers >= 5 nests RoPE settings in "rope_parameters".
  if (c.contains("rope_parameters") && c.at("rope_parameters").is_object()) {
    const json &rp = c.at("rope_parameters");
    if (rp.contains("rope_theta") && rp.at("rope_theta").is_number())
      out["rope_theta"] = rp.at("rope_theta");
    if (rp.contains("rope_type") || rp.contains("type"))
      out["rope_scaling"] = canonical_rope_scaling(rp);
  }
  if (!hf_defaults)
    return out;
  if (!out.contains("num_key_value_heads") && out.contains("num_attention_heads"))
    out["num_key_value_heads"] = out["num_attention_heads"];
  if (!out.contains("head_dim") && out.contains("hidden_size") &&
      out.contains("num_attention_heads") && out["hidden_size"].is_number_integer() &&
      out["num_attention_heads"].is_number_integer()) {
    const int64_t hidden = out["hidden_size"].get<int64_t>();
    const int64_t heads = out["num_attention_heads"].get<int64_t>();
    if (heads > 0 && hidden % heads == 0)
      out["head_dim"] = hidden / heads;
  }
  const std::pair<const char *, json> defaults[] = {
      {"tie_word_embeddings", false}, {"hidden_act", "silu"},
      {"rms_norm_eps", 1e-6},         {"rope_theta", 10000.0},
      {"attention_bias", false},      {"mlp_bias", false},
      {"rope_scaling", nullptr}};
  for (const auto &[key, value] : defaults)
    if (!out.contains(key))
      out[key] = value;
  return out;
}

// Numbers compare by value (4096 == 4096.0, 1e-05 == 0.00001); anything else
// as JSON.
bool same_value(const json &a, const json &b) {
  if (a.is_number() && b.is_number())
    return a.get<double>() == b.get<double>();
  return a == b;
}

} // namespace

bool is_hf_model_folder(const std::string &dir) {
  std::error_code ec;
  const fs::path p(dir);
  return fs::is_directory(p, ec) && fs::is_regular_file(p / kHfConfigFile, ec) &&
         (fs::is_regular_file(p / kHfWeightsFile, ec) ||
          fs::is_regular_file(p / kHfIndexFile, ec));
}

json read_json_object_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    throw std::runtime_error(path + ": not valid JSON");
  if (!j.is_object())
    throw std::runtime_error(path + ": expected a JSON object at top level, got " +
                             std::string(j.type_name()));
  return j;
}

HfWeights find_hf_weights(const std::string &dir) {
  std::error_code ec;
  const fs::path root(dir);
  const fs::path index = root / kHfIndexFile;
  HfWeights out;
  if (!fs::exists(index, ec)) {
    const fs::path single = root / kHfWeightsFile;
    if (!fs::is_regular_file(single, ec))
      throw std::runtime_error(dir + ": holds neither " + kHfWeightsFile + " nor " +
                               kHfIndexFile);
    out.files.push_back({single.string(), {}});
    return out;
  }

  out.index_path = index.string();
  const json j = read_json_object_file(out.index_path);
  if (!j.contains("weight_map") || !j.at("weight_map").is_object())
    throw std::runtime_error(out.index_path + ": missing \"weight_map\" object");
  const json &map = j.at("weight_map");
  if (map.empty())
    throw std::runtime_error(out.index_path + ": \"weight_map\" is empty");
  std::map<std::string, std::vector<std::string>> by_file;
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (!it->is_string())
      throw std::runtime_error(out.index_path + ": weight_map entry for " + it.key() +
                               " is not a file name");
    const std::string file = it->get<std::string>();
    if (!is_plain_file_name(file))
      throw std::runtime_error(out.index_path + ": weight_map maps " + it.key() +
                               " to '" + file + "', which is not a file in " + dir);
    by_file[file].push_back(it.key());
  }
  for (auto &[file, tensors] : by_file) {
    const fs::path path = root / file;
    if (!fs::is_regular_file(path, ec))
      throw std::runtime_error(out.index_path + ": weight_map names " + file +
                               " (for " + tensors.front() + "), which does not exist");
    std::sort(tensors.begin(), tensors.end());
    out.files.push_back({path.string(), std::move(tensors)});
  }
  return out;
}

void check_hf_config_compatible(const json &folder, const std::string &folder_path,
                                const json &program, const std::string &program_name) {
  // The folder's config is read as transformers reads it (defaults filled
  // in); the program's is compared only where it states a field, so a
  // hand-written model that states few fields checks only those.
  const json have = resolve_config_fields(folder, /*hf_defaults=*/true);
  const json want = resolve_config_fields(program, /*hf_defaults=*/false);
  // Shape fields first: when those differ the math fields hardly matter.
  for (const char *key :
       {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings",
        "model_type", "hidden_act", "rms_norm_eps", "rope_theta", "rope_scaling",
        "attention_bias", "mlp_bias"}) {
    if (!want.contains(key))
      continue; // the program does not state it (a hand-written model)
    const std::string wanted = want.at(key).dump();
    if (!have.contains(key))
      throw std::runtime_error(folder_path + ": " + key + " is missing, but model " +
                               program_name + " was compiled with " + wanted);
    if (!same_value(have.at(key), want.at(key)))
      throw std::runtime_error(folder_path + ": " + key + " is " + have.at(key).dump() +
                               ", but model " + program_name + " was compiled with " +
                               wanted + " (compile a program from this config.json to "
                                        "use these weights)");
  }
}

uint64_t HfTensorSpec::bytes() const {
  uint64_t n = dtype_bytes(dtype);
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n))
      throw std::runtime_error("tensor " + name + ": invalid shape");
  }
  return n;
}

std::vector<std::vector<size_t>> plan_hf_shards(const std::vector<HfTensorSpec> &specs,
                                                uint64_t max_shard_bytes) {
  if (max_shard_bytes == 0)
    throw std::runtime_error("shard size must be at least 1 byte");
  std::vector<std::vector<size_t>> shards;
  uint64_t current = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const uint64_t bytes = specs[i].bytes();
    if (shards.empty() || (current > 0 && current + bytes > max_shard_bytes)) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += bytes;
  }
  return shards;
}

std::string hf_shard_file_name(size_t index, size_t count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return buf;
}

HfWriteResult write_hf_weights(const std::string &dir,
                               const std::vector<HfTensorSpec> &specs,
                               const std::function<Tensor(size_t)> &make,
                               uint64_t max_shard_bytes,
                               const std::map<std::string, std::string> &metadata) {
  if (specs.empty())
    throw std::runtime_error(dir + ": no tensors to write");
  std::set<std::string> names;
  for (const HfTensorSpec &s : specs)
    if (!names.insert(s.name).second)
      throw std::runtime_error(dir + ": tensor " + s.name + " given twice");
  const std::vector<std::vector<size_t>> shards = plan_hf_shards(specs, max_shard_bytes);

  HfWriteResult result;
  result.num_files = shards.size();
  json weight_map = json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file_name =
        shards.size() == 1 ? kHfWeightsFile : hf_shard_file_name(s, shards.size());
    const std::string path = (fs::path(dir) / file_name).string();
    File file;
    file.metadata = metadata;
    for (size_t i : shards[s]) {
      const HfTensorSpec &spec = specs[i];
      Tensor t = make(i);
      if (t.dtype != spec.dtype || t.shape != spec.shape)
        throw std::runtime_error(path + ": tensor " + spec.name +
                                 " was produced with another dtype or shape than planned");
      result.total_bytes += spec.bytes();
      weight_map[spec.name] = file_name;
      file.tensors.emplace(spec.name, std::move(t));
    }
    write_safetensors(path, file);
  }
  if (shards.size() > 1) {
    // nlohmann::json keeps keys sorted, as transformers writes the index.
    json index;
    index["metadata"] = {{"total_size", result.total_bytes}};
    index["weight_map"] = std::move(weight_map);
    atomic_write_file((fs::path(dir) / kHfIndexFile).string(), index.dump(2) + "\n");
  }
  return result;
}

} // namespace llamart::ckpt
