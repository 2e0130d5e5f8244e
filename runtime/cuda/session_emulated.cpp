// The CUDA training session compiled as C++ against the emulator
// (LLAMA_CUDA_EMULATE, runtime/cuda/emulate.h) for libllamart_cuda_emu: the
// same source as the GPU's.
#include "runtime/cuda/session.cu"
