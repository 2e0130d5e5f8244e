// The CUDA kernel families of runtime/cuda/kernels (norms, elementwise,
// rope, the KV-cache attention of generation), run on the CPU through runtime/cuda/emulate.h and compared with the
// CPU runtime's kernels (runtime/cpu) in double on the same rounded inputs.
// Widths are chosen around the 16-byte pack (8 bf16, 4 fp32): multiples of
// both, of the fp32 pack only, of neither, rows of one warp (four rows to a
// block, row counts that leave a block partly empty) and rows of several
// warps (block reductions), row counts above the norm backward's 256 chunks.
// Outputs are poisoned with NaN first. Tolerances (relative L2 per output):
// fp32 storage 2e-6, bf16 storage 1e-2 (each stored value is rounded to 8
// bits of mantissa); fp32 statistics (rstd) 2e-6 in both.
#include "runtime/cuda/kernels/attention_cached.cuh"
#include "runtime/cuda/kernels/elementwise.cuh"
#include "runtime/cuda/kernels/norms.cuh"
#include "runtime/cuda/kernels/rope.cuh"

#include "runtime/cpu/kernels.h"
#include "test/unit/cuda_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using bf16 = __nv_bfloat16;

template <typename T> constexpr double tolerance() {
  return sizeof(T) == 4 ? 2e-6 : 1e-2;
}

using cuda_test::Buf;
using cuda_test::poisoned;
using cuda_test::rel_l2;
using cuda_test::widen;
#define EXPECT_CLOSE(got, want, tol) EXPECT_LE(rel_l2(got, want), tol) << #got

const float kEps = 1e-5f;

template <typename T, int64_t D> void check_norm_forward(int64_t rows, bool with_add) {
  std::mt19937 rng{static_cast<unsigned>(D * 131 + rows)};
  const size_t n = size_t(rows * D), nr = size_t(rows), nd = size_t(D);
  Buf<T> a(n, rng), c(n, rng), w(nd, rng);
  auto y = poisoned<T>(n), s = poisoned<T>(n);
  std::vector<float> rstd(nr, std::numeric_limits<float>::quiet_NaN());
  std::vector<double> ref_y(n), ref_s(n), ref_r(nr);
  if (with_add) {
    llk::add_rms_norm_forward<T, D>(a.dev.data(), c.dev.data(), w.dev.data(), s.data(),
                                    y.data(), rstd.data(), rows, kEps, nullptr);
    // The kernel normalizes the stored (rounded) sum: so does the reference.
    for (size_t i = 0; i < ref_s.size(); ++i)
      ref_s[i] = llk::to_float(llk::from_float<T>(float(a.ref[i] + c.ref[i])));
    EXPECT_CLOSE(widen(s), ref_s, sizeof(T) == 4 ? 1e-7 : 1e-3);
    llamart::cpu::rms_norm_forward_rstd<double>(ref_s.data(), w.ref.data(), ref_y.data(),
                                                ref_r.data(), rows, D, kEps);
  } else {
    llk::rms_norm_forward<T, D>(a.dev.data(), w.dev.data(), y.data(), rstd.data(), rows,
                                kEps, nullptr);
    llamart::cpu::rms_norm_forward_rstd<double>(a.ref.data(), w.ref.data(), ref_y.data(),
                                                ref_r.data(), rows, D, kEps);
  }
  EXPECT_CLOSE(widen(y), ref_y, tolerance<T>());
  EXPECT_CLOSE(widen(rstd), ref_r, 2e-6);
}

template <typename T, int64_t D> void check_norm_backward(int64_t rows, bool with_acc) {
  std::mt19937 rng{static_cast<unsigned>(D * 7 + rows)};
  const size_t n = size_t(rows * D), nr = size_t(rows), nd = size_t(D);
  Buf<T> dy(n, rng), x(n, rng), w(nd, rng), acc(n, rng);
  std::vector<double> r_ref(nr), y_ref(n);
  llamart::cpu::rms_norm_forward_rstd<double>(x.ref.data(), w.ref.data(), y_ref.data(),
                                              r_ref.data(), rows, D, kEps);
  std::vector<float> rstd(nr);
  for (size_t i = 0; i < rstd.size(); ++i) {
    rstd[i] = float(r_ref[i]);
    r_ref[i] = rstd[i];
  }
  auto dx = poisoned<T>(n);
  std::vector<float> dw(nd, std::numeric_limits<float>::quiet_NaN());
  std::vector<char> workspace(size_t(llk::norm_grad_workspace_bytes(int(sizeof(T)), rows, D)) +
                              16);
  void *ws = workspace.data() + (16 - reinterpret_cast<uintptr_t>(workspace.data()) % 16) % 16;
  if (with_acc)
    llk::rms_norm_backward<T, float, D, true>(dy.dev.data(), x.dev.data(), w.dev.data(),
                                              rstd.data(), acc.dev.data(), dx.data(),
                                              dw.data(), rows, 0.0f, ws, nullptr);
  else
    llk::rms_norm_backward<T, float, D, false>(dy.dev.data(), x.dev.data(), w.dev.data(),
                                               rstd.data(), nullptr, dx.data(), dw.data(),
                                               rows, 0.0f, ws, nullptr);
  std::vector<double> dx_ref(n), dw_ref(nd);
  llamart::cpu::rms_norm_backward_rstd<double>(dy.ref.data(), x.ref.data(), w.ref.data(),
                                               r_ref.data(), with_acc ? acc.ref.data() : nullptr,
                                               dx_ref.data(), dw_ref.data(), rows, D);
  EXPECT_CLOSE(widen(dx), dx_ref, tolerance<T>());
  // dw is fp32 from storage-type inputs: only fp32 rounding of the sums.
  EXPECT_CLOSE(widen(dw), dw_ref, 2e-6);
}

template <typename T, int64_t D> void check_norms() {
  for (int64_t rows : {1, 5, 9, 300}) {
    SCOPED_TRACE("rows " + std::to_string(rows) + ", D " + std::to_string(D) + ", " +
                 (sizeof(T) == 4 ? "fp32" : "bf16"));
    check_norm_forward<T, D>(rows, false);
    check_norm_forward<T, D>(rows, true);
    check_norm_backward<T, D>(rows, false);
    check_norm_backward<T, D>(rows, true);
  }
}

TEST(CudaKernels, RmsNormFp32) {
  check_norms<float, 7>();    // no pack
  check_norms<float, 20>();   // fp32 packs
  check_norms<float, 64>();
  check_norms<float, 4104>(); // 1026 packs: 512 threads, block reductions
}
TEST(CudaKernels, RmsNormBf16) {
  check_norms<bf16, 7>();
  check_norms<bf16, 20>();  // not a multiple of 8: single elements
  check_norms<bf16, 384>(); // 48 packs: one warp per row, 4 rows a block
  check_norms<bf16, 4104>(); // 513 packs: 256 threads, 3 packs each
}

template <typename T> void check_elementwise(int64_t n) {
  SCOPED_TRACE("n " + std::to_string(n) + (sizeof(T) == 4 ? " fp32" : " bf16"));
  std::mt19937 rng{static_cast<unsigned>(n)};
  Buf<T> g(static_cast<size_t>(n), rng, 2.0), u(static_cast<size_t>(n), rng), dy(static_cast<size_t>(n), rng);
  auto y = poisoned<T>(static_cast<size_t>(n)), dg = poisoned<T>(static_cast<size_t>(n)), du = poisoned<T>(static_cast<size_t>(n));
  llk::swiglu_forward<T>(g.dev.data(), u.dev.data(), y.data(), n, nullptr);
  llk::swiglu_backward<T>(dy.dev.data(), g.dev.data(), u.dev.data(), dg.data(), du.data(), n,
                          nullptr);
  std::vector<double> y_ref(static_cast<size_t>(n)), dg_ref(static_cast<size_t>(n)), du_ref(static_cast<size_t>(n));
  llamart::cpu::swiglu_forward<double>(g.ref.data(), u.ref.data(), y_ref.data(), n);
  llamart::cpu::swiglu_backward<double>(dy.ref.data(), g.ref.data(), u.ref.data(),
                                        dg_ref.data(), du_ref.data(), n);
  EXPECT_CLOSE(widen(y), y_ref, tolerance<T>());
  EXPECT_CLOSE(widen(dg), dg_ref, tolerance<T>());
  EXPECT_CLOSE(widen(du), du_ref, tolerance<T>());

  // A sum of three into fp32 (gradient sums) and in place over its first input.
  auto s = poisoned<float>(static_cast<size_t>(n));
  llk::sum<T, float, 3>({{g.dev.data(), u.dev.data(), dy.dev.data()}}, s.data(), n, nullptr);
  std::vector<double> s_ref(static_cast<size_t>(n));
  const double *ins[] = {g.ref.data(), u.ref.data(), dy.ref.data()};
  llamart::cpu::sum<double>(ins, 3, s_ref.data(), n);
  EXPECT_CLOSE(widen(s), s_ref, 2e-7);
  std::vector<T> inplace = g.dev;
  llk::sum<T, T, 2>({{inplace.data(), u.dev.data()}}, inplace.data(), n, nullptr);
  std::vector<double> add_ref(static_cast<size_t>(n));
  for (size_t i = 0; i < add_ref.size(); ++i)
    add_ref[i] = g.ref[i] + u.ref[i];
  EXPECT_CLOSE(widen(inplace), add_ref, tolerance<T>());

  auto f = poisoned<T>(static_cast<size_t>(n));
  llk::fill<T>(f.data(), n, 0.5f, nullptr);
  EXPECT_CLOSE(widen(f), std::vector<double>(static_cast<size_t>(n), 0.5), 0.0);
}

TEST(CudaKernels, Elementwise) {
  for (int64_t n : {1, 3, 8, 13, 256 * 8, 256 * 8 + 5, 10007}) {
    check_elementwise<float>(n);
    check_elementwise<bf16>(n);
  }
}

// RoPE frequencies in turns, as the compiler emits them.
std::vector<float2> g_turns;
struct TestTurns {
  __device__ static float2 at(int i) { return g_turns[size_t(i)]; }
};
// Scaled RoPE (YaRN): the cos/sin factor as the compiler emits it.
struct ScaledTurns {
  __device__ static float2 at(int i) { return g_turns[size_t(i)]; }
  static constexpr float kScale = 1.25f;
};
void set_turns_from(const std::vector<double> &inv_freq) {
  g_turns.clear();
  for (double f : inv_freq) {
    const double t = f / (2.0 * M_PI);
    const float hi = float(t);
    g_turns.push_back({hi, float(t - double(hi))});
  }
}
void set_turns(int64_t dim, double theta) {
  std::vector<double> f;
  for (int64_t i = 0; i < dim / 2; ++i)
    f.push_back(std::pow(theta, -2.0 * double(i) / double(dim)));
  set_turns_from(f);
}

// inv_freq null: plain RoPE of theta; else scaled frequencies (and the
// factor of Turns).
template <typename T, int64_t HD, typename Turns = TestTurns>
void check_rope(int64_t batch, int64_t seq, int64_t hq, int64_t hk, double theta,
                const std::vector<double> *inv_freq = nullptr) {
  SCOPED_TRACE("head_dim " + std::to_string(HD) + (sizeof(T) == 4 ? " fp32" : " bf16"));
  if (inv_freq)
    set_turns_from(*inv_freq);
  else
    set_turns(HD, theta);
  const double factor = llk::RopeScale<Turns>::value;
  std::mt19937 rng{static_cast<unsigned>(HD + seq)};
  Buf<T> q(size_t(batch * seq * hq * HD), rng), k(size_t(batch * seq * hk * HD), rng);
  for (bool inverse : {false, true}) {
    auto qo = poisoned<T>(q.dev.size()), ko = poisoned<T>(k.dev.size());
    llk::rope<T, HD, Turns>(q.dev.data(), k.dev.data(), qo.data(), ko.data(), batch, seq, hq, hk,
                            0, inverse, nullptr);
    std::vector<double> qr(q.ref.size()), kr(k.ref.size());
    auto ref = inverse ? llamart::cpu::rope_backward<double> : llamart::cpu::rope_forward<double>;
    const double *f = inv_freq ? inv_freq->data() : nullptr;
    ref(q.ref.data(), qr.data(), batch, seq, hq, HD, theta, f, factor);
    ref(k.ref.data(), kr.data(), batch, seq, hk, HD, theta, f, factor);
    EXPECT_CLOSE(widen(qo), qr, tolerance<T>());
    EXPECT_CLOSE(widen(ko), kr, tolerance<T>());
  }
}

TEST(CudaKernels, Rope) {
  check_rope<float, 64>(2, 5, 3, 1, 10000.0);   // fp32 packs (half 32)
  check_rope<bf16, 64>(2, 5, 3, 1, 10000.0);    // bf16 packs
  check_rope<bf16, 4>(1, 7, 4, 4, 10000.0);     // half 2: single elements
  check_rope<float, 128>(1, 33, 2, 2, 500000.0); // Llama 3's theta
  check_rope<bf16, 80>(1, 3, 2, 1, 10000.0);     // half 40: bf16 packs of 8
}

// Scaled RoPE: explicit frequencies (not powers of one theta) and a cos/sin
// factor, in both directions, against the CPU kernel given the same ones.
TEST(CudaKernels, RopeScaled) {
  std::vector<double> f64, f4 = {0.9, 3.0e-4};
  for (int i = 0; i < 32; ++i)
    f64.push_back(std::pow(500000.0, -i / 32.0) / (i % 3 == 0 ? 8.0 : 1.0));
  check_rope<float, 64, ScaledTurns>(2, 9, 4, 2, 500000.0, &f64);
  check_rope<bf16, 64, ScaledTurns>(1, 17, 2, 1, 500000.0, &f64);
  check_rope<float, 4, ScaledTurns>(1, 7, 2, 2, 10000.0, &f4);  // single elements
  check_rope<float, 64, TestTurns>(1, 5, 2, 2, 500000.0, &f64); // no factor
}

// The fp32 angle reduction keeps cos/sin as accurate as the CPU's double
// table far from position 0 (long context, generation at an offset): one
// rotation of a unit vector at positions 100000.. against double.
TEST(CudaKernels, RopeAnglesAtLargePositions) {
  constexpr int64_t HD = 128;
  const double theta = 10000.0;
  set_turns(HD, theta);
  const int64_t seq = 4, pos0 = 131072 - seq;
  std::vector<float> x(size_t(seq * HD), 0.0f), y(x.size());
  for (int64_t s = 0; s < seq; ++s)
    for (int64_t i = 0; i < HD / 2; ++i)
      x[size_t(s * HD + i)] = 1.0f; // y = (cos a, sin a)
  llk::rope<float, HD, TestTurns>(x.data(), nullptr, y.data(), nullptr, 1, seq, 1, 0, pos0,
                                  false, nullptr);
  double worst = 0.0;
  for (int64_t s = 0; s < seq; ++s)
    for (int64_t i = 0; i < HD / 2; ++i) {
      const double a = double(pos0 + s) * std::pow(theta, -2.0 * double(i) / double(HD));
      worst = std::max({worst, std::abs(y[size_t(s * HD + i)] - std::cos(a)),
                        std::abs(y[size_t(s * HD + HD / 2 + i)] - std::sin(a))});
    }
  // The fp32 product pos * inv_freq alone would be ~4e-3 rad off here.
  EXPECT_LE(worst, 1e-6);
}

// rope_at: the position read from device memory, at an offset, against the
// CPU's rope_forward_at.
TEST(CudaKernels, RopeAtDevicePosition) {
  constexpr int64_t HD = 64;
  const double theta = 10000.0;
  set_turns(HD, theta);
  std::mt19937 rng{7};
  const int64_t batch = 2, chunk = 3, heads = 2;
  const int32_t pos = 41;
  Buf<float> x(size_t(batch * chunk * heads * HD), rng);
  auto y = poisoned<float>(x.dev.size());
  llk::rope<float, HD, TestTurns>(x.dev.data(), nullptr, y.data(), nullptr, batch, chunk, heads,
                                  0, 0, false, nullptr, &pos);
  std::vector<double> ref(x.ref.size());
  llamart::cpu::rope_forward_at<double>(x.ref.data(), ref.data(), batch, chunk, heads, HD, theta,
                                        pos, 64);
  EXPECT_CLOSE(widen(y), ref, tolerance<float>());
}

// attention_cached against the CPU kernel in double: the caches (prefilled
// rows 0 .. pos-1 with random values, the chunk appended) and the outputs,
// for decode (chunk 1) and prefill chunks, one split and several (the
// flash-decoding partials and their merge, splits left empty by a short
// position), GQA groups of 1 and 4, head dims of whole packs and of a pack
// count that leaves lanes idle (6 fp32: 3 packs of 2 on 4 lanes).
template <typename T, int64_t HD, int G, int kSplits>
void check_attention_cached(int64_t batch, int64_t chunk, int64_t kv_heads, int64_t capacity,
                            int32_t pos) {
  SCOPED_TRACE("head_dim " + std::to_string(HD) + " group " + std::to_string(G) + " splits " +
               std::to_string(kSplits) + " chunk " + std::to_string(chunk) + " pos " +
               std::to_string(pos) + (sizeof(T) == 4 ? " fp32" : " bf16"));
  std::mt19937 rng{static_cast<unsigned>(HD * 7 + G * 3 + kSplits + chunk + pos)};
  const int64_t heads = kv_heads * G, row = kv_heads * HD;
  const size_t nq = size_t(batch * chunk * heads * HD), nk = size_t(batch * chunk * row),
               nc = size_t(batch * capacity * row);
  Buf<T> q(nq, rng), k(nk, rng), v(nk, rng), kc(nc, rng), vc(nc, rng);
  auto out = poisoned<T>(nq);
  std::vector<T> kc_dev = kc.dev, vc_dev = vc.dev;
  const int64_t rows = batch * chunk * kv_heads;
  std::vector<unsigned char> workspace(
      size_t(llk::attention_cached_workspace_bytes(rows, G, HD, kSplits)) + 16);
  const double scale = 1.0 / std::sqrt(double(HD));
  llk::attention_cached<T, HD, G, kSplits>(q.dev.data(), k.dev.data(), v.dev.data(),
                                           kc_dev.data(), vc_dev.data(), out.data(), batch,
                                           chunk, kv_heads, capacity, &pos, float(scale),
                                           workspace.data(), nullptr);
  std::vector<double> want(nq), kc_ref = kc.ref, vc_ref = vc.ref;
  llamart::cpu::attention_cached_forward<double>(q.ref.data(), k.ref.data(), v.ref.data(),
                                                 kc_ref.data(), vc_ref.data(), want.data(),
                                                 batch, chunk, heads, kv_heads, HD, capacity,
                                                 pos, scale);
  EXPECT_EQ(widen(kc_dev), kc_ref); // appended exactly, the rest untouched
  EXPECT_EQ(widen(vc_dev), vc_ref);
  EXPECT_CLOSE(widen(out), want, tolerance<T>());
}

TEST(CudaKernels, AttentionCached) {
  check_attention_cached<float, 64, 1, 1>(1, 1, 2, 40, 17);    // decode, MHA
  check_attention_cached<float, 64, 4, 1>(2, 5, 2, 40, 9);     // prefill chunk, GQA 4
  check_attention_cached<bf16, 64, 4, 1>(2, 5, 2, 40, 9);      // bf16 packs of 8
  check_attention_cached<float, 64, 4, 3>(1, 1, 2, 300, 250);  // decode over 3 splits
  check_attention_cached<bf16, 128, 2, 4>(1, 2, 1, 200, 30);   // 2 of 4 splits empty
  check_attention_cached<float, 6, 2, 1>(1, 3, 2, 16, 4);      // 3 packs on 4 lanes
  check_attention_cached<float, 4, 2, 2>(2, 1, 2, 64, 63);     // micro's head dim; full cache
  check_attention_cached<float, 64, 1, 1>(1, 1, 1, 8, 0);      // the first token
  check_attention_cached<bf16, 64, 8, 2>(1, 1, 1, 600, 555);   // Llama-70B's group: 2 blocks of 4
  check_attention_cached<float, 16, 12, 1>(1, 2, 2, 20, 7);    // 2 blocks of 6 heads
}

// Heads of a GQA group per block: q and weighted-V state within 32 floats.
TEST(CudaKernels, AttentionCachedHeadsPerBlock) {
  EXPECT_EQ(llk::attention_cached_heads_per_block(8, 8), 4);  // bf16: 2 blocks per group
  EXPECT_EQ(llk::attention_cached_heads_per_block(8, 4), 8);  // fp32: one block
  EXPECT_EQ(llk::attention_cached_heads_per_block(12, 4), 6);
  EXPECT_EQ(llk::attention_cached_heads_per_block(1, 8), 1);
  EXPECT_EQ(llk::attention_cached_heads_per_block(7, 8), 1);  // a prime group over 4
}

// The split count: one block per row already fills the GPU at prefill; a
// decode step at batch 1 splits its keys (never below 256 keys a split).
TEST(CudaKernels, AttentionCachedSplits) {
  EXPECT_EQ(llk::attention_cached_splits(8, 4096), 16);
  EXPECT_EQ(llk::attention_cached_splits(8, 32768), 32);
  EXPECT_EQ(llk::attention_cached_splits(8, 300), 1);
  EXPECT_EQ(llk::attention_cached_splits(512, 4096), 1);
  EXPECT_EQ(llk::attention_cached_splits(64, 4096), 5);
}

// Packed accesses check their alignment under the emulator: a buffer off by
// one element throws instead of passing (on a GPU it would fault).
TEST(CudaKernels, MisalignedBufferThrows) {
  std::vector<float> x(65, 1.0f), y(65);
  EXPECT_THROW(llk::swiglu_forward<float>(x.data() + 1, x.data(), y.data(), 64, nullptr),
               std::runtime_error);
}

} // namespace
