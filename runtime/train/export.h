// `export --format hf`: a trained model as a Hugging Face folder that
// `LlamaForCausalLM.from_pretrained(DIR)` and, with --tokenizer,
// `AutoTokenizer.from_pretrained(DIR)` load:
//
//   config.json              the program's config.json, torch_dtype set
//   generation_config.json   bos/eos token ids
//   model.safetensors        every parameter by HF name ({"format": "pt"}), or
//   model-0000i-of-0000N.safetensors + model.safetensors.index.json
//                            when the weights exceed --shard-size
//   tokenizer.model or       copied (--tokenizer: either file, or an HF folder's)
//   tokenizer.json
//   tokenizer_config.json    LlamaTokenizer (LlamaTokenizerFast for tokenizer.json),
//                            bos/eos/unk/pad, add_bos_token / add_eos_token
//   special_tokens_map.json
//
// The folder is written as DIR.tmp.<pid>, fsynced and renamed to DIR, so DIR
// is never seen half-written; an existing DIR is replaced only when it is
// empty or an earlier export (it holds config.json).
#pragma once
#include "runtime/train/program.h"

#include <cstdint>
#include <string>

namespace llamart::train {

enum class ExportDType { F32, BF16, F16 };

struct ExportOptions {
  std::string checkpoint; // run dir, checkpoint dir, .safetensors file or HF folder
  std::string format = "hf";
  std::string out;        // the folder to create
  std::string tokenizer;  // tokenizer.model, tokenizer.json or HF folder ("" = none)
  ExportDType dtype = ExportDType::F32;
  uint64_t shard_bytes = 5'000'000'000ULL; // transformers' default "5GB"
};

struct ExportResult {
  std::string weights_from; // what load_model_weights read
  size_t weight_files = 0;  // 1 = model.safetensors
  uint64_t weight_bytes = 0;
};

// Throws std::runtime_error naming the flag or file at fault.
ExportResult run_export(const ProgramInfo &program, const ExportOptions &options);

// "f32" | "bf16" | "f16"; throws for anything else.
ExportDType parse_export_dtype(const std::string &text);
// "float32" | "bfloat16" | "float16" (config.json's torch_dtype).
const char *torch_dtype_name(ExportDType dtype);
// A byte count: digits with an optional unit KB/MB/GB (10^3) or KiB/MiB/GiB
// (2^10), as transformers' max_shard_size accepts. Throws for 0 or junk.
uint64_t parse_byte_size(const std::string &text);

// The `export` subcommand (argv[2...] are its flags), and its --help text
// (a printf format taking argv[0]).
int cmd_export(const ProgramInfo &program, int argc, char **argv);
extern const char *const kExportUsage;

} // namespace llamart::train
