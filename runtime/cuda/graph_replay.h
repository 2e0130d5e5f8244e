// One CUDA Graph per kind of step (device builds only): the first call of a
// kind runs eagerly (cuBLASLt plans its GEMM shapes outside a capture, and
// a bad launch reports at once with its name), the second is captured into
// a graph and every call from then on replays it. The training session
// (session.cu: per update variant) and the generator (generator.cu: prefill
// and decode) step this way.
#pragma once

#include "runtime/cuda/check.h"

#include <cuda_runtime.h>

#include <cstdint>

namespace llamart::cuda {

class GraphReplay {
public:
  GraphReplay() = default;
  GraphReplay(const GraphReplay &) = delete;
  GraphReplay &operator=(const GraphReplay &) = delete;
  ~GraphReplay() {
    if (exec_)
      cudaGraphExecDestroy(exec_);
  }

  /// Runs `body` (its launches on `stream`) as described above.
  template <typename F> void run(cudaStream_t stream, F &&body) {
    if (calls_++ == 0) {
      body();
      LLAMART_CUDA_CHECK_LAUNCH();
      return;
    }
    if (!exec_) {
      cudaGraph_t graph = nullptr;
      LLAMART_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      body();
      LLAMART_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
      LLAMART_CUDA_CHECK(cudaGraphInstantiate(&exec_, graph, 0));
      LLAMART_CUDA_CHECK(cudaGraphDestroy(graph));
    }
    LLAMART_CUDA_CHECK(cudaGraphLaunch(exec_, stream));
  }

private:
  cudaGraphExec_t exec_ = nullptr;
  int64_t calls_ = 0;
};

} // namespace llamart::cuda
