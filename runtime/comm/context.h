// Internal to runtime/comm: the process-wide communicator state and the
// deadline-bounded wait that every collective goes through. Not part of the
// contract (comm.h); only comm.cpp and collectives.cpp include it.
#pragma once
#include "runtime/comm/comm.h"

#include <mpi.h>

#include <cstddef>
#include <vector>

namespace llamart::comm::detail {

// Staging buffers of a collective never exceed this many bytes in total, so a
// gradient all-reduce of a 7B model does not double its memory (it is done in
// tiles instead). LLAMA_COMM_CHUNK_BYTES overrides it (tests use tiny tiles to
// exercise the tiling; large values trade memory for fewer round trips).
constexpr size_t kDefaultStagingBytes = size_t(64) << 20;

struct Context {
  bool initialized = false;
  bool started_mpi = false;   // finalize() only ends MPI if init() began it
  int dp = 1, tp = 1;
  int world_rank = 0, world_size = 1;
  double timeout_s = 600.0;
  size_t staging_bytes = kDefaultStagingBytes;
  MPI_Comm dp_comm = MPI_COMM_NULL;
  MPI_Comm tp_comm = MPI_COMM_NULL;
  // Reused between calls: the runtime is MPI_THREAD_FUNNELED (one thread
  // communicates), and reallocating 64 MiB per collective costs page faults.
  std::vector<std::byte> staging;
};

Context &context();

// What a collective is, for messages: "all_reduce over tp ('grad wq')".
struct Call {
  const char *collective;
  Axis axis;
  const char *what;
};

const char *axis_name(Axis axis);
MPI_Comm axis_comm(Axis axis);

// staging buffer of at least `bytes`, aligned for any element type.
std::byte *staging(size_t bytes);

// Ends the job (MPI_Abort) naming the call when an MPI function failed: a
// failed collective on one rank would leave its peers waiting, so throwing
// is no use in an SPMD program.
void check_mpi(int rc, const Call &call, const char *mpi_function);

// Completes `requests`, polling with MPI_Testall and a growing sleep until
// the context's deadline; on expiry prints the timeout line and aborts.
void wait_all(MPI_Request *requests, int count, const Call &call);

} // namespace llamart::comm::detail
