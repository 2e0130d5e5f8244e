#include "runtime/checkpoint/torch_zip.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

namespace llamart::ckpt {

namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kEndSize = 22, kZip64EndSize = 56, kZip64LocatorSize = 20;
constexpr size_t kCentralHeaderSize = 46, kLocalHeaderSize = 30;
constexpr uint16_t kZip64ExtraId = 0x0001;

uint16_t le16(const uint8_t *p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t *p) { return uint32_t(le16(p)) | (uint32_t(le16(p + 2)) << 16); }
uint64_t le64(const uint8_t *p) { return uint64_t(le32(p)) | (uint64_t(le32(p + 4)) << 32); }

// CRC-32 (IEEE 802.3, zip's polynomial), slicing by 8: the whole of every
// storage passes through here, so it is worth the 8 KiB table.
struct Crc32Tables {
  std::array<std::array<uint32_t, 256>, 8> t{};
  Crc32Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k)
        c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (size_t s = 1; s < 8; ++s)
        t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
};

// Continues a CRC-32 (start from 0) over n more bytes.
uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
  static const Crc32Tables tables;
  const auto &t = tables.t;
  uint32_t c = crc ^ 0xffffffffu;
  for (; n >= 8; p += 8, n -= 8) {
    const uint32_t lo = c ^ le32(p);
    const uint32_t hi = le32(p + 4);
    c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
        t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
  }
  for (; n > 0; ++p, --n)
    c = t[0][(c ^ *p) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

// pread until done; false on EOF or error (errno set for errors).
bool pread_all(int fd, void *dest, uint64_t n, uint64_t offset) {
  auto *out = static_cast<uint8_t *>(dest);
  while (n > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1u << 30));
    const ssize_t got = ::pread(fd, out, chunk, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      return false;
    out += got;
    n -= static_cast<uint64_t>(got);
    offset += static_cast<uint64_t>(got);
  }
  return true;
}

void swap_bytes(uint8_t *p, size_t count, size_t width) {
  for (size_t i = 0; i < count; ++i, p += width)
    std::reverse(p, p + width);
}

} // namespace

// --- TorchArchive ----------------------------------------------------------------

TorchArchive::TorchArchive(const std::string &path) : path_(path) {
  auto fail = [&](const std::string &what) { throw std::runtime_error(path_ + ": " + what); };
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0)
    fail(std::string("cannot open: ") + std::strerror(errno));
  // From here on the destructor does not run if we throw: close on failure.
  try {
    struct stat st;
    if (::fstat(fd_, &st) != 0)
      fail(std::string("cannot stat: ") + std::strerror(errno));
    if (!S_ISREG(st.st_mode))
      fail("not a regular file");
    file_size_ = static_cast<uint64_t>(st.st_size);
    auto read_at = [&](void *dest, uint64_t n, uint64_t offset, const char *what) {
      if (offset > file_size_ || n > file_size_ - offset || !pread_all(fd_, dest, n, offset))
        fail(std::string("truncated zip archive (") + what + " past the end of the file)");
    };

    uint8_t magic[4] = {};
    if (file_size_ < 4 || (read_at(magic, 4, 0, "magic"), le32(magic) != kLocalHeaderSig))
      fail("not a zip archive (torch.save has written zip archives since PyTorch 1.6; "
           "the older format is not supported)");

    // The end-of-central-directory record: the last 22 bytes plus a comment
    // of up to 64 KiB. Take the candidate whose comment ends the file.
    const uint64_t tail_size = std::min<uint64_t>(file_size_, kEndSize + 0xffff);
    std::vector<uint8_t> tail(static_cast<size_t>(tail_size));
    read_at(tail.data(), tail_size, file_size_ - tail_size, "end record");
    std::optional<uint64_t> end_pos;
    for (size_t i = tail.size() >= kEndSize ? tail.size() - kEndSize + 1 : 0; i-- > 0;) {
      if (le32(&tail[i]) == kEndSig && i + kEndSize + le16(&tail[i + 20]) == tail.size()) {
        end_pos = file_size_ - tail_size + i;
        break;
      }
    }
    if (!end_pos)
      fail("no zip end-of-central-directory record (truncated file?)");
    const uint8_t *end = &tail[static_cast<size_t>(*end_pos - (file_size_ - tail_size))];
    if (le16(end + 4) != 0 || le16(end + 6) != 0)
      fail("multi-volume zip archives are not supported");
    uint64_t entries = le16(end + 10);
    uint64_t cd_size = le32(end + 12);
    uint64_t cd_offset = le32(end + 16);
    uint64_t cd_limit = *end_pos; // the central directory ends before this

    // zip64: a locator right before the end record points to the zip64 end
    // record, which holds the full-width counts and offsets.
    if (*end_pos >= kZip64LocatorSize) {
      uint8_t loc[kZip64LocatorSize];
      read_at(loc, kZip64LocatorSize, *end_pos - kZip64LocatorSize, "zip64 locator");
      if (le32(loc) == kZip64LocatorSig) {
        const uint64_t z64_pos = le64(loc + 8);
        if (le32(loc + 4) != 0 || le32(loc + 16) > 1)
          fail("multi-volume zip archives are not supported");
        if (z64_pos > *end_pos - kZip64LocatorSize ||
            *end_pos - kZip64LocatorSize - z64_pos < kZip64EndSize)
          fail("zip64 end record offset " + std::to_string(z64_pos) + " is out of range");
        uint8_t z64[kZip64EndSize];
        read_at(z64, kZip64EndSize, z64_pos, "zip64 end record");
        if (le32(z64) != kZip64EndSig)
          fail("zip64 locator does not point to a zip64 end record");
        if (le32(z64 + 16) != 0 || le32(z64 + 20) != 0)
          fail("multi-volume zip archives are not supported");
        entries = le64(z64 + 32);
        cd_size = le64(z64 + 40);
        cd_offset = le64(z64 + 48);
        cd_limit = z64_pos;
      }
    }
    if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
      fail("central directory (offset " + std::to_string(cd_offset) + ", " +
           std::to_string(cd_size) + " bytes) lies outside the file");
    if (entries > cd_size / kCentralHeaderSize)
      fail("central directory claims " + std::to_string(entries) + " records in " +
           std::to_string(cd_size) + " bytes");
    std::vector<uint8_t> cd(static_cast<size_t>(cd_size));
    read_at(cd.data(), cd_size, cd_offset, "central directory");

    size_t pos = 0;
    for (uint64_t e = 0; e < entries; ++e) {
      if (cd.size() - pos < kCentralHeaderSize || le32(&cd[pos]) != kCentralHeaderSig)
        fail("central directory record " + std::to_string(e) + " is malformed");
      const uint8_t *h = &cd[pos];
      const uint16_t flags = le16(h + 8), method = le16(h + 10);
      const uint32_t crc = le32(h + 16);
      uint64_t csize = le32(h + 20), usize = le32(h + 24);
      const size_t name_len = le16(h + 28), extra_len = le16(h + 30), comment_len = le16(h + 32);
      const uint16_t disk = le16(h + 34);
      uint64_t local_offset = le32(h + 42);
      if (cd.size() - pos - kCentralHeaderSize < name_len + extra_len + comment_len)
        fail("central directory record " + std::to_string(e) + " runs past the directory");
      const std::string name(reinterpret_cast<const char *>(h + kCentralHeaderSize), name_len);
      const uint8_t *extra = h + kCentralHeaderSize + name_len;
      pos += kCentralHeaderSize + name_len + extra_len + comment_len;

      // zip64 extended information: the saturated fields, in this order.
      for (size_t x = 0; x + 4 <= extra_len;) {
        const uint16_t id = le16(extra + x), len = le16(extra + x + 2);
        if (x + 4 + len > extra_len)
          fail("record " + name + ": extra field runs past its header");
        if (id == kZip64ExtraId) {
          size_t f = x + 4;
          auto widen = [&](uint64_t &field) {
            if (field != 0xffffffffu)
              return;
            if (f + 8 > x + 4 + len)
              fail("record " + name + ": zip64 extra field is too short");
            field = le64(extra + f);
            f += 8;
          };
          widen(usize);
          widen(csize);
          widen(local_offset);
        }
        x += 4 + len;
      }
      if (flags & 1)
        fail("record " + name + " is encrypted");
      if (method != 0)
        fail("record " + name + " is compressed (method " + std::to_string(method) +
             "); torch.save stores records uncompressed: load and save it again with torch");
      if (csize != usize)
        fail("record " + name + " is stored but its sizes differ");
      if (disk != 0 && disk != 0xffff)
        fail("multi-volume zip archives are not supported");

      // The local header repeats the name; its extra field (torch's alignment
      // padding) may differ from the central one, so the data offset comes
      // from the local header itself.
      uint8_t local[kLocalHeaderSize];
      if (local_offset > cd_offset || cd_offset - local_offset < kLocalHeaderSize)
        fail("record " + name + ": local header offset " + std::to_string(local_offset) +
             " is out of range");
      read_at(local, kLocalHeaderSize, local_offset, "local header");
      if (le32(local) != kLocalHeaderSig)
        fail("record " + name + ": no local header at offset " + std::to_string(local_offset));
      const uint64_t data_offset =
          local_offset + kLocalHeaderSize + le16(local + 26) + le16(local + 28);
      if (le16(local + 26) != name_len)
        fail("record " + name + ": local header names another record");
      if (data_offset > cd_offset || usize > cd_offset - data_offset)
        fail("record " + name + " (" + std::to_string(usize) + " bytes at " +
             std::to_string(data_offset) + ") overlaps the central directory");
      std::string local_name(name_len, '\0');
      read_at(local_name.data(), name_len, local_offset + kLocalHeaderSize, "local header");
      if (local_name != name)
        fail("record " + name + ": local header names " + local_name);

      // PyTorch's reader takes the folder from the first record and requires
      // every other to share it.
      const size_t slash = name.find('/');
      if (slash == std::string::npos || slash == 0)
        fail("record " + name + " is not inside a folder (not a torch.save archive)");
      if (e == 0)
        folder_ = name.substr(0, slash);
      else if (name.compare(0, slash, folder_) != 0 || slash != folder_.size())
        fail("record " + name + " is outside the archive folder " + folder_);
      if (!records_.emplace(name.substr(slash + 1), Record{data_offset, usize, crc}).second)
        fail("record " + name + " appears twice");
    }
    if (records_.empty())
      fail("empty zip archive");
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

TorchArchive::~TorchArchive() {
  if (fd_ >= 0)
    ::close(fd_);
}

bool TorchArchive::has(const std::string &record) const { return records_.count(record) > 0; }

const TorchArchive::Record &TorchArchive::find(const std::string &record) const {
  auto it = records_.find(record);
  if (it == records_.end())
    throw std::runtime_error(path_ + ": no record " + folder_ + "/" + record);
  return it->second;
}

uint64_t TorchArchive::size(const std::string &record) const { return find(record).size; }

void TorchArchive::read(const std::string &record, void *dest) const {
  const Record &r = find(record);
  errno = 0;
  if (!pread_all(fd_, dest, r.size, r.data_offset))
    throw std::runtime_error(path_ + ": cannot read record " + folder_ + "/" + record + ": " +
                             (errno ? std::strerror(errno) : "file shrank while reading"));
  if (r.crc32 != 0 && crc32_update(0, static_cast<const uint8_t *>(dest), r.size) != r.crc32)
    throw std::runtime_error(path_ + ": record " + folder_ + "/" + record +
                             " fails its CRC-32 check (the file is corrupted)");
}

void TorchArchive::read_range(const std::string &record, uint64_t offset, uint64_t n,
                              void *dest) const {
  const Record &r = find(record);
  if (offset > r.size || n > r.size - offset)
    throw std::runtime_error(path_ + ": bytes " + std::to_string(offset) + ".." +
                             std::to_string(offset + n) + " lie outside record " + folder_ +
                             "/" + record);
  errno = 0;
  if (!pread_all(fd_, dest, n, r.data_offset + offset))
    throw std::runtime_error(path_ + ": cannot read record " + folder_ + "/" + record + ": " +
                             (errno ? std::strerror(errno) : "file shrank while reading"));
}

void TorchArchive::verify(const std::string &record) const {
  const Record &r = find(record);
  if (r.crc32 == 0)
    return;
  std::vector<uint8_t> buf(static_cast<size_t>(std::min<uint64_t>(r.size, 64u << 20)));
  uint32_t crc = 0;
  for (uint64_t done = 0; done < r.size;) {
    const uint64_t n = std::min<uint64_t>(buf.size(), r.size - done);
    read_range(record, done, n, buf.data());
    crc = crc32_update(crc, buf.data(), static_cast<size_t>(n));
    done += n;
  }
  if (crc != r.crc32)
    throw std::runtime_error(path_ + ": record " + folder_ + "/" + record +
                             " fails its CRC-32 check (the file is corrupted)");
}

std::string TorchArchive::read_string(const std::string &record) const {
  std::string s(static_cast<size_t>(size(record)), '\0');
  read(record, s.data());
  return s;
}

// --- TorchFile --------------------------------------------------------------------

TorchFile::TorchFile(const std::string &path) : archive_(path) {
  if (archive_.has("byteorder")) {
    const std::string order = archive_.read_string("byteorder");
    if (order == "big")
      big_endian_ = true;
    else if (order != "little")
      throw std::runtime_error(path + ": record " + archive_.folder() +
                               "/byteorder says '" + order.substr(0, 16) +
                               "', expected 'little' or 'big'");
  }
  if (!archive_.has("data.pkl"))
    throw std::runtime_error(path + ": no data.pkl record (not a torch.save archive)");
  const std::string pickle = archive_.read_string("data.pkl");
  dict_ = parse_torch_state_dict(reinterpret_cast<const uint8_t *>(pickle.data()),
                                 pickle.size(), path);
  for (const TorchStorageRef &s : dict_.storages) {
    const std::string record = "data/" + s.key;
    if (!archive_.has(record))
      throw std::runtime_error(path + ": storage " + s.key + " has no record " +
                               archive_.folder() + "/" + record);
    // numel * element size cannot overflow: the unpickler checked it.
    const uint64_t want = static_cast<uint64_t>(s.numel) * dtype_bytes(s.dtype);
    if (archive_.size(record) != want)
      throw std::runtime_error(path + ": record " + archive_.folder() + "/" + record +
                               " holds " + std::to_string(archive_.size(record)) +
                               " bytes, its storage needs " + std::to_string(want));
  }
  for (size_t i = 0; i < dict_.tensors.size(); ++i)
    by_name_.emplace(dict_.tensors[i].first, i);
  verified_ = std::make_unique<std::atomic<bool>[]>(dict_.storages.size());
}

std::optional<size_t> TorchFile::find(const std::string &name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end())
    return std::nullopt;
  return it->second;
}

Tensor TorchFile::read(size_t i) const {
  const TorchTensorRef &r = ref(i);
  const TorchStorageRef &storage = dict_.storages[r.storage];
  const size_t width = dtype_bytes(storage.dtype);
  const int64_t n = r.numel();
  Tensor t;
  t.dtype = storage.dtype;
  t.shape = r.shape;
  t.data.resize(static_cast<size_t>(n) * width);
  const std::string record = "data/" + storage.key;

  if (r.offset == 0 && n == storage.numel && r.is_contiguous()) {
    // The common case (every Meta tensor): the tensor is its whole storage,
    // checked as it is read.
    archive_.read(record, t.data.data());
    verified_[r.storage] = true;
  } else if (n > 0) {
    // A view: check the storage once, read the span the view touches, then
    // gather its elements in row-major order, a row at a time when the last
    // dimension is dense. Offsets and the span were bounds-checked when
    // parsed.
    if (!verified_[r.storage]) {
      archive_.verify(record);
      verified_[r.storage] = true;
    }
    const size_t rank = r.shape.size();
    int64_t last = r.offset;
    for (size_t d = 0; d < rank; ++d)
      last += (r.shape[d] - 1) * r.stride[d];
    std::vector<uint8_t> span(static_cast<size_t>(last - r.offset + 1) * width);
    archive_.read_range(record, static_cast<uint64_t>(r.offset) * width, span.size(),
                        span.data());
    const bool dense_rows = rank > 0 && r.stride[rank - 1] == 1;
    const int64_t run = dense_rows ? r.shape[rank - 1] : 1; // elements per memcpy
    const size_t outer_rank = dense_rows ? rank - 1 : rank;
    std::vector<int64_t> index(outer_rank, 0);
    uint8_t *out = t.data.data();
    for (int64_t e = 0; e < n; e += run) {
      int64_t at = 0;
      for (size_t d = 0; d < outer_rank; ++d)
        at += index[d] * r.stride[d];
      std::memcpy(out + static_cast<size_t>(e) * width, span.data() + static_cast<size_t>(at) * width,
                  static_cast<size_t>(run) * width);
      for (size_t d = outer_rank; d-- > 0;) {
        if (++index[d] < r.shape[d])
          break;
        index[d] = 0;
      }
    }
  }
  if (big_endian_)
    swap_bytes(t.data.data(), static_cast<size_t>(n), width);
  return t;
}

} // namespace llamart::ckpt
