// safetensors read/write (https://huggingface.co/docs/safetensors):
// u64 LE header length N, N bytes of JSON {name: {dtype, shape, data_offsets}}
// (+ optional "__metadata__": {str: str}), then the raw LE row-major buffer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace llamart::ckpt {

enum class StDType { F32, F64, F16, BF16, I32, I64 };

// Bytes per element (throws on a value outside the enum).
size_t dtype_bytes(StDType dtype);

struct Tensor {
  StDType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data; // raw little-endian bytes
  int64_t numel() const;
  // Converts to double / float (from F32, F64, F16, BF16); throws otherwise.
  std::vector<double> to_f64() const;
  static Tensor from_f32(std::vector<int64_t> shape, const float *p);
  static Tensor from_f64(std::vector<int64_t> shape, const double *p);
  static Tensor from_i32(std::vector<int64_t> shape, const int32_t *p);
};

struct File {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Throws std::runtime_error("<path>: <what is wrong>") on any malformed input:
// short file, header length past EOF, bad JSON, unknown dtype, offsets outside
// the buffer or overlapping, shape/bytes mismatch.
File read_safetensors(const std::string &path);
// Atomic: writes <path>.tmp.<pid>, fsyncs it, renames over path, fsyncs dir.
void write_safetensors(const std::string &path, const File &file);

// Small helpers shared by checkpoints.
void atomic_write_file(const std::string &path, const std::string &bytes);
void fsync_dir(const std::string &dir);

} // namespace llamart::ckpt
