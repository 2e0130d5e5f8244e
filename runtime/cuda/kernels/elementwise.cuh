// Elementwise kernels over flat buffers: SwiGLU forward and backward, sums
// (the residual adds and the gradient sums llama-fuse makes from add chains)
// and fills.
//
//   swiglu     y = silu(g) * u = g * sigmoid(g) * u
//   swiglu'    dg = dy * u * sigmoid(g) * (1 + g * (1 - sigmoid(g)))
//              du = dy * silu(g)
//   sum        y = x0 + x1 + ... (left to right, as the add chain it replaces)
//
// Memory traffic per element: one read per input and one write per output,
// nothing else: these kernels are pure bandwidth. Each thread moves one
// 16-byte pack of every buffer (8 bf16 or 4 fp32 values; with mixed types the
// pack of the wider one), so a warp's request is 512 contiguous bytes. A
// buffer whose length is not a multiple of the pack ends in a tail of single
// elements, one per thread after the last pack. Buffers start 16-byte
// aligned (memory plan offsets are multiples of 64 bytes). Outputs may alias
// inputs (the plan puts sums in place): every thread loads all of its inputs
// before it stores.
#pragma once

#include "runtime/cuda/kernels/common.cuh"

namespace llk {

/// Elements per work item when moving types A and B together.
template <typename A, typename B>
constexpr int kPairPack = kPack<A> < kPack<B> ? kPack<A> : kPack<B>;

/// Work items for n elements in packs of P: the packs, then the tail.
template <int P> constexpr int64_t flat_items(int64_t n) { return n / P + n % P; }

/// Calls f(offset, count) for this thread's item: count == P for a pack,
/// 1 for a tail element; returns false past the end.
template <int P> struct FlatItem {
  int64_t offset;
  bool pack;
  __device__ __forceinline__ static bool at(int64_t n, FlatItem &it) {
    const int64_t i = int64_t(blockIdx.x) * kElementwiseThreads + threadIdx.x;
    const int64_t packs = n / P;
    if (i < packs) {
      it = {i * P, true};
      return true;
    }
    if (i < packs + n % P) {
      it = {packs * P + (i - packs), false};
      return true;
    }
    return false;
  }
};

/// Loads P elements at p (a pack) or one (a tail element, the rest zero).
template <int P, typename T>
__device__ __forceinline__ Floats<P> load_item(const T *p, bool pack) {
  if (pack)
    return load_floats<P>(p);
  Floats<P> f{};
  f.v[0] = to_float(*p);
  return f;
}
template <int P, typename T>
__device__ __forceinline__ void store_item(T *p, const Floats<P> &f, bool pack) {
  if (pack)
    store_floats<P>(p, f);
  else
    *p = from_float<T>(f.v[0]);
}

template <typename T>
__global__ void __launch_bounds__(kElementwiseThreads)
    swiglu_forward_kernel(const T *gate, const T *up, T *y, int64_t n) {
  constexpr int P = kPack<T>;
  FlatItem<P> it;
  if (!FlatItem<P>::at(n, it))
    return;
  const Floats<P> g = load_item<P>(gate + it.offset, it.pack);
  const Floats<P> u = load_item<P>(up + it.offset, it.pack);
  Floats<P> out;
#pragma unroll
  for (int e = 0; e < P; ++e)
  {
    const float sig = 1.0f / (1.0f + __expf(-g.v[e]));
    out.v[e] = g.v[e] * sig * u.v[e];
  }
  store_item<P>(y + it.offset, out, it.pack);
}

template <typename T>
__global__ void __launch_bounds__(kElementwiseThreads)
    swiglu_backward_kernel(const T *dy, const T *gate, const T *up, T *dgate, T *dup,
                           int64_t n) {
  constexpr int P = kPack<T>;
  FlatItem<P> it;
  if (!FlatItem<P>::at(n, it))
    return;
  const Floats<P> d = load_item<P>(dy + it.offset, it.pack);
  const Floats<P> g = load_item<P>(gate + it.offset, it.pack);
  const Floats<P> u = load_item<P>(up + it.offset, it.pack);
  Floats<P> dg, du;
#pragma unroll
  for (int e = 0; e < P; ++e) {
    const float sig = 1.0f / (1.0f + __expf(-g.v[e]));
    dg.v[e] = d.v[e] * u.v[e] * sig * (1.0f + g.v[e] * (1.0f - sig));
    du.v[e] = d.v[e] * (g.v[e] * sig);
  }
  store_item<P>(dgate + it.offset, dg, it.pack);
  store_item<P>(dup + it.offset, du, it.pack);
}

/// The inputs of a sum, by value in the kernel's parameters.
template <typename T, int K> struct Inputs {
  const T *p[K];
};

template <typename TIn, typename TOut, int K>
__global__ void __launch_bounds__(kElementwiseThreads)
    sum_kernel(Inputs<TIn, K> in, TOut *y, int64_t n) {
  constexpr int P = kPairPack<TIn, TOut>;
  FlatItem<P> it;
  if (!FlatItem<P>::at(n, it))
    return;
  Floats<P> x[K];
#pragma unroll
  for (int i = 0; i < K; ++i)
    x[i] = load_item<P>(in.p[i] + it.offset, it.pack);
  Floats<P> s = x[0];
#pragma unroll
  for (int i = 1; i < K; ++i)
#pragma unroll
    for (int e = 0; e < P; ++e)
      s.v[e] += x[i].v[e];
  store_item<P>(y + it.offset, s, it.pack);
}

template <typename T>
__global__ void __launch_bounds__(kElementwiseThreads)
    fill_kernel(T *y, int64_t n, float value) {
  constexpr int P = kPack<T>;
  FlatItem<P> it;
  if (!FlatItem<P>::at(n, it))
    return;
  Floats<P> v;
#pragma unroll
  for (int e = 0; e < P; ++e)
    v.v[e] = value;
  store_item<P>(y + it.offset, v, it.pack);
}

template <int P> inline dim3 flat_grid(int64_t n) {
  return dim3(unsigned(ceil_div(flat_items<P>(n), kElementwiseThreads)));
}

template <typename T>
void swiglu_forward(const T *gate, const T *up, T *y, int64_t n, cudaStream_t stream) {
  auto *kernel = &swiglu_forward_kernel<T>;
  LLAMA_LAUNCH(kernel, flat_grid<kPack<T>>(n), dim3(kElementwiseThreads), stream, gate, up,
               y, n);
}

template <typename T>
void swiglu_backward(const T *dy, const T *gate, const T *up, T *dgate, T *dup, int64_t n,
                     cudaStream_t stream) {
  auto *kernel = &swiglu_backward_kernel<T>;
  LLAMA_LAUNCH(kernel, flat_grid<kPack<T>>(n), dim3(kElementwiseThreads), stream, dy, gate,
               up, dgate, dup, n);
}

/// y = in[0] + in[1] + ... + in[K-1] (y may alias any input).
template <typename TIn, typename TOut, int K>
void sum(Inputs<TIn, K> in, TOut *y, int64_t n, cudaStream_t stream) {
  auto *kernel = &sum_kernel<TIn, TOut, K>;
  const dim3 grid = flat_grid<kPairPack<TIn, TOut>>(n);
  LLAMA_LAUNCH(kernel, grid, dim3(kElementwiseThreads), stream, in, y, n);
}

template <typename T> void fill(T *y, int64_t n, float value, cudaStream_t stream) {
  auto *kernel = &fill_kernel<T>;
  LLAMA_LAUNCH(kernel, flat_grid<kPack<T>>(n), dim3(kElementwiseThreads), stream, y, n,
               value);
}

} // namespace llk
