// ISA detection for the kernels that carry AVX2 / AVX-512 variants (isa.h).
#include "runtime/cpu/isa.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace llamart::cpu {
namespace {

Isa detect() {
#if LLAMART_HAVE_ISA_VARIANTS
  // __builtin_cpu_supports also checks that the OS saves the wide registers
  // (XCR0), so a "yes" here means the instructions are safe to execute.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("bmi2"))
    return Isa::kAvx2;
#endif
  return Isa::kBaseline;
}

Isa limit_from_environment() {
  const char *value = std::getenv("LLAMART_CPU_ISA");
  if (value == nullptr || *value == '\0')
    return Isa::kAvx512;
  const std::string name(value);
  if (name == "baseline")
    return Isa::kBaseline;
  if (name == "avx2")
    return Isa::kAvx2;
  if (name == "avx512")
    return Isa::kAvx512;
  throw std::runtime_error("LLAMART_CPU_ISA: unknown value '" + name +
                           "' (expected baseline, avx2 or avx512)");
}

// -1 until the first query reads the environment.
std::atomic<int> g_limit{-1};

} // namespace

Isa supported_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa active_isa() {
  int limit = g_limit.load(std::memory_order_relaxed);
  if (limit < 0) {
    limit = static_cast<int>(limit_from_environment());
    g_limit.store(limit, std::memory_order_relaxed);
  }
  const int supported = static_cast<int>(supported_isa());
  return static_cast<Isa>(limit < supported ? limit : supported);
}

void set_isa_limit(Isa limit) {
  g_limit.store(static_cast<int>(limit), std::memory_order_relaxed);
}

const char *isa_name(Isa isa) {
  switch (isa) {
  case Isa::kBaseline:
    return "baseline";
  case Isa::kAvx2:
    return "avx2";
  case Isa::kAvx512:
    return "avx512";
  }
  return "unknown";
}

} // namespace llamart::cpu
