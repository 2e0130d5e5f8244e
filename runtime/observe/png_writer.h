// PNG encoding with no library: an 8-bit palette image, zlib-wrapped deflate
// with fixed Huffman codes. The only matches searched for are the two that
// matter for plots (a run of one colour: distance 1; a row equal to the one
// above: distance = row length), which shrinks a mostly-white chart about
// 50x at a fraction of zlib's code size, and keeps the runtime free of a
// compression dependency.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace llamart::observe {

// CRC-32 of PNG chunks and gzip (reflected polynomial 0xEDB88320), continued
// from `crc` like zlib's crc32(crc, data, n): crc32(0, "123456789") =
// 0xCBF43926.
uint32_t crc32(uint32_t crc, const void *data, size_t n);

// Adler-32 of the zlib trailer: adler32("Wikipedia") = 0x11E60398.
uint32_t adler32(const void *data, size_t n);

// A raw deflate stream (RFC 1951, one final fixed-Huffman block) of `n`
// bytes; `row_stride` > 0 also lets a byte repeat the one that many bytes
// back (the pixel above in a filtered image). row_stride <= 32768.
std::string deflate_fixed(const uint8_t *data, size_t n, size_t row_stride);

// zlib stream (RFC 1950): header, deflate_fixed, Adler-32.
std::string zlib_fixed(const uint8_t *data, size_t n, size_t row_stride);

struct Rgb {
  uint8_t r, g, b;
};

// An indexed-colour image: pixels[y * width + x] indexes `palette`.
struct IndexedImage {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;
  std::vector<Rgb> palette; // at most 256 entries
};

// The PNG file's bytes (colour type 3, bit depth 8, no filter).
// Throws std::invalid_argument on sizes out of range or a pixel index past
// the palette.
std::string encode_png(const IndexedImage &image);

// Writes `bytes` to `path` via a temp file in the same directory, fsync and
// rename: a reader (or a crash) sees the old file or the new one, never half
// of one. Throws std::runtime_error naming the path.
void write_file_atomic(const std::string &path, const std::string &bytes);

} // namespace llamart::observe
