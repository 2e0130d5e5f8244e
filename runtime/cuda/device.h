// Which CUDA device a process runs on, or why there is none. A machine with
// the toolkit but no GPU (CI) answers "no device" with the driver's reason
// instead of throwing, so GPU tests skip cleanly there.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace llamart::cuda {

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int sm_major = 0, sm_minor = 0;
  int sm_count = 0;
  int64_t total_bytes = 0;
};

// The current device, or nullopt with `why` set (no driver, driver too old
// for this toolkit, no device visible).
std::optional<DeviceInfo> probe_device(std::string *why = nullptr);

/// Opens the GPU a generated binary runs on: with `local_rank`, the
/// launcher's local rank (OpenMPI, Slurm or torchrun's variable, else
/// `fallback_rank`) modulo the visible devices is selected first. Throws
/// std::runtime_error when there is no device or it is older than Hopper
/// (the binaries are built for sm_90a); creates the context. Returns one
/// line: name, compute capability, SMs, memory.
std::string open_device(bool local_rank = false, int fallback_rank = 0);

} // namespace llamart::cuda
