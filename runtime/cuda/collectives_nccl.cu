// The collectives on GPUs: NCCL (runtime/cuda/collectives.h has the whole
// design). Bootstrapped over MPI (runtime/comm: world rank 0 makes the
// ncclUniqueId and broadcasts it), one world communicator split into one per
// grid axis with ncclCommSplit (tp groups: consecutive ranks; dp groups:
// ranks with the same tp index, as comm.h lays the grid out). Collectives
// run on communication streams (lanes) of their own: start(k) records an
// event on the compute stream, the lane's stream waits for it, runs the
// collective and records done[k]; wait(k) makes the compute stream wait for
// done[k]. Events are stream-ordered, so the whole step still captures into
// one CUDA Graph (the lanes fork from and join the compute stream inside the
// capture).
//
// A collective that does not complete (a peer died or took another path)
// must not hang the job: synchronize waits for the compute stream with a
// deadline (comm::timeout_s()), polling NCCL's asynchronous errors; each
// collective is followed on its lane by a one-thread kernel that writes its
// index to pinned host memory, so on expiry the message names the last
// collective that completed and the first that did not, and the job ends
// (ncclCommAbort, comm::abort_job).
#include "runtime/cuda/check.h"
#include "runtime/cuda/collectives_base.h"

#include <nccl.h>

#include <chrono>
#include <thread>

namespace llama_coll {
namespace {

__global__ void mark_done(volatile int *progress, int index) { *progress = index; }

class NcclCommunicator final : public detail::StagedCommunicator {
public:
  explicit NcclCommunicator(size_t staging_bytes) : StagedCommunicator(staging_bytes) {
    using llamart::comm::Axis;
    ncclUniqueId id;
    if (llamart::comm::rank() == 0)
      check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    llamart::comm::broadcast(&id, sizeof id, 0, Axis::World, "NCCL unique id");
    check(ncclCommInitRank(&comms_[2], ranks(-1), id, llamart::comm::rank()),
          "ncclCommInitRank");
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
  }

  ~NcclCommunicator() override {
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
  }

  void start(const Collective &c, cudaStream_t stream) override {
    names_[c.index] = c.what;
    if (c.lane < 0 || c.lane > 1)
      throw std::logic_error("collective " + std::string(c.what) + ": no lane " +
                             std::to_string(c.lane));
    check_staging(c);
    event(ready_, c.index);
    event(done_, c.index);
    cudaStream_t lane = streams_[c.lane];
    LLAMART_CUDA_CHECK(cudaEventRecord(ready_.at(c.index), stream));
    LLAMART_CUDA_CHECK(cudaStreamWaitEvent(lane, ready_.at(c.index), 0));
    run(c, lane);
    mark_done<<<1, 1, 0, lane>>>(progress_dev_ + c.lane, c.index + 1);
    LLAMART_CUDA_CHECK(cudaEventRecord(done_.at(c.index), lane));
  }

  void wait(int index, cudaStream_t stream) override {
    LLAMART_CUDA_CHECK(cudaStreamWaitEvent(stream, done_.at(index), 0));
  }

  void synchronize(cudaStream_t stream) override {
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
  }

private:
  ncclComm_t comm(const Collective &c) const { return comms_[c.axis < 0 ? 2 : c.axis]; }
  static ncclDataType_t dtype(const Collective &c) {
    return c.element_bytes == 4 ? ncclFloat32 : ncclBfloat16;
  }
  void check(ncclResult_t r, const char *call) {
    if (r != ncclSuccess && r != ncclInProgress)
      llamart::comm::abort_job(std::string(call) + " failed: " + ncclGetErrorString(r));
  }
  void all_reduce(const Collective &c, const void *in, void *out, int64_t n, bool max,
                  cudaStream_t stream) override {
    check(ncclAllReduce(in, out, size_t(n), dtype(c), max ? ncclMax : ncclSum, comm(c), stream),
          c.what);
  }
  void all_gather(const Collective &c, const void *in, void *out, int64_t n,
                  cudaStream_t stream) override {
    check(ncclAllGather(in, out, size_t(n), dtype(c), comm(c), stream), c.what);
  }
  void reduce_scatter(const Collective &c, const void *in, void *out, int64_t n,
                      cudaStream_t stream) override {
    check(ncclReduceScatter(in, out, size_t(n), dtype(c), ncclSum, comm(c), stream), c.what);
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
  std::map<int, cudaEvent_t> ready_, done_;            // per collective index
  volatile int *progress_ = nullptr;
  int *progress_dev_ = nullptr;
};

} // namespace

std::unique_ptr<Communicator> make_communicator(size_t staging_bytes) {
  return std::make_unique<NcclCommunicator>(staging_bytes);
}

} // namespace llama_coll
