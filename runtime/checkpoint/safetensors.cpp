// safetensors reader and writer.
//
// The reader trusts nothing in the file: the header length, every dtype,
// shape and offset pair is checked against the actual file size before any
// tensor byte is read, so a truncated or hostile file is a one-line error and
// never an out-of-bounds read or a giant allocation. Tensor bytes are read
// with pread straight into their destination vectors, so loading a checkpoint
// needs no second copy of it in memory.
//
// The writer emits the same layout as the Hugging Face reference writer
// (compact JSON header padded with spaces to a multiple of 8 bytes, tensors
// back to back), ordered by tensor name so that equal inputs give
// byte-identical files.
#include "runtime/checkpoint/safetensors.h"
#include "runtime/checkpoint/fs_util.h"
#include "runtime/checkpoint/half.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors stores little-endian data; this code copies raw bytes");

namespace llamart::ckpt {
namespace {

// The reference implementation refuses headers above 100 MB; so do we, so a
// corrupt length field cannot make us allocate gigabytes for "JSON".
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DTypeInfo {
  StDType dtype;
  const char *name;
  size_t bytes;
};

constexpr DTypeInfo kDTypes[] = {
    {StDType::F32, "F32", 4}, {StDType::F64, "F64", 8}, {StDType::F16, "F16", 2},
    {StDType::BF16, "BF16", 2}, {StDType::I32, "I32", 4}, {StDType::I64, "I64", 8},
};

const DTypeInfo &info(StDType dtype) {
  for (const auto &d : kDTypes)
    if (d.dtype == dtype)
      return d;
  throw std::runtime_error("safetensors: invalid StDType value " +
                           std::to_string(static_cast<int>(dtype)));
}

bool parse_dtype(const std::string &name, StDType *out) {
  for (const auto &d : kDTypes)
    if (name == d.name) {
      *out = d.dtype;
      return true;
    }
  return false;
}

std::string shape_str(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// numel * element size, or false on a negative dim or on overflow.
bool checked_nbytes(const std::vector<int64_t> &shape, size_t elem, uint64_t *out) {
  uint64_t n = elem;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n))
      return false;
  }
  *out = n;
  return true;
}

class Fd {
public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  Fd(const Fd &) = delete;
  Fd &operator=(const Fd &) = delete;
  int get() const { return fd_; }

private:
  int fd_;
};

void pread_exact(int fd, const std::string &path, void *dst, size_t bytes, uint64_t offset) {
  auto *p = static_cast<uint8_t *>(dst);
  while (bytes > 0) {
    const size_t chunk = std::min(bytes, size_t(1) << 30);
    const ssize_t n = ::pread(fd, p, chunk, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      throw std::runtime_error(path + ": read failed: " + std::strerror(errno));
    }
    if (n == 0)
      throw std::runtime_error(path + ": unexpected end of file at byte " +
                               std::to_string(offset));
    p += n;
    bytes -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

uint64_t json_u64(const nlohmann::json &v, const std::string &path, const std::string &what) {
  if (!v.is_number_unsigned())
    throw std::runtime_error(path + ": " + what + " must be a non-negative integer, got " +
                             v.dump());
  return v.get<uint64_t>();
}

struct Entry {
  std::string name;
  Tensor tensor;
  uint64_t begin, end; // relative to the start of the byte buffer
};

Entry parse_entry(const std::string &path, const std::string &name,
                  const nlohmann::json &spec, uint64_t buffer_bytes) {
  const std::string where = "tensor '" + name + "'";
  if (!spec.is_object())
    throw std::runtime_error(path + ": " + where + ": entry is not a JSON object");
  for (const char *key : {"dtype", "shape", "data_offsets"})
    if (!spec.contains(key))
      throw std::runtime_error(path + ": " + where + ": missing \"" + key + "\"");

  Entry e;
  e.name = name;
  const auto &dtype = spec["dtype"];
  if (!dtype.is_string() || !parse_dtype(dtype.get<std::string>(), &e.tensor.dtype))
    throw std::runtime_error(path + ": " + where + ": unsupported dtype " + dtype.dump() +
                             " (supported: F32 F64 F16 BF16 I32 I64)");

  const auto &shape = spec["shape"];
  if (!shape.is_array())
    throw std::runtime_error(path + ": " + where + ": shape is not an array");
  for (const auto &d : shape) {
    const uint64_t dim = json_u64(d, path, where + " shape entry");
    if (dim > static_cast<uint64_t>(INT64_MAX))
      throw std::runtime_error(path + ": " + where + ": shape entry too large");
    e.tensor.shape.push_back(static_cast<int64_t>(dim));
  }

  const auto &offsets = spec["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2)
    throw std::runtime_error(path + ": " + where + ": data_offsets must be [begin, end]");
  e.begin = json_u64(offsets[0], path, where + " data_offsets");
  e.end = json_u64(offsets[1], path, where + " data_offsets");
  if (e.begin > e.end || e.end > buffer_bytes)
    throw std::runtime_error(path + ": " + where + ": data_offsets [" +
                             std::to_string(e.begin) + ", " + std::to_string(e.end) +
                             ") outside the " + std::to_string(buffer_bytes) +
                             "-byte data buffer");

  uint64_t expected = 0;
  const size_t elem = info(e.tensor.dtype).bytes;
  if (!checked_nbytes(e.tensor.shape, elem, &expected) || expected != e.end - e.begin)
    throw std::runtime_error(path + ": " + where + ": shape " + shape_str(e.tensor.shape) +
                             " of " + dtype.get<std::string>() + " needs " +
                             std::to_string(expected) + " bytes but data_offsets span " +
                             std::to_string(e.end - e.begin));
  return e;
}

} // namespace

size_t dtype_bytes(StDType dtype) { return info(dtype).bytes; }


int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

std::vector<double> Tensor::to_f64() const {
  const DTypeInfo &di = info(dtype);
  const int64_t n = numel();
  if (n < 0 || data.size() != static_cast<size_t>(n) * di.bytes)
    throw std::runtime_error(std::string("to_f64: ") + std::to_string(data.size()) +
                             " bytes do not hold a " + di.name + " tensor of shape " +
                             shape_str(shape));
  std::vector<double> out(static_cast<size_t>(n));
  const uint8_t *p = data.data();
  for (size_t i = 0; i < out.size(); ++i, p += di.bytes) {
    switch (dtype) {
    case StDType::F32: {
      float v;
      std::memcpy(&v, p, 4);
      out[i] = v;
      break;
    }
    case StDType::F64:
      std::memcpy(&out[i], p, 8);
      break;
    case StDType::F16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      out[i] = f16_to_float(h);
      break;
    }
    case StDType::BF16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      out[i] = bf16_to_float(h);
      break;
    }
    case StDType::I32:
    case StDType::I64:
      throw std::runtime_error(std::string("to_f64: tensor dtype ") + di.name +
                               " is not floating point");
    }
  }
  return out;
}

namespace {
template <typename T>
Tensor from_raw(StDType dtype, std::vector<int64_t> shape, const T *p) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  uint64_t bytes = 0;
  if (!checked_nbytes(t.shape, sizeof(T), &bytes))
    throw std::runtime_error("safetensors: invalid tensor shape " + shape_str(t.shape));
  t.data.resize(bytes);
  if (bytes)
    std::memcpy(t.data.data(), p, bytes);
  return t;
}
} // namespace

Tensor Tensor::from_f32(std::vector<int64_t> shape, const float *p) {
  return from_raw(StDType::F32, std::move(shape), p);
}
Tensor Tensor::from_f64(std::vector<int64_t> shape, const double *p) {
  return from_raw(StDType::F64, std::move(shape), p);
}
Tensor Tensor::from_i32(std::vector<int64_t> shape, const int32_t *p) {
  return from_raw(StDType::I32, std::move(shape), p);
}

File read_safetensors(const std::string &path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0)
    throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0)
    throw std::runtime_error(path + ": cannot stat: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    throw std::runtime_error(path + ": not a regular file");
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < 8)
    throw std::runtime_error(path + ": truncated: " + std::to_string(file_bytes) +
                             " bytes, shorter than the 8-byte header length");

  uint64_t header_bytes = 0;
  pread_exact(fd.get(), path, &header_bytes, 8, 0);
  if (header_bytes > file_bytes - 8)
    throw std::runtime_error(path + ": header length " + std::to_string(header_bytes) +
                             " exceeds the " + std::to_string(file_bytes - 8) +
                             " bytes that follow it");
  if (header_bytes > kMaxHeaderBytes)
    throw std::runtime_error(path + ": header length " + std::to_string(header_bytes) +
                             " exceeds the 100 MB limit");
  std::string header(header_bytes, '\0');
  pread_exact(fd.get(), path, header.data(), header.size(), 8);

  nlohmann::json root;
  try {
    root = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception &e) {
    throw std::runtime_error(path + ": header is not valid JSON: " + e.what());
  }
  if (!root.is_object())
    throw std::runtime_error(path + ": header JSON is not an object");

  const uint64_t data_start = 8 + header_bytes;
  const uint64_t buffer_bytes = file_bytes - data_start;
  File file;
  std::vector<Entry> entries;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object())
        throw std::runtime_error(path + ": __metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          throw std::runtime_error(path + ": __metadata__ value for '" + m.key() +
                                   "' is not a string");
        file.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, it.key(), *it, buffer_bytes));
  }

  // Overlapping ranges would alias two tensors; the format forbids it.
  std::vector<const Entry *> by_offset;
  for (const auto &e : entries)
    if (e.end > e.begin)
      by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry *a, const Entry *b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      throw std::runtime_error(path + ": tensors '" + by_offset[i - 1]->name + "' and '" +
                               by_offset[i]->name + "' have overlapping data_offsets");

  for (auto &e : entries) {
    e.tensor.data.resize(e.end - e.begin);
    pread_exact(fd.get(), path, e.tensor.data.data(), e.tensor.data.size(),
                data_start + e.begin);
    file.tensors.emplace(e.name, std::move(e.tensor));
  }
  return file;
}

SafetensorsWriter::SafetensorsWriter(const std::string &path,
                                     const std::map<std::string, std::string> &metadata,
                                     std::vector<TensorSpec> specs)
    : path_(path), specs_(std::move(specs)) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty())
    header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorSpec &t : specs_) {
    if (t.name.empty() || t.name == "__metadata__")
      throw std::runtime_error(path + ": invalid tensor name '" + t.name + "'");
    if (header.contains(t.name))
      throw std::runtime_error(path + ": tensor '" + t.name + "' listed twice");
    const DTypeInfo &di = info(t.dtype);
    uint64_t bytes = 0;
    if (!checked_nbytes(t.shape, di.bytes, &bytes))
      throw std::runtime_error(path + ": tensor '" + t.name + "': invalid shape " +
                               shape_str(t.shape));
    nlohmann::ordered_json entry;
    entry["dtype"] = di.name;
    entry["shape"] = t.shape;
    entry["data_offsets"] = {offset, offset + bytes};
    header[t.name] = std::move(entry);
    offset += bytes;
    bytes_.push_back(bytes);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception &e) {
    throw std::runtime_error(path + ": cannot encode header: " + e.what());
  }
  // Pad with spaces so the data buffer starts 8-byte aligned (as the
  // reference writer does), which lets mmap readers use the tensors in place.
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_bytes = text.size();
  out_ = std::make_unique<AtomicFileWriter>(path);
  out_->write(&header_bytes, 8);
  out_->write(text.data(), text.size());
}

SafetensorsWriter::~SafetensorsWriter() = default;

void SafetensorsWriter::write_next(const void *data, size_t bytes) {
  if (next_ >= specs_.size())
    throw std::runtime_error(path_ + ": more tensors written than the header lists (" +
                             std::to_string(specs_.size()) + ")");
  const TensorSpec &t = specs_[next_];
  if (bytes != bytes_[next_])
    throw std::runtime_error(path_ + ": tensor '" + t.name + "': " + std::to_string(bytes) +
                             " data bytes, but shape " + shape_str(t.shape) + " of " +
                             info(t.dtype).name + " needs " + std::to_string(bytes_[next_]));
  out_->write(data, bytes);
  ++next_;
}

void SafetensorsWriter::commit() {
  if (next_ != specs_.size())
    throw std::runtime_error(path_ + ": " + std::to_string(next_) + " of " +
                             std::to_string(specs_.size()) + " tensors written");
  out_->commit();
}

void write_safetensors(const std::string &path, const File &file) {
  std::vector<TensorSpec> specs;
  for (const auto &[name, t] : file.tensors)
    specs.push_back({name, t.dtype, t.shape});
  SafetensorsWriter out(path, file.metadata, std::move(specs));
  for (const auto &[name, t] : file.tensors)
    out.write_next(t.data.data(), t.data.size());
  out.commit();
}

} // namespace llamart::ckpt
