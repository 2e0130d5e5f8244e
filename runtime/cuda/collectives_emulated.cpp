// The collectives under the emulator (LLAMA_CUDA_EMULATE; the interface and
// the design are runtime/cuda/collectives.h): runtime/comm's MPI
// collectives on host memory, each run at one of the two ends of the window
// in which a GPU could run it (LLAMA_EMULATE_COLLECTIVES):
//   late (the default): start(k) only queues the collective on its lane; it
//     runs when wait(k) or a later wait on the same lane is reached (lanes
//     are independent streams on a GPU), so a misplaced wait (a kernel
//     overwriting a collective's input before it ran, or reading its output
//     too early) gives wrong numbers;
//   early: it runs at start(k), so a start placed before its input is
//     complete (a gradient bucket marked ready while the backward still
//     writes it) gives wrong numbers.
// The tests run both, instead of a race that shows only on some GPU runs.
// bf16 goes through fp32 (exact both ways; sums are then rounded once,
// where NCCL rounds per ring step).
#include "runtime/cuda/collectives_base.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <vector>

namespace llama_coll {
namespace {

class EmulatedCommunicator final : public detail::StagedCommunicator {
public:
  using StagedCommunicator::StagedCommunicator;

  void start(const Collective &c, cudaStream_t) override {
    names_[c.index] = c.what;
    if (c.lane < 0 || c.lane > 1)
      throw std::logic_error("collective " + std::string(c.what) + ": no lane " +
                             std::to_string(c.lane));
    check_staging(c);
    lane_[c.index] = c.lane;
    if (early_)
      run(c, nullptr);
    else
      pending_[c.lane].push_back(c);
  }

  void wait(int index, cudaStream_t) override {
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
      run(c, nullptr);
      if (c.index == index)
        return;
    }
  }

  void synchronize(cudaStream_t) override {
    for (const std::deque<Collective> &queue : pending_)
      if (!queue.empty())
        throw std::logic_error("a step ended with collective #" +
                               std::to_string(queue.front().index) + " (" +
                               queue.front().what + ") never waited for");
  }

private:
  static llamart::comm::Axis axis_of(const Collective &c) {
    return static_cast<llamart::comm::Axis>(c.axis);
  }
  static std::vector<float> widen(const void *p, int64_t n, const Collective &c) {
    std::vector<float> v(static_cast<size_t>(n));
    if (c.element_bytes == 4)
      std::memcpy(v.data(), p, size_t(n) * 4);
    else
      for (int64_t i = 0; i < n; ++i)
        v[size_t(i)] = ld(static_cast<const __nv_bfloat16 *>(p), i);
    return v;
  }
  static void narrow(const std::vector<float> &v, void *p, const Collective &c) {
    if (c.element_bytes == 4)
      std::memcpy(p, v.data(), v.size() * 4);
    else
      for (size_t i = 0; i < v.size(); ++i)
        st(static_cast<__nv_bfloat16 *>(p), int64_t(i), v[i]);
  }
  void all_reduce(const Collective &c, const void *in, void *out, int64_t n, bool max,
                  cudaStream_t) override {
    std::vector<float> v = widen(in, n, c);
    llamart::comm::all_reduce(v.data(), n,
                              max ? llamart::comm::ReduceOp::Max : llamart::comm::ReduceOp::Sum,
                              axis_of(c), c.what);
    narrow(v, out, c);
  }
  void all_gather(const Collective &c, const void *in, void *out, int64_t n,
                  cudaStream_t) override {
    const std::vector<float> v = widen(in, n, c);
    std::vector<float> all(static_cast<size_t>(n * ranks(c.axis)));
    llamart::comm::all_gather(v.data(), all.data(), 1, n, axis_of(c), c.what);
    narrow(all, out, c);
  }
  void reduce_scatter(const Collective &c, const void *in, void *out, int64_t n,
                      cudaStream_t) override {
    const std::vector<float> v = widen(in, n * ranks(c.axis), c);
    std::vector<float> mine(static_cast<size_t>(n));
    llamart::comm::reduce_scatter(v.data(), mine.data(), 1, n, axis_of(c), c.what);
    narrow(mine, out, c);
  }
  static bool emulate_early() {
    const char *mode = std::getenv("LLAMA_EMULATE_COLLECTIVES");
    if (!mode || !*mode || std::strcmp(mode, "late") == 0)
      return false;
    if (std::strcmp(mode, "early") == 0)
      return true;
    throw std::runtime_error(std::string("LLAMA_EMULATE_COLLECTIVES=") + mode +
                             ": expected 'early' or 'late'");
  }

  // Per lane, the collectives started and not yet run (late mode).
  std::deque<Collective> pending_[2];
  std::map<int, int> lane_; // started and not yet waited for: index -> lane
  const bool early_ = emulate_early();
};

} // namespace

std::unique_ptr<Communicator> make_communicator(size_t staging_bytes) {
  return std::make_unique<EmulatedCommunicator>(staging_bytes);
}

} // namespace llama_coll
