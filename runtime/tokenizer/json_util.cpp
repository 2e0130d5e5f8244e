#include "runtime/tokenizer/json_util.h"

#include "runtime/tokenizer/unicode.h"

#include <fstream>
#include <sstream>

namespace llamart::tokenizer {

json parse_json_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error(path + ": cannot open for reading");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad())
    throw std::runtime_error(path + ": read error");
  try {
    return json::parse(buffer.str());
  } catch (const json::exception &e) {
    throw std::runtime_error(path + ": not valid JSON: " + e.what());
  }
}

const json &require(const json &obj, const char *key, const JsonLoc &at) {
  if (!obj.is_object())
    at.fail("expected an object");
  const auto it = obj.find(key);
  if (it == obj.end())
    (at / key).fail("missing");
  return *it;
}

const json *optional_member(const json &obj, const char *key) {
  if (!obj.is_object())
    return nullptr;
  const auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

std::string get_string(const json &obj, const char *key, const JsonLoc &at) {
  const json &v = require(obj, key, at);
  if (!v.is_string())
    (at / key).fail("expected a string");
  return v.get<std::string>();
}

std::optional<std::string> get_optional_string(const json &obj, const char *key,
                                               const JsonLoc &at) {
  const json *v = optional_member(obj, key);
  if (!v)
    return std::nullopt;
  if (!v->is_string())
    (at / key).fail("expected a string or null");
  return v->get<std::string>();
}

bool get_bool(const json &obj, const char *key, bool fallback, const JsonLoc &at) {
  const json *v = optional_member(obj, key);
  if (!v)
    return fallback;
  if (!v->is_boolean())
    (at / key).fail("expected true or false");
  return v->get<bool>();
}

int64_t get_int(const json &obj, const char *key, const JsonLoc &at) {
  const json &v = require(obj, key, at);
  if (!v.is_number_integer())
    (at / key).fail("expected an integer");
  return v.get<int64_t>();
}

char32_t get_char(const json &obj, const char *key, const JsonLoc &at) {
  const std::string s = get_string(obj, key, at);
  if (!is_valid_utf8(s))
    (at / key).fail("not valid UTF-8");
  const std::vector<char32_t> cps = decode_utf8(s, at.file);
  if (cps.size() != 1)
    (at / key).fail("expected exactly one character, got \"" + s + "\"");
  return cps[0];
}

std::string get_pattern(const json &obj, const char *key, const JsonLoc &at, bool *is_regex) {
  const json &p = require(obj, key, at);
  const JsonLoc here = at / key;
  if (p.is_object() && p.size() == 1) {
    if (const auto it = p.find("String"); it != p.end() && it->is_string()) {
      *is_regex = false;
      return it->get<std::string>();
    }
    if (const auto it = p.find("Regex"); it != p.end() && it->is_string()) {
      *is_regex = true;
      return it->get<std::string>();
    }
  }
  here.fail("expected {\"String\": ...} or {\"Regex\": ...}");
}

} // namespace llamart::tokenizer
