// What the two collective implementations (collectives_nccl.cu,
// collectives_emulated.cpp) share: the dispatch of a collective onto
// all-reduce / all-gather / reduce-scatter primitives, and the staging of
// gathers and scatters along inner dimensions. NCCL's all-gathers and
// reduce-scatters are rank-major over a flat buffer; the program gathers
// along any dimension ([outer, chunk] blocks per rank, comm.h's layout), so
// outer > 1 goes through a staging buffer and a permute kernel on the
// collective's stream.
#pragma once

#include "runtime/cuda/collectives.h"
#include "runtime/cuda/kernels/common.cuh"

#include <map>
#include <string>

namespace llama_coll::detail {

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

class StagedCommunicator : public Communicator {
public:
  explicit StagedCommunicator(size_t staging_bytes) {
    using llamart::comm::Axis;
    ranks_[0] = llamart::comm::size(Axis::DP);
    ranks_[1] = llamart::comm::size(Axis::TP);
    world_ = llamart::comm::size(Axis::World);
    if (staging_bytes > 0 && cudaMalloc(&staging_, staging_bytes) != cudaSuccess)
      throw std::runtime_error("cannot allocate " + std::to_string(staging_bytes) +
                               " bytes of collective staging on the device");
    staging_bytes_ = staging_bytes;
  }
  ~StagedCommunicator() override { cudaFree(staging_); }

  int ranks(int axis) const { return axis < 0 ? world_ : ranks_[axis]; }

protected:
  // The primitives, on `stream`: flat buffers of n elements per rank.
  virtual void all_reduce(const Collective &c, const void *in, void *out, int64_t n, bool max,
                          cudaStream_t stream) = 0;
  virtual void all_gather(const Collective &c, const void *in, void *out, int64_t n,
                          cudaStream_t stream) = 0;
  virtual void reduce_scatter(const Collective &c, const void *in, void *out, int64_t n,
                              cudaStream_t stream) = 0;

  // Collective c on `stream`, staged where it gathers or scatters along an
  // inner dimension.
  void run(const Collective &c, cudaStream_t stream) {
    const int64_t n = c.outer * c.chunk, ranks = this->ranks(c.axis);
    switch (c.kind) {
    case Kind::AllReduceSum:
    case Kind::AllReduceMax:
      all_reduce(c, c.in, c.out, n, c.kind == Kind::AllReduceMax, stream);
      return;
    case Kind::AllGather:
      if (c.outer == 1) {
        all_gather(c, c.in, c.out, n, stream);
      } else {
        all_gather(c, c.in, staging_, n, stream);
        permute(c, /*gather=*/true, ranks, stream);
      }
      return;
    case Kind::ReduceScatter:
      if (c.outer == 1) {
        reduce_scatter(c, c.in, c.out, n, stream);
      } else {
        permute(c, /*gather=*/false, ranks, stream);
        reduce_scatter(c, staging_, c.out, n, stream);
      }
      return;
    }
  }

  // The staging buffer of the gathers and scatters along inner dimensions
  // (outer > 1) holds the whole gathered or scattered tensor.
  void check_staging(const Collective &c) const {
    if (c.element_bytes != 2 && c.element_bytes != 4)
      throw std::logic_error(std::string("collective ") + c.what + ": elements of " +
                             std::to_string(c.element_bytes) + " bytes");
    if (c.outer == 1 || c.kind == Kind::AllReduceSum || c.kind == Kind::AllReduceMax)
      return;
    const size_t bytes = size_t(ranks(c.axis) * c.outer * c.chunk) * size_t(c.element_bytes);
    if (bytes > staging_bytes_)
      throw std::logic_error(std::string("collective ") + c.what + " needs " +
                             std::to_string(bytes) + " staging bytes, the program declared " +
                             std::to_string(staging_bytes_));
  }

  std::map<int, std::string> names_; // what each collective index is

private:
  void permute(const Collective &c, bool gather, int64_t ranks, cudaStream_t stream) {
    check_staging(c);
    const int64_t total = ranks * c.outer * c.chunk;
    const dim3 grid(unsigned((total + 255) / 256)), block(256);
    auto go = [&](auto *typed) {
      using T = std::remove_pointer_t<decltype(typed)>;
      if (gather) {
        auto *kernel = &gathered_to_blocks<T>;
        LLAMA_LAUNCH(kernel, grid, block, stream, static_cast<const T *>(staging_),
                     static_cast<T *>(c.out), ranks, c.outer, c.chunk);
      } else {
        auto *kernel = &blocks_to_ranks<T>;
        LLAMA_LAUNCH(kernel, grid, block, stream, static_cast<const T *>(c.in),
                     static_cast<T *>(staging_), ranks, c.outer, c.chunk);
      }
    };
    if (c.element_bytes == 4)
      go(static_cast<float *>(nullptr));
    else
      go(static_cast<__nv_bfloat16 *>(nullptr));
  }

  int ranks_[2] = {1, 1};
  int world_ = 1;
  void *staging_ = nullptr;
  size_t staging_bytes_ = 0;
};

} // namespace llama_coll::detail
