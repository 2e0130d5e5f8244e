// Run-time choice of the vector ISA for the compute-bound CPU kernels.
//
// The runtime is compiled for x86-64-v2 so that one training binary runs on
// any x86-64 machine. Attention spends its time in small dense tiles where
// AVX2 / AVX-512 are 2-4x faster than SSE, so those kernels are compiled a
// second and third time with a function-level target attribute and picked
// here once per process. Memory-bound kernels (norms, elementwise) stay on the
// baseline: wider vectors do not help a loop that waits on DRAM.
#pragma once

namespace llamart::cpu {

enum class Isa { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// The widest ISA that both this CPU (and OS) supports and the current limit
// allows. The limit starts at LLAMART_CPU_ISA (baseline|avx2|avx512) when that
// environment variable is set, unlimited otherwise; an unknown value throws.
Isa active_isa();
// The widest ISA this CPU supports, ignoring any limit.
Isa supported_isa();
// Caps the ISA used from now on (tests run every variant; benches compare).
void set_isa_limit(Isa limit);
const char *isa_name(Isa isa);

} // namespace llamart::cpu

// Function attributes that compile one function for a wider ISA. Helpers that
// such a function calls must be LLAMART_INLINE so they are compiled for the
// caller's ISA rather than the file's baseline.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LLAMART_HAVE_ISA_VARIANTS 1
#define LLAMART_TARGET_AVX2                                                    \
  __attribute__((target("avx2,fma,bmi,bmi2,f16c,lzcnt,movbe")))
#define LLAMART_TARGET_AVX512                                                  \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512cd,avx2,"    \
                        "fma,bmi,bmi2,f16c,lzcnt,movbe")))
#define LLAMART_INLINE inline __attribute__((always_inline))
#else
#define LLAMART_HAVE_ISA_VARIANTS 0
#define LLAMART_INLINE inline
#endif
