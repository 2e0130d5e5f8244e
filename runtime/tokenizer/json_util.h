// Typed access to the JSON of tokenizer.json and the HF folder's config
// files. Every accessor names the file and the field in its error, so a bad
// or unsupported file is reported as one line: "<file>: <field>: <why>".
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace llamart::tokenizer {

using json = nlohmann::json;

// Where a JSON value sits: file name plus a field path for messages.
struct JsonLoc {
  std::string file;
  std::string field; // "pre_tokenizer.pretokenizers[1]"; empty at the root

  JsonLoc operator/(const std::string &key) const {
    return {file, field.empty() ? key : field + "." + key};
  }
  JsonLoc operator[](size_t index) const {
    return {file, field + "[" + std::to_string(index) + "]"};
  }
  [[noreturn]] void fail(const std::string &why) const {
    throw std::runtime_error(file + ": " + (field.empty() ? "" : field + ": ") + why);
  }
};

json parse_json_file(const std::string &path);

// The member `key` of object `obj`, which must exist.
const json &require(const json &obj, const char *key, const JsonLoc &at);

// A member that may be absent or null: nullptr then.
const json *optional_member(const json &obj, const char *key);

std::string get_string(const json &obj, const char *key, const JsonLoc &at);
std::optional<std::string> get_optional_string(const json &obj, const char *key,
                                               const JsonLoc &at);
bool get_bool(const json &obj, const char *key, bool fallback, const JsonLoc &at);
int64_t get_int(const json &obj, const char *key, const JsonLoc &at);

// The one code point of a string field (Metaspace's "replacement").
char32_t get_char(const json &obj, const char *key, const JsonLoc &at);

// {"String": "..."} patterns; {"Regex": "..."} sets *is_regex.
std::string get_pattern(const json &obj, const char *key, const JsonLoc &at, bool *is_regex);

} // namespace llamart::tokenizer
