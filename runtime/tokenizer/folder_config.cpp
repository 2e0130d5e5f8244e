#include "runtime/tokenizer/folder_config.h"

#include "runtime/tokenizer/json_util.h"

#include <filesystem>

namespace llamart::tokenizer {

namespace {

namespace fs = std::filesystem;

std::optional<json> read_if_present(const fs::path &file) {
  std::error_code ec;
  if (!fs::exists(file, ec))
    return std::nullopt;
  json j = parse_json_file(file.string());
  if (!j.is_object())
    throw std::runtime_error(file.string() + ": expected a JSON object");
  return j;
}

// A token field: "<s>", {"content": "<s>", ...} (a serialized AddedToken),
// or null / absent.
std::optional<NamedToken> token_field(const json &obj, const char *key, const std::string &file) {
  const json *v = optional_member(obj, key);
  if (!v)
    return std::nullopt;
  const std::string source = file + ": " + key;
  if (v->is_string())
    return NamedToken{v->get<std::string>(), source};
  if (v->is_object())
    if (const json *c = optional_member(*v, "content"); c && c->is_string())
      return NamedToken{c->get<std::string>(), source};
  throw std::runtime_error(source + ": expected a token string or {\"content\": ...}");
}

std::optional<int64_t> id_field(const json &obj, const char *key, const std::string &file) {
  const json *v = optional_member(obj, key);
  if (!v)
    return std::nullopt;
  if (!v->is_number_integer() || v->get<int64_t>() < 0)
    throw std::runtime_error(file + ": " + key + ": expected a non-negative integer");
  return v->get<int64_t>();
}

} // namespace

FolderConfig read_folder_config(const std::string &dir) {
  FolderConfig c;
  const fs::path base(dir);
  const std::string config_file = (base / "tokenizer_config.json").string();
  const std::string map_file = (base / "special_tokens_map.json").string();
  const std::optional<json> config = read_if_present(config_file);
  const std::optional<json> map = read_if_present(map_file);
  auto token = [&](const char *key) {
    std::optional<NamedToken> t;
    if (config)
      t = token_field(*config, key, config_file);
    if (!t && map)
      t = token_field(*map, key, map_file);
    return t;
  };
  c.bos_token = token("bos_token");
  c.eos_token = token("eos_token");
  c.unk_token = token("unk_token");
  c.pad_token = token("pad_token");
  if (config) {
    const JsonLoc at{config_file, ""};
    for (auto [key, slot] : {std::pair{"add_bos_token", &c.add_bos_token},
                             std::pair{"add_eos_token", &c.add_eos_token}})
      if (optional_member(*config, key))
        *slot = get_bool(*config, key, false, at);
    c.add_special_source = config_file;
    c.clean_up_tokenization_spaces = get_bool(*config, "clean_up_tokenization_spaces", false, at);
  }

  const std::string gen_file = (base / "generation_config.json").string();
  if (const std::optional<json> gen = read_if_present(gen_file)) {
    c.generation_config = gen_file;
    c.generation_bos_id = id_field(*gen, "bos_token_id", gen_file);
    c.generation_pad_id = id_field(*gen, "pad_token_id", gen_file);
    if (const json *eos = optional_member(*gen, "eos_token_id")) {
      if (eos->is_array()) {
        for (const json &e : *eos) {
          if (!e.is_number_integer() || e.get<int64_t>() < 0)
            throw std::runtime_error(gen_file + ": eos_token_id: expected non-negative integers");
          c.generation_eos_ids.push_back(e.get<int64_t>());
        }
      } else {
        c.generation_eos_ids.push_back(*id_field(*gen, "eos_token_id", gen_file));
      }
    }
  }
  return c;
}

} // namespace llamart::tokenizer
