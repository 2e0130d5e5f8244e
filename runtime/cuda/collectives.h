// The collectives of a partitioned CUDA program (llama-compile --target cuda
// --dp D --tp T): the interface the generated host step functions and the
// device session call. Two implementations behind it, each compiled once
// into a runtime library and chosen at link time: NCCL on the GPU
// (collectives_nccl.cu, libllamart_cuda_nccl) and MPI on host memory under
// the emulator (collectives_emulated.cpp, libllamart_cuda_emu); both define
// llama_coll::make_communicator.
//
// On a GPU: NCCL, bootstrapped over MPI (runtime/comm: world rank 0 makes
// the ncclUniqueId and broadcasts it), one world communicator split into one
// per grid axis with ncclCommSplit (tp groups: consecutive ranks; dp groups:
// ranks with the same tp index, as comm.h lays the grid out). Collectives
// run on communication streams (lanes) of their own, one for the program's
// collectives and one for the ZeRO-1 buckets (gradient reduce-scatters,
// parameter all-gathers): start(k) records an event
// on the compute stream, the lane's stream waits for it, runs the collective
// and records done[k]; wait(k) makes the compute stream wait for
// done[k]. The compiler places wait(k) before the first later op that reads
// the collective's output or writes over its input or output (the memory
// plan's byte ranges), so the kernels in between (typically the weight
// gradient GEMMs next to an input-gradient all-reduce) overlap the
// communication. Events are stream-ordered, so the whole step still captures
// into one CUDA Graph (the communication stream forks from and joins the
// compute stream inside the capture).
//
// NCCL all-gathers and reduce-scatters are rank-major over a flat buffer;
// the program gathers along any dimension ([outer, chunk] blocks per rank,
// comm.h's layout), so outer > 1 goes through a staging buffer and a permute
// kernel on the communication stream.
//
// A collective that does not complete (a peer died or took another path)
// must not hang the job: Communicator::synchronize waits for the compute
// stream with a deadline (comm::timeout_s()), polling NCCL's asynchronous
// errors; each collective is followed on the communication stream by a
// one-thread kernel that writes its index to pinned host memory, so on
// expiry the message names the last collective that completed and the
// first that did not, and the job ends (ncclCommAbort, comm::abort_job).
//
// Under LLAMA_CUDA_EMULATE the same class runs over runtime/comm's MPI
// collectives on host memory, at one of the two ends of the window in which
// a GPU could run it (LLAMA_EMULATE_COLLECTIVES):
//   late (the default): start(k) only queues the collective on its lane; it
//     runs when wait(k) or a later wait on the same lane is reached (lanes
//     are independent streams on a GPU), so a misplaced wait (a kernel
//     overwriting a collective's input before it ran, or reading its output
//     too early) gives wrong numbers;
//   early: it runs at start(k), so a start placed before its input is
//     complete (a gradient bucket marked ready while the backward still
//     writes it) gives wrong numbers.
// The tests run both, instead of a race that shows only on some GPU runs.
#pragma once

#include "runtime/comm/comm.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#ifdef LLAMA_CUDA_EMULATE
#include "runtime/cuda/emulate.h"
#else
#include <cuda_runtime.h>
#endif

namespace llama_coll {

enum class Kind : int { AllReduceSum, AllReduceMax, AllGather, ReduceScatter };

// One collective of a step: `in` is [outer, chunk] per rank for a gather (the
// output [outer, ranks * chunk]), [outer, ranks * chunk] for a reduce-scatter
// (the output [outer, chunk]); an all-reduce has outer * chunk elements.
// `element_bytes`: 4 fp32, 2 bf16. `axis`: -1 the world, 0 dp, 1 tp
// (comm::Axis).
struct Collective {
  int index;
  Kind kind;
  const void *in;
  void *out;
  int64_t outer, chunk;
  int element_bytes;
  int axis;
  const char *what;
  // The communication stream: 0 for the program's collectives, 1 for the
  // ZeRO-1 buckets, so that a bucket's reduce-scatter or gather never delays a
  // tensor-parallel collective the backward is about to wait for.
  int lane = 0;
};

// The ZeRO-1 gradient buckets of a dp grid (ProgramInfo::grad_bucket_bounds):
// a train step calls grads_ready(k) right after the op that completes bucket
// k's gradients (the compiler's schedule). The session installs itself while
// it captures the update's last micro-step, and then starts the bucket's
// reduce-scatter there, under the rest of the backward.
class GradBuckets {
public:
  virtual void ready(int bucket, cudaStream_t stream) = 0;

protected:
  ~GradBuckets() = default;
};
inline GradBuckets *grad_buckets = nullptr;
inline void grads_ready(int bucket, cudaStream_t stream) {
  if (grad_buckets)
    grad_buckets->ready(bucket, stream);
}

// The same buckets' parameter all-gathers, which the optimizer leaves to
// the next train step: the step calls params_gather(k) for every bucket at
// its start (in the order the forward reads them) and params_needed(k) just
// before the first op that reads a parameter of bucket k (the compiler's
// schedule), so the forward runs under the gathers still in flight. The
// session installs itself for the first micro-step after an update.
class ParamBuckets {
public:
  virtual void gather(int bucket, cudaStream_t stream) = 0;
  virtual void needed(int bucket, cudaStream_t stream) = 0;

protected:
  ~ParamBuckets() = default;
};
inline ParamBuckets *param_buckets = nullptr;
inline void params_gather(int bucket, cudaStream_t stream) {
  if (param_buckets)
    param_buckets->gather(bucket, stream);
}
inline void params_needed(int bucket, cudaStream_t stream) {
  if (param_buckets)
    param_buckets->needed(bucket, stream);
}

class Communicator {
public:
  virtual ~Communicator() = default;
  // The program's collective `c.index`, after everything already on
  // `stream` (the compute stream).
  virtual void start(const Collective &c, cudaStream_t stream) = 0;
  // Everything on `stream` after this waits for collective `index` (and,
  // being stream-ordered, for every collective started before it).
  virtual void wait(int index, cudaStream_t stream) = 0;
  // Waits for `stream` to finish, with the job's deadline: a collective that
  // never completes ends the job with its name instead of a hang.
  virtual void synchronize(cudaStream_t stream) = 0;
};

// `staging_bytes`: the largest gather or scatter along an inner dimension
// of the program (the compiler's figure), allocated once so that a
// captured CUDA Graph never sees the buffer move. Defined by the
// implementation the binary links (NCCL, or the emulation).
std::unique_ptr<Communicator> make_communicator(size_t staging_bytes);

// The communicator of the running session (set by the session when the
// program is partitioned; the host step functions reach it through these).
inline Communicator *active = nullptr;

inline Communicator &get(const char *what) {
  if (!active)
    throw std::logic_error(std::string("collective ") + what +
                           " outside a partitioned device session");
  return *active;
}
inline void start(int index, Kind kind, const void *in, void *out, int64_t outer,
                  int64_t chunk, int element_bytes, int axis, const char *what,
                  cudaStream_t stream) {
  get(what).start({index, kind, in, out, outer, chunk, element_bytes, axis, what}, stream);
}
inline void wait(int index, cudaStream_t stream) { get("wait").wait(index, stream); }
// This rank's index on a grid axis (vocabulary-parallel offsets).
inline int rank(int axis) {
  return llamart::comm::rank(static_cast<llamart::comm::Axis>(axis));
}

} // namespace llama_coll
