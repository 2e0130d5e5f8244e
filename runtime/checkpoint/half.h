// IEEE binary16 and bfloat16 <-> float conversions for checkpoint I/O.
//
// These run once per tensor element at load/save time, so they favour exact,
// branchy bit manipulation over speed: every binary16 value (including
// subnormals, infinities and NaN payload sign) converts exactly, and the
// float -> half directions round to nearest-even like the hardware does.
#pragma once
#include <cstdint>
#include <cstring>

namespace llamart::ckpt {

inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

// bfloat16 is the upper half of a binary32: widening is a shift.
inline float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

// Round to nearest, ties to even; NaN stays NaN (quiet bit forced so that a
// payload living only in the dropped low bits cannot turn into infinity).
inline uint16_t float_to_bf16(float f) {
  const uint32_t bits = float_to_bits(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u)
    return uint16_t((bits >> 16) | 0x0040u);
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t((bits + rounding) >> 16);
}

inline float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) // inf / NaN: keep the payload
    return bits_to_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) // normal: rebias 15 -> 127
    return bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  if (mantissa == 0)
    return bits_to_float(sign);
  // Subnormal half = mantissa * 2^-24; renormalize for binary32.
  int shift = 0;
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    ++shift;
  }
  mantissa &= 0x3ffu;
  return bits_to_float(sign | (uint32_t(113 - shift) << 23) | (mantissa << 13));
}

inline uint16_t float_to_f16(float f) {
  const uint32_t bits = float_to_bits(f);
  const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) // NaN
    return uint16_t(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) // rounds to >= 65520: overflow to infinity
    return uint16_t(sign | 0x7c00u);
  if (abs < 0x38800000u) { // below 2^-14: subnormal half (or zero)
    if (abs < 0x33000000u) // below half of the smallest subnormal: zero
      return sign;
    const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - int(abs >> 23); // 14..24
    const uint32_t kept = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    const uint32_t rounded = kept + ((rest > half || (rest == half && (kept & 1u))) ? 1u : 0u);
    return uint16_t(sign | rounded);
  }
  // Normal: rebias and round the 13 dropped bits to nearest-even. A carry out
  // of the mantissa correctly bumps the exponent.
  const uint32_t rebased = abs - (112u << 23);
  const uint32_t rounding = 0xfffu + ((rebased >> 13) & 1u);
  return uint16_t(sign | ((rebased + rounding) >> 13));
}

} // namespace llamart::ckpt
