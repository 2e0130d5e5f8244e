#include "runtime/cli/export.h"

#include "runtime/cli/flags.h"
#include "runtime/program/aligned_buffer.h"
#include "runtime/program/program_check.h"
#include "runtime/train/checkpoint_dir.h"

#include <cctype>
#include <cstdio>
#include <stdexcept>

namespace llamart::cli {

using interop::ExportDType;
using interop::torch_dtype_name;

const char *const kExportUsage =
    R"(usage: %s export --checkpoint P --format hf --out DIR [options]
  --checkpoint P          run dir, checkpoint dir, .safetensors file, HF or Meta folder
  --format hf             Hugging Face folder (config.json, safetensors, ...)
  --out DIR               folder to write (replaced if it is an earlier export)
  --tokenizer M           also copy this tokenizer.model or tokenizer.json (or
                          the one of an HF folder) and write
                          tokenizer_config.json and special_tokens_map.json
  --dtype D               f32 | bf16 | f16 (default f32; rounding to nearest even)
  --shard-size BYTES      largest weight file, e.g. 5GB, 500MB, 1048576
                          (default 5GB); bigger models get shards + an index
)";

ExportDType parse_export_dtype(const std::string &text) {
  if (text == "f32")
    return ExportDType::F32;
  if (text == "bf16")
    return ExportDType::BF16;
  if (text == "f16")
    return ExportDType::F16;
  throw std::runtime_error("--dtype: expected f32, bf16 or f16, got '" + text + "'");
}

uint64_t parse_byte_size(const std::string &text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits])))
    ++digits;
  const std::string unit = text.substr(digits);
  const struct {
    const char *name;
    uint64_t factor;
  } units[] = {{"", 1},          {"B", 1},
               {"KB", 1000ULL},  {"MB", 1000ULL * 1000},
               {"GB", 1000ULL * 1000 * 1000},
               {"KiB", 1ULL << 10}, {"MiB", 1ULL << 20}, {"GiB", 1ULL << 30}};
  const auto bad = [&] {
    return std::runtime_error("--shard-size: expected a positive byte count like "
                              "1048576, 500MB or 2GiB, got '" + text + "'");
  };
  if (digits == 0 || digits > 19)
    throw bad();
  const uint64_t value = std::stoull(text.substr(0, digits));
  for (const auto &u : units)
    if (unit == u.name) {
      uint64_t bytes = 0;
      if (value == 0 || __builtin_mul_overflow(value, u.factor, &bytes))
        throw bad();
      return bytes;
    }
  throw bad();
}

ExportResult run_export(const ProgramInfo &program, const ExportOptions &o) {
  validate_program(program);
  if (o.format != "hf")
    throw std::runtime_error("--format: unknown format '" + o.format + "' (supported: hf)");
  if (o.checkpoint.empty())
    throw std::runtime_error("--checkpoint: required");
  if (o.out.empty())
    throw std::runtime_error("--out: required");
  if (o.shard_bytes == 0)
    throw std::runtime_error("--shard-size: must be at least 1 byte");
  // Refused before any weight is read.
  interop::exportable_hf_config(program);
  const interop::HfExportOptions hf{o.out, o.tokenizer, o.dtype, o.shard_bytes};
  auto warn = [](const std::string &m) { std::fprintf(stderr, "warning: %s\n", m.c_str()); };
  ExportResult result;
  interop::HfExportResult written;
  auto load_and_write = [&](auto element) { // the program's storage type
    using T = decltype(element);
    AlignedBuffer<T> params(static_cast<size_t>(program.param_numel));
    result.weights_from = train::load_model_weights<T>(program, o.checkpoint, params.data(), warn);
    written = interop::write_hf_folder<T>(program, params.data(), hf);
  };
  if (program.dtype == DType::F64)
    load_and_write(0.0);
  else
    load_and_write(0.0f);
  result.weight_files = written.weight_files;
  result.weight_bytes = written.weight_bytes;
  return result;
}

int cmd_export(const ProgramInfo &program, int argc, char **argv) {
  const Flags f("export", argc, argv, 2,
                {{"checkpoint", true}, {"format", true}, {"out", true},
                 {"tokenizer", true}, {"dtype", true}, {"shard-size", true}});
  ExportOptions o;
  o.checkpoint = f.required("checkpoint");
  o.format = f.required("format");
  o.out = f.required("out");
  o.tokenizer = f.str("tokenizer", "");
  try {
    o.dtype = parse_export_dtype(f.str("dtype", "f32"));
    if (f.has("shard-size"))
      o.shard_bytes = parse_byte_size(f.str("shard-size", ""));
    if (o.format != "hf")
      throw std::runtime_error("--format: unknown format '" + o.format +
                               "' (supported: hf)");
  } catch (const UsageError &) {
    throw;
  } catch (const std::runtime_error &e) {
    throw UsageError(e.what());
  }
  const ExportResult r = run_export(program, o);
  std::printf("exported %s to %s: %zu weight file%s, %llu bytes of %s tensors%s\n",
              r.weights_from.c_str(), o.out.c_str(), r.weight_files,
              r.weight_files == 1 ? "" : "s", static_cast<unsigned long long>(r.weight_bytes),
              torch_dtype_name(o.dtype), o.tokenizer.empty() ? "" : ", tokenizer");
  return 0;
}

} // namespace llamart::cli
