// The collectives of a partitioned CUDA program (llama-compile --target cuda
// --dp D --tp T): included by the source llama-compile generates, after the
// prelude, so its host step functions can call them.
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

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(LLAMA_PARTITIONED_SOURCE) && !defined(LLAMA_CUDA_EMULATE)
#include "runtime/cuda/check.h"
#include <nccl.h>
#endif

namespace llama_coll {

enum class Kind : int { AllReduceSum, AllReduceMax, AllGather, ReduceScatter };

// One collective of a step: `in` is [outer, chunk] per rank for a gather (the
// output [outer, ranks * chunk]), [outer, ranks * chunk] for a reduce-scatter
// (the output [outer, chunk]); an all-reduce has outer * chunk elements.
// `type`: 'f' fp32, 'a' the program's storage type (act_t). `axis`: -1 the
// world, 0 dp, 1 tp (comm::Axis).
struct Collective {
  int index;
  Kind kind;
  const void *in;
  void *out;
  int64_t outer, chunk;
  char type;
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

#ifndef LLAMA_PARTITIONED_SOURCE
// A single-device program (no LLAMA_PARTITIONED_SOURCE from the generated
// source) has no collectives: the session's calls compile against this
// stand-in, which is never constructed, and nothing links NCCL.
class Communicator {
public:
  explicit Communicator(size_t) { throw std::logic_error("not a partitioned program"); }
  void start(const Collective &, cudaStream_t) {}
  void wait(int, cudaStream_t) {}
  void synchronize(cudaStream_t) {}
};
inline Communicator *active = nullptr;
#else

namespace kernels {
// [ranks, outer, chunk] -> [outer, ranks, chunk] (after a flat all-gather).
template <typename T>
__global__ void __launch_bounds__(256)
    gathered_to_blocks(const T *__restrict__ staged, T *__restrict__ out, int64_t ranks,
                       int64_t outer, int64_t chunk) {
  const int64_t i = int64_t(blockIdx.x) * 256 + threadIdx.x;
  if (i >= ranks * outer * chunk)
    return;
  const int64_t c = i % chunk, o = (i / chunk) % outer, r = i / (chunk * outer);
  out[(o * ranks + r) * chunk + c] = staged[i];
}
// [outer, ranks, chunk] -> [ranks, outer, chunk] (before a flat reduce-scatter).
template <typename T>
__global__ void __launch_bounds__(256)
    blocks_to_ranks(const T *__restrict__ in, T *__restrict__ staged, int64_t ranks,
                    int64_t outer, int64_t chunk) {
  const int64_t i = int64_t(blockIdx.x) * 256 + threadIdx.x;
  if (i >= ranks * outer * chunk)
    return;
  const int64_t c = i % chunk, o = (i / chunk) % outer, r = i / (chunk * outer);
  staged[i] = in[(o * ranks + r) * chunk + c];
}
#ifndef LLAMA_CUDA_EMULATE
__global__ void mark_done(volatile int *progress, int index) { *progress = index; }
#endif
} // namespace kernels

class Communicator {
public:
  // `staging_bytes`: the largest gather or scatter along an inner dimension
  // of the program (the compiler's figure), allocated once so that a
  // captured CUDA Graph never sees the buffer move.
  explicit Communicator(size_t staging_bytes) {
    using llamart::comm::Axis;
    ranks_[0] = llamart::comm::size(Axis::DP);
    ranks_[1] = llamart::comm::size(Axis::TP);
    world_ = llamart::comm::size(Axis::World);
#ifndef LLAMA_CUDA_EMULATE
    ncclUniqueId id;
    if (llamart::comm::rank() == 0)
      check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    llamart::comm::broadcast(&id, sizeof id, 0, Axis::World, "NCCL unique id");
    check(ncclCommInitRank(&comms_[2], world_, id, llamart::comm::rank()), "ncclCommInitRank");
    // tp group: same dp index, ordered by tp index; dp group: same tp index.
    check(ncclCommSplit(comms_[2], llamart::comm::rank(Axis::DP), llamart::comm::rank(Axis::TP),
                        &comms_[1], nullptr),
          "ncclCommSplit (tp)");
    check(ncclCommSplit(comms_[2], llamart::comm::rank(Axis::TP), llamart::comm::rank(Axis::DP),
                        &comms_[0], nullptr),
          "ncclCommSplit (dp)");
    for (cudaStream_t &s : streams_)
      LLAMART_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    void *host = nullptr, *dev = nullptr;
    LLAMART_CUDA_CHECK(cudaHostAlloc(&host, 2 * sizeof(int), cudaHostAllocMapped));
    progress_ = static_cast<volatile int *>(host);
    progress_[0] = progress_[1] = 0;
    LLAMART_CUDA_CHECK(cudaHostGetDevicePointer(&dev, host, 0));
    progress_dev_ = static_cast<int *>(dev);
#endif
    if (staging_bytes > 0 && cudaMalloc(&staging_, staging_bytes) != cudaSuccess)
      throw std::runtime_error("cannot allocate " + std::to_string(staging_bytes) +
                               " bytes of collective staging on the device");
    staging_bytes_ = staging_bytes;
  }

  ~Communicator() {
#ifndef LLAMA_CUDA_EMULATE
    for (auto &[index, e] : ready_)
      cudaEventDestroy(e);
    for (auto &[index, e] : done_)
      cudaEventDestroy(e);
    for (ncclComm_t c : comms_)
      if (c)
        ncclCommDestroy(c);
    for (cudaStream_t s : streams_)
      if (s)
        cudaStreamDestroy(s);
    if (progress_)
      cudaFreeHost(const_cast<int *>(progress_));
#endif
    cudaFree(staging_);
  }

  int ranks(int axis) const { return axis < 0 ? world_ : ranks_[axis]; }

  // The program's collective `c.index`, after everything already on
  // `stream` (the compute stream).
  void start(const Collective &c, cudaStream_t stream) {
    names_[c.index] = c.what;
#ifdef LLAMA_CUDA_EMULATE
    (void)stream;
    if (c.lane < 0 || c.lane > 1)
      throw std::logic_error("collective " + std::string(c.what) + ": no lane " +
                             std::to_string(c.lane));
    lane_[c.index] = c.lane;
    if (early_)
      run(c);
    else
      pending_[c.lane].push_back(c);
#else
    check_staging(c);
    event(ready_, c.index);
    event(done_, c.index);
    stream_ = streams_[c.lane];
    LLAMART_CUDA_CHECK(cudaEventRecord(ready_.at(c.index), stream));
    LLAMART_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_.at(c.index), 0));
    run(c);
    kernels::mark_done<<<1, 1, 0, stream_>>>(progress_dev_ + c.lane, c.index + 1);
    LLAMART_CUDA_CHECK(cudaEventRecord(done_.at(c.index), stream_));
#endif
  }

  // Everything on `stream` after this waits for collective `index` (and,
  // being stream-ordered, for every collective started before it).
  void wait(int index, cudaStream_t stream) {
#ifdef LLAMA_CUDA_EMULATE
    (void)stream;
    auto lane = lane_.find(index);
    if (lane == lane_.end())
      throw std::logic_error("llama_coll::wait: collective #" + std::to_string(index) +
                             " was not started since it was last waited for");
    std::deque<Collective> &queue = pending_[lane->second];
    lane_.erase(lane);
    if (early_)
      return;
    if (std::none_of(queue.begin(), queue.end(),
                     [&](const Collective &c) { return c.index == index; }))
      return; // already run by an earlier wait on its lane
    for (;;) {
      const Collective c = queue.front();
      queue.pop_front();
      run(c);
      if (c.index == index)
        return;
    }
#else
    LLAMART_CUDA_CHECK(cudaStreamWaitEvent(stream, done_.at(index), 0));
#endif
  }

  // Waits for `stream` to finish, with the job's deadline: a collective that
  // never completes ends the job with its name instead of a hang.
  void synchronize(cudaStream_t stream) {
#ifdef LLAMA_CUDA_EMULATE
    (void)stream;
    for (const std::deque<Collective> &queue : pending_)
      if (!queue.empty())
        throw std::logic_error("a step ended with collective #" +
                               std::to_string(queue.front().index) + " (" +
                               queue.front().what + ") never waited for");
#else
    const auto start = std::chrono::steady_clock::now();
    const double timeout = llamart::comm::timeout_s();
    auto pause = std::chrono::microseconds(20);
    for (;;) {
      const cudaError_t q = cudaStreamQuery(stream);
      if (q == cudaSuccess)
        return;
      if (q != cudaErrorNotReady)
        LLAMART_CUDA_CHECK(q);
      for (int a = 0; a < 3; ++a) {
        ncclResult_t async = ncclSuccess;
        if (comms_[a] && ncclCommGetAsyncError(comms_[a], &async) == ncclSuccess &&
            async != ncclSuccess && async != ncclInProgress)
          fail(std::string("NCCL reported ") + ncclGetErrorString(async));
      }
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >
          timeout)
        fail("the step did not complete within " + std::to_string(int(timeout)) +
             " s (LLAMA_COMM_TIMEOUT_S)");
      std::this_thread::sleep_for(pause);
      if (pause < std::chrono::milliseconds(2))
        pause *= 2;
    }
#endif
  }

private:
  void run(const Collective &c) {
    const int64_t n = c.outer * c.chunk, ranks = this->ranks(c.axis);
    switch (c.kind) {
    case Kind::AllReduceSum:
    case Kind::AllReduceMax:
      all_reduce(c, c.in, c.out, n, c.kind == Kind::AllReduceMax);
      return;
    case Kind::AllGather:
      if (c.outer == 1) {
        all_gather(c, c.in, c.out, n);
      } else {
        all_gather(c, c.in, staging_, n);
        permute(c, /*gather=*/true, ranks);
      }
      return;
    case Kind::ReduceScatter:
      if (c.outer == 1) {
        reduce_scatter(c, c.in, c.out, n);
      } else {
        permute(c, /*gather=*/false, ranks);
        reduce_scatter(c, staging_, c.out, n);
      }
      return;
    }
  }

  static bool fp32(const Collective &c) { return c.type == 'f' || sizeof(act_t) == 4; }
  static size_t element_bytes(const Collective &c) { return fp32(c) ? 4 : sizeof(act_t); }

  void permute(const Collective &c, bool gather, int64_t ranks) {
    check_staging(c);
    const int64_t total = ranks * c.outer * c.chunk;
    const dim3 grid(unsigned((total + 255) / 256)), block(256);
    auto go = [&](auto *typed) {
      using T = std::remove_pointer_t<decltype(typed)>;
      if (gather)
        LLAMA_LAUNCH(kernels::gathered_to_blocks<T>, grid, block, stream_,
                     static_cast<const T *>(staging_), static_cast<T *>(c.out), ranks,
                     c.outer, c.chunk);
      else
        LLAMA_LAUNCH(kernels::blocks_to_ranks<T>, grid, block, stream_,
                     static_cast<const T *>(c.in), static_cast<T *>(staging_), ranks,
                     c.outer, c.chunk);
    };
    if (fp32(c))
      go(static_cast<float *>(nullptr));
    else
      go(static_cast<act_t *>(nullptr));
  }

  // The staging buffer of the gathers and scatters along inner dimensions
  // (outer > 1) holds the whole gathered or scattered tensor.
  void check_staging(const Collective &c) const {
    if (c.outer == 1 || c.kind == Kind::AllReduceSum || c.kind == Kind::AllReduceMax)
      return;
    const size_t bytes = size_t(ranks(c.axis) * c.outer * c.chunk) * element_bytes(c);
    if (bytes > staging_bytes_)
      throw std::logic_error(std::string("collective ") + c.what + " needs " +
                             std::to_string(bytes) + " staging bytes, the program declared " +
                             std::to_string(staging_bytes_));
  }

#ifdef LLAMA_CUDA_EMULATE
  // runtime/comm on host memory. bf16 goes through fp32 (exact both ways;
  // sums are then rounded once, where NCCL rounds per ring step).
  static llamart::comm::Axis axis_of(const Collective &c) {
    return static_cast<llamart::comm::Axis>(c.axis);
  }
  static std::vector<float> widen(const void *p, int64_t n, const Collective &c) {
    std::vector<float> v(static_cast<size_t>(n));
    if (fp32(c))
      std::memcpy(v.data(), p, size_t(n) * 4);
    else
      for (int64_t i = 0; i < n; ++i)
        v[size_t(i)] = ld(static_cast<const act_t *>(p), i);
    return v;
  }
  static void narrow(const std::vector<float> &v, void *p, const Collective &c) {
    if (fp32(c))
      std::memcpy(p, v.data(), v.size() * 4);
    else
      for (size_t i = 0; i < v.size(); ++i)
        st(static_cast<act_t *>(p), int64_t(i), v[i]);
  }
  void all_reduce(const Collective &c, const void *in, void *out, int64_t n, bool max) {
    std::vector<float> v = widen(in, n, c);
    llamart::comm::all_reduce(v.data(), n,
                              max ? llamart::comm::ReduceOp::Max : llamart::comm::ReduceOp::Sum,
                              axis_of(c), c.what);
    narrow(v, out, c);
  }
  void all_gather(const Collective &c, const void *in, void *out, int64_t n) {
    const std::vector<float> v = widen(in, n, c);
    std::vector<float> all(static_cast<size_t>(n * ranks(c.axis)));
    llamart::comm::all_gather(v.data(), all.data(), 1, n, axis_of(c), c.what);
    narrow(all, out, c);
  }
  void reduce_scatter(const Collective &c, const void *in, void *out, int64_t n) {
    const std::vector<float> v = widen(in, n * ranks(c.axis), c);
    std::vector<float> mine(static_cast<size_t>(n));
    llamart::comm::reduce_scatter(v.data(), mine.data(), 1, n, axis_of(c), c.what);
    narrow(mine, out, c);
  }
  // Per lane, the collectives started and not yet run (late mode).
  std::deque<Collective> pending_[2];
  std::map<int, int> lane_; // started and not yet waited for: index -> lane
  const bool early_ = emulate_early();
  static bool emulate_early() {
    const char *mode = std::getenv("LLAMA_EMULATE_COLLECTIVES");
    if (!mode || !*mode || std::strcmp(mode, "late") == 0)
      return false;
    if (std::strcmp(mode, "early") == 0)
      return true;
    throw std::runtime_error(std::string("LLAMA_EMULATE_COLLECTIVES=") + mode +
                             ": expected 'early' or 'late'");
  }
#else
  ncclComm_t comm(const Collective &c) const { return comms_[c.axis < 0 ? 2 : c.axis]; }
  static ncclDataType_t dtype(const Collective &c) {
    return fp32(c) ? ncclFloat32 : ncclBfloat16;
  }
  void check(ncclResult_t r, const char *call) {
    if (r != ncclSuccess && r != ncclInProgress)
      llamart::comm::abort_job(std::string(call) + " failed: " + ncclGetErrorString(r));
  }
  void all_reduce(const Collective &c, const void *in, void *out, int64_t n, bool max) {
    check(ncclAllReduce(in, out, size_t(n), dtype(c), max ? ncclMax : ncclSum, comm(c),
                        stream_),
          c.what);
  }
  void all_gather(const Collective &c, const void *in, void *out, int64_t n) {
    check(ncclAllGather(in, out, size_t(n), dtype(c), comm(c), stream_), c.what);
  }
  void reduce_scatter(const Collective &c, const void *in, void *out, int64_t n) {
    check(ncclReduceScatter(in, out, size_t(n), dtype(c), ncclSum, comm(c), stream_), c.what);
  }
  static void event(std::map<int, cudaEvent_t> &events, int index) {
    if (events.count(index))
      return;
    cudaEvent_t e;
    LLAMART_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    events[index] = e;
  }
  [[noreturn]] void fail(const std::string &why) {
    std::string msg = "collective timeout: " + why + "; ";
    auto name = [&](int index) {
      auto it = names_.find(index);
      return "#" + std::to_string(index) + " (" +
             (it == names_.end() ? std::string("?") : it->second) + ")";
    };
    const int last = progress_[0]; // index + 1 of the last completed collective
    msg += last > 0 ? "the last collective to complete was " + name(last - 1) +
                          ", the next " + name(last)
                    : std::string("no collective completed; the first is ") + name(0);
    if (const int bucket = progress_[1]) // the ZeRO-1 buckets' stream
      msg += "; the last ZeRO-1 bucket collective to complete was " + name(bucket - 1);
    for (ncclComm_t c : comms_)
      if (c)
        ncclCommAbort(c);
    comms_[0] = comms_[1] = comms_[2] = nullptr;
    llamart::comm::abort_job(msg);
  }
  ncclComm_t comms_[3] = {nullptr, nullptr, nullptr}; // dp, tp, world
  cudaStream_t streams_[2] = {nullptr, nullptr};       // per lane
  cudaStream_t stream_ = nullptr;                      // the lane of the running start
  std::map<int, cudaEvent_t> ready_, done_; // per collective index
  volatile int *progress_ = nullptr;
  int *progress_dev_ = nullptr;
#endif

#ifdef LLAMA_CUDA_EMULATE
  cudaStream_t stream_ = nullptr;
#endif
  int ranks_[2] = {1, 1};
  int world_ = 1;
  void *staging_ = nullptr;
  size_t staging_bytes_ = 0;
  std::map<int, std::string> names_;
};

// The communicator of the running session (set by CudaSession when the
// program is partitioned; the host step functions reach it through these).
inline Communicator *active = nullptr;

inline Communicator &get(const char *what) {
  if (!active)
    throw std::logic_error(std::string("collective ") + what +
                           " outside a partitioned device session");
  return *active;
}
inline void start(int index, Kind kind, const void *in, void *out, int64_t outer,
                  int64_t chunk, char type, int axis, const char *what,
                  cudaStream_t stream) {
  get(what).start({index, kind, in, out, outer, chunk, type, axis, what}, stream);
}
inline void wait(int index, cudaStream_t stream) { get("wait").wait(index, stream); }
// This rank's index on a grid axis (vocabulary-parallel offsets).
inline int rank(int axis) {
  return llamart::comm::rank(static_cast<llamart::comm::Axis>(axis));
}
#endif // LLAMA_PARTITIONED_SOURCE

} // namespace llama_coll
