// safetensors read/write (https://huggingface.co/docs/safetensors):
// u64 LE header length N, N bytes of JSON {name: {dtype, shape, data_offsets}}
// (+ optional "__metadata__": {str: str}), then the raw LE row-major buffer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
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

// A tensor as the header describes it (no data).
struct TensorSpec {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
};

class AtomicFileWriter;

// write_safetensors one tensor at a time, for data that never exists in one
// buffer (a partitioned run gathers a checkpoint tensor by tensor): the
// header is written first, from `specs` in their order (write_safetensors
// passes its tensors sorted by name, as the file lists them), then each
// tensor's bytes with `write_next`, in the same order. `commit` makes the
// file appear under `path` (atomically, as write_safetensors); a writer
// destroyed before commit leaves nothing behind. Throws "<path>: ..." on a
// bad spec, a wrong byte count or an I/O error.
class SafetensorsWriter {
public:
  SafetensorsWriter(const std::string &path,
                    const std::map<std::string, std::string> &metadata,
                    std::vector<TensorSpec> specs);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter &) = delete;
  SafetensorsWriter &operator=(const SafetensorsWriter &) = delete;

  // The next tensor's bytes, all of them in one call.
  void write_next(const void *data, size_t bytes);
  void commit();

private:
  std::string path_;
  std::vector<TensorSpec> specs_;
  std::vector<uint64_t> bytes_; // per tensor
  size_t next_ = 0;
  std::unique_ptr<AtomicFileWriter> out_;
};

// Small helpers shared by checkpoints.
void atomic_write_file(const std::string &path, const std::string &bytes);
void fsync_dir(const std::string &dir);

} // namespace llamart::ckpt
