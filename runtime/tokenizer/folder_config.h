// The files of a Hugging Face model folder that say which special tokens a
// tokenizer uses: tokenizer_config.json (bos/eos/unk/pad tokens,
// add_bos_token, add_eos_token, clean_up_tokenization_spaces),
// special_tokens_map.json (the same tokens; tokenizer_config.json wins, as in
// transformers) and generation_config.json (bos/eos/pad token ids; a list of
// eos ids ends generation at any of them, as Llama-3-Instruct's does).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace llamart::tokenizer {

// A token named by content, with the file that named it for messages.
struct NamedToken {
  std::string content;
  std::string source; // "dir/tokenizer_config.json: bos_token"
};

struct FolderConfig {
  std::optional<NamedToken> bos_token, eos_token, unk_token, pad_token;
  std::optional<bool> add_bos_token, add_eos_token;
  std::string add_special_source; // tokenizer_config.json's path, for messages
  bool clean_up_tokenization_spaces = false;

  std::string generation_config; // its path, for messages; empty if absent
  std::optional<int64_t> generation_bos_id, generation_pad_id;
  std::vector<int64_t> generation_eos_ids;
};

// Reads whichever of the three files `dir` holds (none is fine). Throws
// std::runtime_error "<file>: <field>: <why>" for malformed ones.
FolderConfig read_folder_config(const std::string &dir);

} // namespace llamart::tokenizer
