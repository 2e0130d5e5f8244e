#include "runtime/observe/png_writer.h"

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <unistd.h>

namespace llamart::observe {

namespace {

std::array<uint32_t, 256> make_crc32_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k)
      c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

// Deflate's bit order: values go in least significant bit first; Huffman
// codes are defined most significant bit first, so they are reversed.
class BitWriter {
public:
  void bits(uint32_t value, int count) {
    acc_ |= static_cast<uint64_t>(value) << fill_;
    fill_ += count;
    while (fill_ >= 8) {
      out_.push_back(static_cast<char>(acc_ & 0xFF));
      acc_ >>= 8;
      fill_ -= 8;
    }
  }
  void huffman(uint32_t code, int length) {
    uint32_t reversed = 0;
    for (int i = 0; i < length; ++i)
      reversed |= ((code >> i) & 1u) << (length - 1 - i);
    bits(reversed, length);
  }
  std::string finish() {
    if (fill_ > 0)
      out_.push_back(static_cast<char>(acc_ & 0xFF));
    acc_ = 0;
    fill_ = 0;
    return std::move(out_);
  }

private:
  std::string out_;
  uint64_t acc_ = 0;
  int fill_ = 0;
};

// The fixed literal/length code of RFC 1951 section 3.2.6.
void put_symbol(BitWriter &w, int sym) {
  if (sym < 144)
    w.huffman(0x30 + sym, 8);
  else if (sym < 256)
    w.huffman(0x190 + sym - 144, 9);
  else if (sym < 280)
    w.huffman(sym - 256, 7);
  else
    w.huffman(0xC0 + sym - 280, 8);
}

constexpr int kLengthBase[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,
                                 15, 17, 19, 23, 27, 31, 35, 43, 51,  59,
                                 67, 83, 99, 115, 131, 163, 195, 227, 258};
constexpr int kLengthExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                  2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
constexpr int kDistBase[30] = {1,    2,    3,    4,    5,    7,     9,    13,
                               17,   25,   33,   49,   65,   97,    129,  193,
                               257,  385,  513,  769,  1025, 1537,  2049, 3073,
                               4097, 6145, 8193, 12289, 16385, 24577};
constexpr int kDistExtra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
constexpr size_t kMinMatch = 3, kMaxMatch = 258, kMaxDistance = 32768;

void put_match(BitWriter &w, size_t length, size_t distance) {
  int l = 28;
  while (kLengthBase[l] > static_cast<int>(length))
    --l;
  put_symbol(w, 257 + l);
  w.bits(static_cast<uint32_t>(length - kLengthBase[l]), kLengthExtra[l]);
  int d = 29;
  while (kDistBase[d] > static_cast<int>(distance))
    --d;
  w.huffman(static_cast<uint32_t>(d), 5);
  w.bits(static_cast<uint32_t>(distance - kDistBase[d]), kDistExtra[d]);
}

size_t match_length(const uint8_t *data, size_t n, size_t pos, size_t distance) {
  if (distance == 0 || distance > pos)
    return 0;
  size_t len = 0;
  while (pos + len < n && len < kMaxMatch && data[pos + len] == data[pos + len - distance])
    ++len;
  return len;
}

void put_u32_be(std::string &out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8)
    out.push_back(static_cast<char>((v >> s) & 0xFF));
}

void put_chunk(std::string &png, const char type[4], const std::string &data) {
  put_u32_be(png, static_cast<uint32_t>(data.size()));
  const size_t type_at = png.size();
  png.append(type, 4);
  png += data;
  put_u32_be(png, crc32(0, png.data() + type_at, 4 + data.size()));
}

} // namespace

uint32_t crc32(uint32_t crc, const void *data, size_t n) {
  static const std::array<uint32_t, 256> table = make_crc32_table();
  const auto *p = static_cast<const uint8_t *>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i)
    crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t adler32(const void *data, size_t n) {
  const auto *p = static_cast<const uint8_t *>(data);
  uint32_t a = 1, b = 0;
  // 5552 bytes is the most that can be summed before b overflows 32 bits.
  while (n > 0) {
    const size_t chunk = n < 5552 ? n : 5552;
    for (size_t i = 0; i < chunk; ++i) {
      a += p[i];
      b += a;
    }
    a %= 65521;
    b %= 65521;
    p += chunk;
    n -= chunk;
  }
  return (b << 16) | a;
}

std::string deflate_fixed(const uint8_t *data, size_t n, size_t row_stride) {
  if (row_stride > kMaxDistance)
    throw std::invalid_argument("deflate_fixed: row stride " + std::to_string(row_stride) +
                                " exceeds deflate's 32768-byte window");
  BitWriter w;
  w.bits(1, 1); // BFINAL
  w.bits(1, 2); // BTYPE = 01, fixed Huffman codes
  size_t pos = 0;
  while (pos < n) {
    const size_t run = match_length(data, n, pos, 1);
    const size_t above = match_length(data, n, pos, row_stride);
    const size_t best = above > run ? above : run;
    if (best >= kMinMatch) {
      put_match(w, best, above > run ? row_stride : 1);
      pos += best;
    } else {
      put_symbol(w, data[pos]);
      ++pos;
    }
  }
  put_symbol(w, 256); // end of block
  return w.finish();
}

std::string zlib_fixed(const uint8_t *data, size_t n, size_t row_stride) {
  // CMF 0x78: deflate with a 32K window; FLG 0x01 makes 0x7801 a multiple
  // of 31 (no dictionary, "fastest" level).
  std::string out("\x78\x01", 2);
  out += deflate_fixed(data, n, row_stride);
  put_u32_be(out, adler32(data, n));
  return out;
}

std::string encode_png(const IndexedImage &image) {
  const int w = image.width, h = image.height;
  if (w <= 0 || h <= 0 || w > 32767 || h > 32767)
    throw std::invalid_argument("encode_png: image size " + std::to_string(w) + "x" +
                                std::to_string(h) + " is out of range");
  if (image.pixels.size() != static_cast<size_t>(w) * static_cast<size_t>(h))
    throw std::invalid_argument("encode_png: pixel count does not match the size");
  if (image.palette.empty() || image.palette.size() > 256)
    throw std::invalid_argument("encode_png: palette must have 1 to 256 colours");
  for (uint8_t p : image.pixels)
    if (p >= image.palette.size())
      throw std::invalid_argument("encode_png: pixel index " + std::to_string(p) +
                                  " is past the palette");

  std::string png("\x89PNG\r\n\x1a\n", 8);
  std::string ihdr;
  put_u32_be(ihdr, static_cast<uint32_t>(w));
  put_u32_be(ihdr, static_cast<uint32_t>(h));
  ihdr += std::string("\x08\x03\x00\x00\x00", 5); // depth 8, palette, deflate, filter 0, no interlace
  put_chunk(png, "IHDR", ihdr);

  std::string plte;
  for (const Rgb &c : image.palette) {
    plte.push_back(static_cast<char>(c.r));
    plte.push_back(static_cast<char>(c.g));
    plte.push_back(static_cast<char>(c.b));
  }
  put_chunk(png, "PLTE", plte);

  // Every row starts with its filter type, 0 (none): palette indices do not
  // predict well from neighbours, and the deflate matches catch the runs.
  const size_t stride = static_cast<size_t>(w) + 1;
  std::vector<uint8_t> raw(stride * static_cast<size_t>(h));
  for (int y = 0; y < h; ++y) {
    raw[y * stride] = 0;
    std::memcpy(&raw[y * stride + 1], &image.pixels[static_cast<size_t>(y) * w],
                static_cast<size_t>(w));
  }
  put_chunk(png, "IDAT", zlib_fixed(raw.data(), raw.size(), stride));
  put_chunk(png, "IEND", "");
  return png;
}

void write_file_atomic(const std::string &path, const std::string &bytes) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  std::FILE *f = std::fopen(tmp.c_str(), "wb");
  if (!f)
    throw std::runtime_error(tmp + ": cannot create: " + std::strerror(errno));
  const bool written = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size() &&
                       std::fflush(f) == 0 && fsync(fileno(f)) == 0;
  const int write_errno = errno;
  if (std::fclose(f) != 0 || !written) {
    std::remove(tmp.c_str());
    throw std::runtime_error(tmp + ": write failed: " + std::strerror(write_errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot rename " + tmp + " to it: " + std::strerror(e));
  }
}

} // namespace llamart::observe
