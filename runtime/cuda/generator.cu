// Generation on the device (runtime/program/device_session.h: DeviceGenerator;
// the interface the generated source calls is runtime/cuda/generator.h, with
// its prefill and decode host functions, llama_cuda_prefill and
// llama_cuda_decode). Compiled once for each storage type into
// libllamart_cuda by nvcc, and as C++ with -DLLAMA_CUDA_EMULATE into
// libllamart_cuda_emu (generator_emulated.cpp), plain host memory standing
// in for device memory.
//
// Device memory, allocated once when the generator opens (layout.h, which
// `llama-compile --report` prints from): the weights in the
// storage type (act_t), the KV cache (every layer's keys and values,
// zero-filled as on the CPU), one arena for the larger of the two plans, the
// kernels' workspace, a chunk of tokens, the position word and the fp32
// logits of a chunk. A step copies its tokens and position to the device and
// runs the prefill or decode function on one stream; from its second call on
// each is replayed as a CUDA Graph (the kernels read the position from
// device memory, so one graph serves every position: a decode step costs
// one graph launch, not a launch per kernel). The driver reads back one row
// of logits per step and samples on the host.
#include "runtime/cuda/generator.h"

#include "runtime/cuda/kernels/common.cuh"
#include "runtime/cuda/bytes_text.h"
#include "runtime/cuda/layout.h"
#include "runtime/program/device_session.h"
#include "runtime/program/program.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef LLAMA_CUDA_EMULATE
#include "runtime/cuda/check.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/graph_replay.h"
#include "runtime/cuda/lt_gemm.h"
#endif

namespace llamart::cuda {

template <typename act_t> class CudaGenerator final : public DeviceGenerator {
public:
  CudaGenerator(const ProgramInfo &program, const GenerateProgram<act_t> &g)
      : program_(program), g_(g) {
    if (g.rows != program.gen_batch || g.chunk != program.prefill_chunk ||
        g.vocab != program.vocab_size)
      throw std::logic_error("the device generator's shapes differ from the program's");
#ifdef LLAMA_CUDA_EMULATE
    device_ = "CUDA emulated on the CPU (LLAMA_CUDA_EMULATE)";
#else
    device_ = open_device();
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    gemm_ = new LtGemm();
#endif
    // The sizes --report prints (layout.h).
    const GeneratorLayout l = generator_layout(
        program.param_numel, int(sizeof(act_t)), g.kv_cache_elements,
        int64_t(g.prefill_arena_bytes), int64_t(g.decode_arena_bytes), int64_t(g.workspace_bytes),
        g.rows, g.chunk, g.vocab);
    allocate(&weights_, l.weights);
    allocate(&kv_, l.kv_cache);
    allocate(&arena_, l.arena);
    allocate(&workspace_, l.workspace);
    allocate(&tokens_, l.tokens);
    allocate(&position_, l.position);
    allocate(&logits_, l.logits);
    check(cudaMemset(kv_, 0, size_t(l.kv_cache)));
  }

  ~CudaGenerator() override {
#ifndef LLAMA_CUDA_EMULATE
    delete gemm_;
    if (stream_)
      cudaStreamDestroy(stream_);
#endif
    for (void *p : allocations_)
      cudaFree(p);
  }

  std::string describe() const override {
    return "device: " + device_ + " | " +
           (sizeof(act_t) == 2 ? "bf16 weights and KV cache" : "fp32 weights and KV cache") +
           " | device memory held: weights " +
           bytes_text(program_.param_numel * int64_t(sizeof(act_t))) + ", KV cache " +
           bytes_text(g_.kv_cache_elements * int64_t(sizeof(act_t))) + ", all " +
           bytes_text(held_) + " (" + std::to_string(held_) + " bytes)";
  }

  void upload(const float *params) override {
    // The storage type's value of each weight, rounded on the host (round
    // to nearest even for bf16, as the training session's copy).
    std::vector<act_t> w(size_t(program_.param_numel));
    for (size_t i = 0; i < w.size(); ++i)
      w[i] = to_storage(params[i]);
    check(cudaMemcpy(weights_, w.data(), w.size() * sizeof(act_t), cudaMemcpyHostToDevice));
  }

  void prefill(const int32_t *tokens, int64_t pos) override {
    step(0, tokens, g_.chunk, pos);
  }
  void decode(const int32_t *tokens, int64_t pos) override { step(1, tokens, 1, pos); }

  void logits(int64_t t, float *out) override {
    if (t < 0 || t >= last_chunk_)
      throw std::out_of_range("the last step has no logits at chunk index " +
                              std::to_string(t));
    check(cudaMemcpyAsync(out, logits_ + t * g_.vocab, size_t(g_.vocab) * sizeof(float),
                          cudaMemcpyDeviceToHost, stream_));
    check(cudaStreamSynchronize(stream_));
  }

private:
  static act_t to_storage(float x) {
    act_t out;
    round_to(x, out);
    return out;
  }
  static void round_to(float x, float &out) { out = x; }
  static void round_to(float x, __nv_bfloat16 &out) { out = __float2bfloat16(x); }

  static void check(cudaError_t status) {
#ifdef LLAMA_CUDA_EMULATE
    (void)status;
#else
    LLAMART_CUDA_CHECK(status);
#endif
  }

  template <typename T> void allocate(T **ptr, int64_t bytes) {
    void *p = nullptr;
    check(cudaMalloc(&p, size_t(bytes)));
    allocations_.push_back(p);
    *ptr = static_cast<T *>(p);
    held_ += int64_t(bytes);
  }

  // Kind 0 prefill, 1 decode: `chunk` tokens per sequence from cache row pos.
  void step(int kind, const int32_t *tokens, int64_t chunk, int64_t pos) {
    if (pos < 0 || pos + chunk > program_.kv_capacity)
      throw std::out_of_range("generation: positions " + std::to_string(pos) + ".." +
                              std::to_string(pos + chunk - 1) +
                              " exceed the KV cache capacity " +
                              std::to_string(program_.kv_capacity));
    const int32_t position = int32_t(pos);
    check(cudaMemcpyAsync(tokens_, tokens, size_t(g_.rows * chunk) * sizeof(int32_t),
                          cudaMemcpyHostToDevice, stream_));
    check(cudaMemcpyAsync(position_, &position, sizeof position, cudaMemcpyHostToDevice,
                          stream_));
    const typename GenerateProgram<act_t>::Step fn = kind == 0 ? g_.prefill : g_.decode;
    auto body = [&] {
      fn(weights_, tokens_, position_, kv_, arena_, workspace_, logits_, gemm_, stream_);
    };
#ifdef LLAMA_CUDA_EMULATE
    body();
#else
    graphs_[kind].run(stream_, body);
#endif
    // The host's position word must outlive the copy: wait here (the
    // driver reads the logits right after anyway).
    check(cudaStreamSynchronize(stream_));
    last_chunk_ = chunk;
  }

  const ProgramInfo &program_;
  const GenerateProgram<act_t> g_;
  std::string device_;
  cudaStream_t stream_ = nullptr;
  LtGemm *gemm_ = nullptr; // owned (an incomplete type under emulation)
  std::vector<void *> allocations_;
  int64_t held_ = 0, last_chunk_ = 0;
  act_t *weights_ = nullptr, *kv_ = nullptr;
  void *arena_ = nullptr, *workspace_ = nullptr;
  int32_t *tokens_ = nullptr, *position_ = nullptr;
  float *logits_ = nullptr;
#ifndef LLAMA_CUDA_EMULATE
  GraphReplay graphs_[2]; // prefill, decode
#endif
};

template <typename T>
DeviceGenerator *open_generator(const ProgramInfo &program, const GenerateProgram<T> &g) {
  return new CudaGenerator<T>(program, g);
}
template DeviceGenerator *open_generator<float>(const ProgramInfo &,
                                                const GenerateProgram<float> &);
template DeviceGenerator *open_generator<__nv_bfloat16>(const ProgramInfo &,
                                                        const GenerateProgram<__nv_bfloat16> &);

} // namespace llamart::cuda
