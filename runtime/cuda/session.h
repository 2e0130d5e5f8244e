// The CUDA training session's interface to the source llama-compile
// generates: the generated train step and evaluation (host functions that
// launch the program's kernels and GEMMs on a stream), handed over as a
// StepProgram; the session itself (runtime/cuda/session.cu) is compiled once
// into the runtime libraries, for both storage types: libllamart_cuda on the
// GPU, libllamart_cuda_emu under the emulator (--cuda-emulate).
#pragma once

#include "runtime/cuda/collectives.h"
#include "runtime/program/device_session.h"
#include "runtime/program/program.h"

#include <cstddef>
#include <cstdint>
#include <memory>

namespace llamart::cuda {

class LtGemm;

// What the generated source hands the session. T is the program's storage
// type (float or __nv_bfloat16).
template <typename T> struct StepProgram {
  void (*train_step)(const T *P, float *G, const int32_t *tokens, const int32_t *targets,
                     void *arena, void *workspace, float *loss, LtGemm *gemm,
                     cudaStream_t stream) = nullptr;
  void (*eval_loss)(const T *P, const int32_t *tokens, const int32_t *targets, void *arena,
                    void *workspace, float *loss, LtGemm *gemm, cudaStream_t stream) = nullptr;
  size_t train_arena_bytes = 0, eval_arena_bytes = 0, workspace_bytes = 0;
  int64_t gemm_count = 0;   // GEMMs per train step
  int64_t gemm_max_dim = 0; // the largest M, N or K among them (ABFT scratch)
  // Partitioned programs (collectives.h): the staging of the collectives
  // along inner dimensions, and the implementation's factory (NCCL, or the
  // emulation), null for single-device programs, which link neither.
  bool partitioned = false;
  size_t collective_staging_bytes = 0;
  std::unique_ptr<llama_coll::Communicator> (*make_communicator)(size_t staging_bytes) = nullptr;
};

// Opens the device (throws std::runtime_error naming the reason when there
// is none) and allocates the whole training state there.
template <typename T>
DeviceSession *open_session(const ProgramInfo &program, const StepProgram<T> &step);

} // namespace llamart::cuda
