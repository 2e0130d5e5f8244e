#include "runtime/cuda/device.h"

#include "runtime/cuda/check.h"

namespace llamart::cuda {

std::optional<DeviceInfo> probe_device(std::string *why) {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    if (why)
      *why = status != cudaSuccess
                 ? std::string(cudaGetErrorName(status)) + ": " +
                       cudaGetErrorString(status)
                 : std::string("no CUDA device visible");
    cudaGetLastError(); // clear the sticky error of the failed query
    return std::nullopt;
  }
  DeviceInfo info;
  LLAMART_CUDA_CHECK(cudaGetDevice(&info.ordinal));
  cudaDeviceProp prop{};
  LLAMART_CUDA_CHECK(cudaGetDeviceProperties(&prop, info.ordinal));
  info.name = prop.name;
  info.sm_major = prop.major;
  info.sm_minor = prop.minor;
  info.sm_count = prop.multiProcessorCount;
  info.total_bytes = static_cast<int64_t>(prop.totalGlobalMem);
  return info;
}

} // namespace llamart::cuda
