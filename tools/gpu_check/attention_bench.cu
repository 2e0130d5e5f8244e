// The tensor-core attention forward and backward
// (runtime/cuda/kernels/flash_attention.cuh; the forward training binaries use
// at head dims 64 and 128 is flash_attention_sm90.cuh's, on TMA and wgmma,
// as are the backward's dQ and dK/dV kernels there; the mma.sync ones stay
// callable beside them) as C entry points for gpu-check's attention sweep (children.py:
// child_attention_sweep), which calls it through ctypes on torch's tensors
// and stream: nvcc-built on the device; built as C++ against the emulator
// (copied to .cpp, -DLLAMA_CUDA_EMULATE) for the emulated run.
#include "runtime/cuda/kernels/flash_attention.cuh"
#include "runtime/cuda/kernels/flash_attention_sm90.cuh"

namespace {

/// The forward at `head_dim` (64 or 128; else -1) on wgmma or on mma.sync.
template <bool Wgmma>
int flash_forward(int head_dim, const void *q, const void *k, const void *v, void *o,
                  float *lse, long batch, long seq, long heads, long kv_heads, float scale,
                  void *stream) {
  using bf16 = __nv_bfloat16;
  auto args = [&](auto launch) {
    launch(static_cast<const bf16 *>(q), static_cast<const bf16 *>(k),
           static_cast<const bf16 *>(v), static_cast<bf16 *>(o), lse, int64_t(batch),
           int64_t(seq), int64_t(heads), int64_t(kv_heads), scale,
           static_cast<cudaStream_t>(stream));
  };
  switch (head_dim) {
  case 64:
    if constexpr (Wgmma)
      args([](auto... a) { llk::flash_attention_forward_sm90<64>(a...); });
    else
      args([](auto... a) { llk::flash_attention_forward<64>(a...); });
    return 0;
  case 128:
    if constexpr (Wgmma)
      args([](auto... a) { llk::flash_attention_forward_sm90<128>(a...); });
    else
      args([](auto... a) { llk::flash_attention_forward<128>(a...); });
    return 0;
  default:
    return -1;
  }
}

} // namespace

/// q [batch, seq, heads, head_dim], k and v [batch, seq, kv_heads, head_dim]
/// (bf16, contiguous), o like q, lse [batch, heads, seq] fp32: the forward the
/// training binaries run (wgmma). Returns 0, or -1 for a head dim without an
/// instantiation here; a launch error shows as the library's last error
/// (gpu_check_last_error, device builds).
extern "C" int gpu_check_flash_forward(int head_dim, const void *q, const void *k,
                                       const void *v, void *o, float *lse, long batch,
                                       long seq, long heads, long kv_heads, float scale,
                                       void *stream) {
  return flash_forward<true>(head_dim, q, k, v, o, lse, batch, seq, heads, kv_heads, scale,
                             stream);
}

/// The same through the FlashAttention-2 forward on mma.sync (what head dims
/// other than 64 and 128 use), for the comparison on the device.
extern "C" int gpu_check_flash_forward_mma(int head_dim, const void *q, const void *k,
                                           const void *v, void *o, float *lse, long batch,
                                           long seq, long heads, long kv_heads, float scale,
                                           void *stream) {
  return flash_forward<false>(head_dim, q, k, v, o, lse, batch, seq, heads, kv_heads, scale,
                              stream);
}

namespace {

/// The backward at `head_dim` (64 or 128; else -1), its dQ and dK/dV on
/// wgmma or on mma.sync.
template <bool Wgmma>
int flash_backward(int head_dim, const void *dout, const void *q, const void *k,
                   const void *v, const void *o, const float *lse, void *dq, void *dk,
                   void *dv, long batch, long seq, long heads, long kv_heads, float scale,
                   void *workspace, void *stream) {
  using bf16 = __nv_bfloat16;
  auto args = [&](auto launch) {
    launch(static_cast<const bf16 *>(dout), static_cast<const bf16 *>(q),
           static_cast<const bf16 *>(k), static_cast<const bf16 *>(v),
           static_cast<const bf16 *>(o), lse, static_cast<bf16 *>(dq), static_cast<bf16 *>(dk),
           static_cast<bf16 *>(dv), int64_t(batch), int64_t(seq), int64_t(heads),
           int64_t(kv_heads), scale, workspace, static_cast<cudaStream_t>(stream));
  };
  switch (head_dim) {
  case 64:
    if constexpr (Wgmma)
      args([](auto... a) { llk::flash_attention_backward_sm90<64>(a...); });
    else
      args([](auto... a) { llk::flash_attention_backward<64>(a...); });
    return 0;
  case 128:
    if constexpr (Wgmma)
      args([](auto... a) { llk::flash_attention_backward_sm90<128>(a...); });
    else
      args([](auto... a) { llk::flash_attention_backward<128>(a...); });
    return 0;
  default:
    return -1;
  }
}

} // namespace

/// The backward the training binaries run: dout, o like q; lse from the
/// forward; dq like q, dk and dv like k; `workspace` of batch * heads * seq
/// floats (D). Returns 0 or -1.
extern "C" int gpu_check_flash_backward(int head_dim, const void *dout, const void *q,
                                        const void *k, const void *v, const void *o,
                                        const float *lse, void *dq, void *dk, void *dv,
                                        long batch, long seq, long heads, long kv_heads,
                                        float scale, void *workspace, void *stream) {
  return flash_backward<true>(head_dim, dout, q, k, v, o, lse, dq, dk, dv, batch, seq, heads,
                              kv_heads, scale, workspace, stream);
}

/// The same on mma.sync (flash_attention.cuh's, what head dims other than 64
/// and 128 use).
extern "C" int gpu_check_flash_backward_mma(int head_dim, const void *dout, const void *q,
                                            const void *k, const void *v, const void *o,
                                            const float *lse, void *dq, void *dk, void *dv,
                                            long batch, long seq, long heads, long kv_heads,
                                            float scale, void *workspace, void *stream) {
  return flash_backward<false>(head_dim, dout, q, k, v, o, lse, dq, dk, dv, batch, seq, heads,
                               kv_heads, scale, workspace, stream);
}
