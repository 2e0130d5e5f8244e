#include "runtime/tokenizer/byte_level.h"

#include "runtime/tokenizer/unicode.h"

#include <array>

namespace llamart::tokenizer {

namespace {

struct Tables {
  std::array<char32_t, 256> to_char{};
  std::array<int16_t, 324> to_byte{}; // every mapped code point is < U+0144
  Tables() {
    to_byte.fill(-1);
    unsigned extra = 0;
    for (unsigned b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      to_char[b] = printable ? b : 0x100 + extra++;
      to_byte[to_char[b]] = static_cast<int16_t>(b);
    }
  }
};

const Tables &tables() {
  static const Tables t;
  return t;
}

} // namespace

char32_t byte_to_char(unsigned char byte) { return tables().to_char[byte]; }

int char_to_byte(char32_t cp) {
  return cp < tables().to_byte.size() ? tables().to_byte[cp] : -1;
}

std::string bytes_to_chars(std::string_view text) {
  std::string out;
  out.reserve(text.size() * 2);
  for (char c : text)
    append_utf8(out, byte_to_char(static_cast<unsigned char>(c)));
  return out;
}

} // namespace llamart::tokenizer
