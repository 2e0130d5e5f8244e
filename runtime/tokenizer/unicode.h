// UTF-8 and the few Unicode properties the tokenizer.json engine needs.
//
// Hugging Face tokenizers works on Rust strings: valid UTF-8, iterated by
// code point. Our input is a std::string, so text is validated and decoded
// once (decode_utf8) and the pre-tokenizer patterns then run over code
// points. Categories follow Oniguruma's Unicode semantics, which is what the
// patterns in tokenizer.json files are written for: \p{L} = general category
// L*, \p{N} = N*, \s = White_Space (TAB..CR, space, U+0085, Zs, Zl, Zp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llamart::tokenizer {

// Decodes valid UTF-8 into code points. Throws std::runtime_error naming
// `what` and the byte offset of the first invalid sequence (overlong forms,
// surrogates and values above U+10FFFF are invalid, as in Rust's str).
std::vector<char32_t> decode_utf8(std::string_view text, const std::string &what);

// True when `text` is valid UTF-8 (same rules as decode_utf8).
bool is_valid_utf8(std::string_view text);

// Appends the UTF-8 encoding of `cp` (which must be a valid scalar value).
void append_utf8(std::string &out, char32_t cp);

std::string encode_utf8(const std::u32string &cps);

// Byte length of the UTF-8 sequence whose lead byte is `lead` (1 for
// continuation or invalid lead bytes, so loops always advance).
inline size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

// Replaces every maximal invalid subsequence of `bytes` with U+FFFD, the way
// Rust's String::from_utf8_lossy does (which the ByteLevel decoder uses).
std::string utf8_lossy(std::string_view bytes);

bool is_letter(char32_t cp);      // \p{L}
bool is_number(char32_t cp);      // \p{N}
bool is_whitespace(char32_t cp);  // \s (Unicode White_Space)
// Rust's char::is_alphanumeric: Alphabetic or Numeric. Letters and numbers by
// category are a close stand-in used only for added tokens' single_word.
inline bool is_alphanumeric(char32_t cp) { return is_letter(cp) || is_number(cp); }

} // namespace llamart::tokenizer
