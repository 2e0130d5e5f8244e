// Error checking for every CUDA runtime and cuBLASLt call of the runtime and
// of generated programs: a failed call throws std::runtime_error naming the
// call, the source location and the library's message, so a bad launch or an
// out-of-memory surfaces at the call that caused it (with CUDA_LAUNCH_BLOCKING
// for asynchronous kernel faults), never as a corrupt result later.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace llamart::cuda {

[[noreturn]] inline void fail(const char *what, const char *file, int line,
                              const std::string &message) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) +
                           ": " + what + ": " + message);
}

inline void check(cudaError_t status, const char *what, const char *file,
                  int line) {
  if (status != cudaSuccess)
    fail(what, file, line,
         std::string(cudaGetErrorName(status)) + " (" +
             cudaGetErrorString(status) + ")");
}

inline void check(cublasStatus_t status, const char *what, const char *file,
                  int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    fail(what, file, line,
         std::string("cuBLAS status ") + std::to_string(int(status)));
}

} // namespace llamart::cuda

#define LLAMART_CUDA_CHECK(call)                                               \
  ::llamart::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: launch-configuration errors are reported at once.
#define LLAMART_CUDA_CHECK_LAUNCH()                                            \
  ::llamart::cuda::check(cudaGetLastError(), "kernel launch", __FILE__,        \
                         __LINE__)
