// Byte counts for the device sessions' one-line descriptions.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace llamart::cuda {

/// Bytes in the largest binary unit that keeps the number >= 1 ("12.5 MiB").
inline std::string bytes_text(int64_t bytes) {
  const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char s[32];
  std::snprintf(s, sizeof s, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
  return s;
}

} // namespace llamart::cuda
