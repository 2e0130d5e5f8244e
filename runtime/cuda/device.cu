#include "runtime/cuda/device.h"

#include "runtime/cuda/check.h"

#include <cstdio>
#include <cstdlib>
#include <stdexcept>

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

std::string open_device(bool local_rank, int fallback_rank) {
  if (local_rank) {
    int count = 0;
    if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0) {
      int local = -1;
      for (const char *var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK"})
        if (const char *v = std::getenv(var)) {
          local = std::atoi(v);
          break;
        }
      if (local < 0)
        local = fallback_rank;
      LLAMART_CUDA_CHECK(cudaSetDevice(local % count));
    } else {
      cudaGetLastError(); // probe_device below explains
    }
  }
  std::string why;
  const std::optional<DeviceInfo> info = probe_device(&why);
  if (!info)
    throw std::runtime_error("no CUDA device: " + why +
                             " (this binary was built with --target cuda)");
  if (info->sm_major < 9)
    throw std::runtime_error("CUDA device " + info->name + " is sm_" +
                             std::to_string(info->sm_major) + std::to_string(info->sm_minor) +
                             "; this binary is built for sm_90a (Hopper)");
  LLAMART_CUDA_CHECK(cudaFree(nullptr)); // the context exists from here on
  char memory[32];
  std::snprintf(memory, sizeof memory, "%.1f GiB",
                double(info->total_bytes) / double(int64_t(1) << 30));
  return info->name + " (sm_" + std::to_string(info->sm_major) +
         std::to_string(info->sm_minor) + ", " + std::to_string(info->sm_count) + " SMs, " +
         memory + ")";
}

} // namespace llamart::cuda
