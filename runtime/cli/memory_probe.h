// `memcheck`: what a training process really uses, against the compile-time
// plan. The arenas are filled with two different byte patterns in two runs
// of one step; the highest byte that changed in either run is the arena's
// measured high-water mark (a plan that reserves more than the step touches
// shows as a gap). A guard region past each arena must stay intact (a kernel
// writing beyond its buffer is an error). The process's peak RSS growth over
// the allocation and the step is reported next to the bytes allocated.
#pragma once
#include "runtime/program/program.h"

#include <cstdint>

namespace llamart::cli {

struct MemoryProbe {
  int64_t train_arena_bytes = 0;      // planned by the compiler
  int64_t train_arena_used_bytes = 0; // measured high-water mark
  int64_t eval_arena_bytes = 0;
  int64_t eval_arena_used_bytes = 0;
  int64_t state_bytes = 0;            // params, grads, AdamW moments
  int64_t allocated_bytes = 0;        // state + arenas + token buffers
  int64_t rss_growth_bytes = 0;       // peak RSS minus RSS before allocating
};

// Throws std::runtime_error when a guard region was overwritten.
MemoryProbe probe_memory(const ProgramInfo &program, uint64_t seed);

// The same on the device of a device program (program.open_device): the
// session's arena high-water marks and the device memory it holds and uses
// (device_session.h).
DeviceMemoryProbe probe_device_memory(const ProgramInfo &program, uint64_t seed);

} // namespace llamart::cli
