// cpu_kernels_timing: wall time of the CPU runtime's attention (forward +
// backward, fp32, batch 4, seq 256, 6 heads of 64) on every ISA variant this
// machine supports, and of a 1024^3 sgemm through matmul(): best of 5 runs
// each. Built as build/bin/cpu_kernels_timing; prints one line per figure.
// A timing, not a test: test/unit/cpu_kernels_test.cpp checks the kernels.
#include "runtime/cpu/isa.h"
#include "runtime/cpu/kernels.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

using namespace llamart::cpu;

namespace {

template <typename F> double best_ms(int reps, F &&f) {
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return best;
}

std::vector<float> random_vec(size_t n, std::mt19937_64 &rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float &x : v)
    x = d(rng);
  return v;
}

} // namespace

int main() {
  std::mt19937_64 rng(16);
  const int64_t batch = 4, seq = 256, heads = 6, kv_heads = 6, d = 64;
  const double scale = 1.0 / std::sqrt(double(d));
  const size_t nq = size_t(batch * seq * heads * d), nk = size_t(batch * seq * kv_heads * d);
  const std::vector<float> q = random_vec(nq, rng), k = random_vec(nk, rng),
                           v = random_vec(nk, rng), dout = random_vec(nq, rng);
  std::vector<float> out(nq), lse(size_t(batch * heads * seq)), dq(nq), dk(nk), dv(nk);
  const Isa saved = active_isa();
  for (int i = 0; i <= static_cast<int>(supported_isa()); ++i) {
    const Isa isa = static_cast<Isa>(i);
    set_isa_limit(isa);
    const double ms = best_ms(5, [&] {
      attention_forward(q.data(), k.data(), v.data(), out.data(), lse.data(), batch, seq, heads,
                        kv_heads, d, scale);
      attention_backward(dout.data(), q.data(), k.data(), v.data(), out.data(), lse.data(),
                         dq.data(), dk.data(), dv.data(), batch, seq, heads, kv_heads, d, scale);
    });
    std::printf("attention fwd+bwd float B4 S256 H6 D64 (%s): %.2f ms\n", isa_name(isa), ms);
  }
  set_isa_limit(saved);

  const int64_t n = 1024;
  const std::vector<float> a = random_vec(size_t(n * n), rng), b = random_vec(size_t(n * n), rng);
  std::vector<float> c(size_t(n * n));
  const double ms =
      best_ms(5, [&] { matmul(a.data(), b.data(), c.data(), 1, n, n, n, false, false, false); });
  std::printf("sgemm 1024^3 via matmul(): %.2f ms, %.1f GFLOP/s\n", ms,
              2.0 * double(n * n * n) / (ms * 1e6));
  return 0;
}
