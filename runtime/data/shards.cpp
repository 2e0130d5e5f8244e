// Token shard writer and memory-mapped reader (format in shards.h).
//
// The reader validates a shard completely when it is opened - size, header
// fields, checksum and the range of every token - because a bad token id
// reaching the embedding lookup of a training step would be an out-of-bounds
// read far away from its cause. One sequential pass over the mapping costs
// about as much as reading the file once.
#include "runtime/data/shards.h"

#include "runtime/checkpoint/fnv1a.h"
#include "runtime/checkpoint/fs_util.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "token shards are little-endian and are mapped in place");

namespace llamart::data {
namespace {

constexpr char kMagic[8] = {'L', 'L', 'M', 'T', 'O', 'K', 'S', '\0'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kDTypeU16 = 0;
constexpr uint32_t kDTypeI32 = 1;
constexpr size_t kHeaderBytes = 64;


std::string hex64(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016" PRIx64, v);
  return buf;
}

size_t dtype_bytes(uint32_t dtype) { return dtype == kDTypeU16 ? 2 : 4; }

// Largest vocabulary whose ids all fit the stored integer type.
constexpr uint64_t kMaxU16Vocab = 65535;
constexpr uint64_t kMaxI32Vocab = uint64_t(INT32_MAX) + 1;

void put_u32(uint8_t *p, uint32_t v) { std::memcpy(p, &v, 4); }
void put_u64(uint8_t *p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t get_u32(const uint8_t *p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t get_u64(const uint8_t *p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

} // namespace

void write_shard(const std::string &path, const std::vector<int32_t> &tokens,
                 uint64_t vocab_size) {
  if (vocab_size == 0 || vocab_size > kMaxI32Vocab)
    throw std::runtime_error(path + ": vocab_size " + std::to_string(vocab_size) +
                             " is outside [1, 2^31]");
  const uint32_t dtype = vocab_size <= kMaxU16Vocab ? kDTypeU16 : kDTypeI32;

  // First pass: range check and checksum of the bytes exactly as stored.
  uint64_t checksum = kFnv1aOffset;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t t = tokens[i];
    if (t < 0 || static_cast<uint64_t>(t) >= vocab_size)
      throw std::runtime_error(path + ": token " + std::to_string(t) + " at index " +
                               std::to_string(i) + " is outside [0, " +
                               std::to_string(vocab_size) + ")");
    if (dtype == kDTypeU16) {
      const uint16_t v = static_cast<uint16_t>(t);
      checksum = fnv1a64(checksum, reinterpret_cast<const uint8_t *>(&v), 2);
    } else {
      checksum = fnv1a64(checksum, reinterpret_cast<const uint8_t *>(&t), 4);
    }
  }

  uint8_t header[kHeaderBytes] = {};
  std::memcpy(header, kMagic, 8);
  put_u32(header + 8, kVersion);
  put_u32(header + 12, dtype);
  put_u64(header + 16, vocab_size);
  put_u64(header + 24, tokens.size());
  put_u64(header + 32, checksum);

  ckpt::AtomicFileWriter out(path);
  out.write(header, sizeof header);
  if (dtype == kDTypeI32) {
    out.write(tokens.data(), tokens.size() * sizeof(int32_t));
  } else {
    // Narrow in bounded chunks rather than materializing a second copy.
    std::vector<uint16_t> chunk;
    constexpr size_t kChunk = size_t(1) << 20;
    for (size_t begin = 0; begin < tokens.size(); begin += kChunk) {
      const size_t end = std::min(tokens.size(), begin + kChunk);
      chunk.resize(end - begin);
      for (size_t i = begin; i < end; ++i)
        chunk[i - begin] = static_cast<uint16_t>(tokens[i]);
      out.write(chunk.data(), chunk.size() * sizeof(uint16_t));
    }
  }
  out.commit();
}

Shard::Shard(const std::string &path) : path_(path) {
  auto fail = [&](const std::string &what) -> std::runtime_error {
    return std::runtime_error(path_ + ": " + what);
  };

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int saved = errno;
    ::close(fd);
    throw fail(std::string("cannot stat: ") + std::strerror(saved));
  }
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw fail("not a regular file");
  }
  if (file_bytes < kHeaderBytes) {
    ::close(fd);
    throw fail("truncated: " + std::to_string(file_bytes) +
               " bytes, shorter than the 64-byte header");
  }
  void *map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd); // the mapping keeps the file alive
  if (map == MAP_FAILED)
    throw fail(std::string("mmap failed: ") + std::strerror(map_errno));
  base_ = static_cast<const uint8_t *>(map);
  mapped_bytes_ = file_bytes;

  // From here on, failures must unmap: the destructor does not run for a
  // constructor that throws.
  try {
    if (std::memcmp(base_, kMagic, 8) != 0)
      throw fail("bad magic: not a token shard (expected \"LLMTOKS\")");
    header_.version = get_u32(base_ + 8);
    header_.dtype = get_u32(base_ + 12);
    header_.vocab_size = get_u64(base_ + 16);
    header_.num_tokens = get_u64(base_ + 24);
    header_.checksum = get_u64(base_ + 32);
    if (header_.version != kVersion)
      throw fail("unsupported shard version " + std::to_string(header_.version) +
                 " (this build reads version 1)");
    if (header_.dtype != kDTypeU16 && header_.dtype != kDTypeI32)
      throw fail("unknown token dtype " + std::to_string(header_.dtype) +
                 " (0 = uint16, 1 = int32)");
    if (header_.vocab_size == 0 || header_.vocab_size > kMaxI32Vocab)
      throw fail("vocab_size " + std::to_string(header_.vocab_size) +
                 " is outside [1, 2^31]");

    const size_t elem = dtype_bytes(header_.dtype);
    const uint64_t payload = file_bytes - kHeaderBytes;
    if (header_.num_tokens > payload / elem)
      throw fail("truncated: header says " + std::to_string(header_.num_tokens) +
                 " tokens but the file holds only " + std::to_string(payload / elem));
    if (header_.num_tokens * elem != payload)
      throw fail(std::to_string(payload - header_.num_tokens * elem) +
                 " trailing bytes after the " + std::to_string(header_.num_tokens) +
                 " tokens the header declares");
    tokens_ = base_ + kHeaderBytes;

    ::madvise(const_cast<uint8_t *>(base_), mapped_bytes_, MADV_SEQUENTIAL);
    const uint64_t checksum = fnv1a64(kFnv1aOffset, tokens_, payload);
    if (checksum != header_.checksum)
      throw fail("checksum mismatch: header " + hex64(header_.checksum) + ", data " +
                 hex64(checksum) + " (corrupt shard)");

    // Range check every id; with a correct checksum this only fails for a
    // shard written by a buggy or foreign writer.
    for (uint64_t i = 0; i < header_.num_tokens; ++i) {
      const int64_t t = at(i);
      if (t < 0 || static_cast<uint64_t>(t) >= header_.vocab_size)
        throw fail("token " + std::to_string(t) + " at index " + std::to_string(i) +
                   " is outside [0, " + std::to_string(header_.vocab_size) + ")");
    }
    // Back to the default: training reads contiguous windows in shuffled
    // order, where neither sequential nor random read-ahead hints fit.
    ::madvise(const_cast<uint8_t *>(base_), mapped_bytes_, MADV_NORMAL);
  } catch (...) {
    ::munmap(const_cast<uint8_t *>(base_), mapped_bytes_);
    base_ = nullptr;
    throw;
  }
}

Shard::~Shard() {
  if (base_)
    ::munmap(const_cast<uint8_t *>(base_), mapped_bytes_);
}

int32_t Shard::at(uint64_t i) const {
  if (i >= header_.num_tokens)
    throw std::out_of_range(path_ + ": token index " + std::to_string(i) +
                            " out of range (" + std::to_string(header_.num_tokens) +
                            " tokens)");
  if (header_.dtype == kDTypeU16) {
    uint16_t v;
    std::memcpy(&v, tokens_ + 2 * i, 2);
    return v;
  }
  int32_t v;
  std::memcpy(&v, tokens_ + 4 * i, 4);
  return v;
}

} // namespace llamart::data
