// A compiled program's parameters written as a Hugging Face folder that
// `LlamaForCausalLM.from_pretrained(DIR)` and, with a tokenizer,
// `AutoTokenizer.from_pretrained(DIR)` load:
//
//   config.json              the program's config.json, torch_dtype set
//   generation_config.json   bos/eos token ids
//   model.safetensors        every parameter by HF name ({"format": "pt"}), or
//   model-0000i-of-0000N.safetensors + model.safetensors.index.json
//                            when the weights exceed shard_bytes
//   tokenizer.model or       copied (either file, or an HF folder's)
//   tokenizer.json
//   tokenizer_config.json    LlamaTokenizer (LlamaTokenizerFast for tokenizer.json),
//                            bos/eos/unk/pad, add_bos_token / add_eos_token
//   special_tokens_map.json
//
// The folder is written as DIR.tmp.<pid>, fsynced and renamed to DIR, so DIR
// is never seen half-written; an existing DIR is replaced only when it is
// empty or an earlier export (it holds config.json). The `export`
// subcommand (runtime/cli/export.h) is the command line around it; errors
// name its flags (--out, --dtype, --tokenizer).
#pragma once
#include "runtime/program/program.h"
#include <nlohmann/json.hpp>
#include <cstdint>
#include <string>

namespace llamart::interop {

enum class ExportDType { F32, BF16, F16 };

// "float32" | "bfloat16" | "float16" (config.json's torch_dtype).
const char *torch_dtype_name(ExportDType dtype);

struct HfExportOptions {
  std::string out;       // the folder to create
  std::string tokenizer; // tokenizer.model, tokenizer.json or HF folder ("" = none)
  ExportDType dtype = ExportDType::F32;
  uint64_t shard_bytes = 5'000'000'000ULL; // transformers' default "5GB"
};

struct HfExportResult {
  size_t weight_files = 0; // 1 = model.safetensors
  uint64_t weight_bytes = 0;
};

// The program's embedded Hugging Face config.json, the one an export writes
// (what the weights were trained with, down to eps and theta). Throws when
// the program has none (compiled from MLIR without a llama.config).
nlohmann::ordered_json exportable_hf_config(const ProgramInfo &program);

// Writes `params` (program.param_numel elements, the flat layout) as the
// folder described above. Throws std::runtime_error naming the file or value
// at fault (a weight beyond float16's range, a tokenizer whose ids differ
// from the model's, an --out that is not an earlier export).
template <typename T>
HfExportResult write_hf_folder(const ProgramInfo &program, const T *params,
                               const HfExportOptions &options);

} // namespace llamart::interop
