// The device generator's interface to the source llama-compile generates
// for a program with @prefill and @decode: their host functions (launching
// the kernels and GEMMs of one step on a stream) and the shapes, handed over
// as a GenerateProgram; the generator itself (runtime/cuda/generator.cu) is
// compiled once into the runtime libraries, for both storage types.
#pragma once

#include "runtime/program/device_session.h"
#include "runtime/program/program.h"

#include <cstddef>
#include <cstdint>

#ifdef LLAMA_CUDA_EMULATE
#include "runtime/cuda/emulate.h"
#else
#include <cuda_runtime.h>
#endif

namespace llamart::cuda {

class LtGemm;

// T: the program's storage type (float or __nv_bfloat16).
template <typename T> struct GenerateProgram {
  using Step = void (*)(const T *P, const int32_t *tokens, const int32_t *position, T *KV,
                        void *arena, void *workspace, float *logits, LtGemm *gemm,
                        cudaStream_t stream);
  Step prefill = nullptr, decode = nullptr;
  size_t prefill_arena_bytes = 0, decode_arena_bytes = 0, workspace_bytes = 0;
  int64_t kv_cache_elements = 0; // every layer's keys and values
  int64_t rows = 0, chunk = 0, vocab = 0; // gen_batch, prefill chunk, logits width
};

// Opens the device (throws std::runtime_error naming the reason when there
// is none) and allocates the weights, the KV cache and the steps' buffers.
template <typename T>
DeviceGenerator *open_generator(const ProgramInfo &program, const GenerateProgram<T> &g);

} // namespace llamart::cuda
