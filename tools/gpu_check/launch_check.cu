// Linked into the kernel library by `tools/gpu-check prepare` (device mode) so
// that the harness can read the launch errors and faults of the library's own
// CUDA runtime (nvcc links it statically: torch's runtime never sees them).
#include <cuda_runtime.h>

extern "C" int gpu_check_last_error(void) { return int(cudaGetLastError()); }
extern "C" int gpu_check_synchronize(void) { return int(cudaDeviceSynchronize()); }
extern "C" const char *gpu_check_error_string(int e) {
  return cudaGetErrorString(cudaError_t(e));
}
