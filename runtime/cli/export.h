// `export --format hf`: a trained model (run dir, checkpoint, .safetensors
// file, HF or Meta folder) as a Hugging Face folder; the folder's layout and
// writing are runtime/interop/hf_export.h's.
#pragma once
#include "runtime/interop/hf_export.h"
#include "runtime/program/program.h"

#include <cstdint>
#include <string>

namespace llamart::cli {

using interop::ExportDType;

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
// A byte count: digits with an optional unit KB/MB/GB (10^3) or KiB/MiB/GiB
// (2^10), as transformers' max_shard_size accepts. Throws for 0 or junk.
uint64_t parse_byte_size(const std::string &text);

// The `export` subcommand (argv[2...] are its flags), and its --help text
// (a printf format taking argv[0]).
int cmd_export(const ProgramInfo &program, int argc, char **argv);
extern const char *const kExportUsage;

} // namespace llamart::cli
