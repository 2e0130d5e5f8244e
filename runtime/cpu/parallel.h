// Thresholds below which a kernel runs on the calling thread: waking the
// OpenMP team costs a few microseconds, more than small loops take.
#pragma once
#include <cstdint>

namespace llamart::cpu {

// Elementwise kernels: ~64K elements is where a team of threads starts to pay.
constexpr int64_t kParallelElements = int64_t(1) << 16;

} // namespace llamart::cpu
