#include "runtime/observe/tensorboard.h"

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <unistd.h>

namespace llamart::observe {

namespace {

std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k)
      c = (c & 1) ? 0x82F63B78u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

// Protobuf wire types.
constexpr int kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5;

void append_key(std::string &out, int field, int wire_type) {
  append_varint(out, static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire_type));
}

template <typename T> void append_le(std::string &out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i)
    out.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xFF));
}

void append_bytes_field(std::string &out, int field, const std::string &bytes) {
  append_key(out, field, kLengthDelimited);
  append_varint(out, bytes.size());
  out += bytes;
}

void append_double_field(std::string &out, int field, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  append_key(out, field, kFixed64);
  append_le(out, bits);
}

std::string event_header(double wall_time, int64_t step) {
  std::string e;
  append_double_field(e, 1, wall_time);
  if (step != 0) { // proto3 leaves default values out
    append_key(e, 2, kVarint);
    append_varint(e, static_cast<uint64_t>(step)); // int64: two's complement
  }
  return e;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

} // namespace

uint32_t crc32c(const void *data, size_t n) {
  static const std::array<uint32_t, 256> table = make_crc32c_table();
  const auto *p = static_cast<const uint8_t *>(data);
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i)
    crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(const void *data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

void append_varint(std::string &out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

std::string tfrecord(const std::string &data) {
  std::string r;
  append_le(r, static_cast<uint64_t>(data.size()));
  append_le(r, masked_crc32c(r.data(), 8));
  r += data;
  append_le(r, masked_crc32c(data.data(), data.size()));
  return r;
}

std::string event_file_version(double wall_time) {
  std::string e = event_header(wall_time, 0);
  append_bytes_field(e, 3, "brain.Event:2");
  return e;
}

std::string event_scalars(double wall_time, int64_t step,
                          const std::vector<std::pair<std::string, float>> &values) {
  std::string summary;
  for (const auto &[tag, value] : values) {
    std::string v;
    append_bytes_field(v, 1, tag);
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    append_key(v, 2, kFixed32);
    append_le(v, bits);
    append_bytes_field(summary, 1, v);
  }
  std::string e = event_header(wall_time, step);
  append_bytes_field(e, 5, summary);
  return e;
}

EventWriter::EventWriter(const std::string &dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    throw std::runtime_error(dir + ": cannot create: " + ec.message());
  char host[256] = "localhost";
  if (gethostname(host, sizeof host - 1) != 0)
    std::strcpy(host, "localhost");
  host[sizeof host - 1] = '\0';
  // TensorBoard's own naming; a second file within the same second (a quick
  // resume) gets the pid appended rather than mixing two runs' headers.
  const std::string base = dir + "/events.out.tfevents." +
                           std::to_string(static_cast<long long>(now_seconds())) + "." + host;
  path_ = base;
  if (std::filesystem::exists(path_, ec))
    path_ = base + "." + std::to_string(getpid());
  file_ = std::fopen(path_.c_str(), "ab");
  if (!file_)
    throw std::runtime_error(path_ + ": cannot create: " + std::strerror(errno));
  write(event_file_version(now_seconds()));
}

EventWriter::~EventWriter() {
  if (file_)
    std::fclose(file_);
}

void EventWriter::write(const std::string &event) {
  const std::string r = tfrecord(event);
  if (std::fwrite(r.data(), 1, r.size(), file_) != r.size() || std::fflush(file_) != 0)
    throw std::runtime_error(path_ + ": write failed: " + std::strerror(errno));
}

void EventWriter::scalars(int64_t step, const std::vector<std::pair<std::string, float>> &values) {
  write(event_scalars(now_seconds(), step, values));
}

} // namespace llamart::observe
