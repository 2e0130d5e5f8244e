// GPT-2's byte-to-character table, used by the ByteLevel pre-tokenizer and
// decoder: every byte becomes one printable code point so that BPE works on
// visible characters (byte 0x20 ' ' is 'Ġ' U+0120, 0x0A is 'Ċ' U+010A).
// Printable Latin-1 bytes map to themselves; the other 68 bytes map to
// U+0100 + n in byte order.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace llamart::tokenizer {

char32_t byte_to_char(unsigned char byte);

// The byte that `cp` stands for, or -1 when `cp` is not in the table.
int char_to_byte(char32_t cp);

// Maps each byte of `text` to its character, UTF-8 encoded.
std::string bytes_to_chars(std::string_view text);

} // namespace llamart::tokenizer
