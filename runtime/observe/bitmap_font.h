// A 5x7 pixel font for the labels of metrics.png (plot.h), so that plotting
// needs no font file or library. It covers printable ASCII from ' ' to '_';
// lowercase letters are drawn as capitals.
#pragma once
#include <cstdint>
#include <string>

namespace llamart::observe {

constexpr int kGlyphWidth = 5, kGlyphHeight = 7;
constexpr int kGlyphAdvance = kGlyphWidth + 1; // one blank column between glyphs

// Whether pixel (x, y) of `c`'s glyph is set, x in [0, 5), y in [0, 7) from
// the top. A character outside the font draws as '?'.
bool glyph_pixel(char c, int x, int y);

// Width in pixels of `text` drawn at `scale` (no trailing blank column).
int text_width(const std::string &text, int scale = 1);

} // namespace llamart::observe
