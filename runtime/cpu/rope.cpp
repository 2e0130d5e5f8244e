// Rotary position embedding, Hugging Face "rotate half" pairing.
//
// For token position t and i < d/2, with angle a = t * theta^(-2i/d):
//   y[i]       = x[i] cos a - x[i + d/2] sin a
//   y[i + d/2] = x[i + d/2] cos a + x[i] sin a
// The backward is the transpose of this rotation, i.e. the rotation by -a.
//
// Memory traffic: x read once, y written once. cos/sin depend only on
// (position, i), so they come from a table of seq x d/2 pairs built in double
// (angles and trig in double, then rounded to T) and cached per calling
// thread: a training run rebuilds it only when seq, head_dim or the
// frequencies change. RoPE scaling (linear, NTK, YaRN, Llama 3) arrives as
// explicit frequencies and a cos/sin factor computed by the compiler.
// The table (seq * d/2 * 2 values, 1 MiB for seq 2048, d 128, float) is
// shared by all heads and all batch rows.
#include "runtime/cpu/kernels.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/cpu/parallel.h"

namespace llamart::cpu {
namespace {

// The rotation's parameters: theta (plain RoPE) or explicit frequencies,
// and the cos/sin factor.
struct Angles {
  double theta;
  const double *inv_freq; // null: theta^(-2i/d)
  double factor;
};

template <typename T> struct RopeTable {
  int64_t seq = -1, half = -1;
  double theta = 0.0, factor = 1.0;
  std::vector<double> inv_freq; // empty: from theta
  std::vector<T> cos, sin;      // [seq, half]
};

template <typename T>
const RopeTable<T> &rope_table(int64_t seq, int64_t head_dim, const Angles &a,
                               const char *kernel) {
  if (head_dim <= 0 || head_dim % 2 != 0)
    throw std::runtime_error(std::string(kernel) + ": head_dim " +
                             std::to_string(head_dim) +
                             " must be positive and even");
  if (!(a.theta > 0.0))
    throw std::runtime_error(std::string(kernel) + ": theta " +
                             std::to_string(a.theta) + " must be positive");
  if (!(std::isfinite(a.factor) && a.factor > 0.0))
    throw std::runtime_error(std::string(kernel) + ": attention_factor " +
                             std::to_string(a.factor) + " must be finite and positive");
  thread_local RopeTable<T> table;
  const int64_t half = head_dim / 2;
  const bool same_freqs =
      a.inv_freq ? table.inv_freq.size() == size_t(half) &&
                       std::equal(table.inv_freq.begin(), table.inv_freq.end(), a.inv_freq)
                 : table.inv_freq.empty() && table.theta == a.theta;
  // A longer table serves shorter requests: row t depends on t alone.
  if (table.seq >= seq && table.half == half && same_freqs && table.factor == a.factor)
    return table;
  table.cos.resize(size_t(seq * half));
  table.sin.resize(size_t(seq * half));
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv_freq[size_t(i)] = a.inv_freq ? a.inv_freq[i]
                                     : std::pow(a.theta, -2.0 * double(i) / double(head_dim));
  T *cos_out = table.cos.data();
  T *sin_out = table.sin.data();
  const double factor = a.factor;
  // sin and cos cost ~50x an elementwise op: split the table early.
  const bool parallel = seq * half >= kParallelElements / 8;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t t = 0; t < seq; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(t) * inv_freq[size_t(i)];
      cos_out[t * half + i] = static_cast<T>(factor * std::cos(angle));
      sin_out[t * half + i] = static_cast<T>(factor * std::sin(angle));
    }
  table.seq = seq;
  table.half = half;
  table.theta = a.theta;
  table.factor = a.factor;
  if (a.inv_freq)
    table.inv_freq = std::move(inv_freq);
  else
    table.inv_freq.clear();
  return table;
}

// direction = +1: forward rotation; -1: its transpose (backward).
// Token bt of [batch, seq] sits at position pos0 + bt % seq; `positions`
// (>= pos0 + seq) sizes the table, so that a generation's growing position
// does not rebuild it every token.
template <typename T>
void rotate(const T *x, T *y, int64_t batch, int64_t seq, int64_t heads,
            int64_t head_dim, const Angles &angles, T direction, const char *kernel,
            int64_t pos0 = 0, int64_t positions = -1) {
  if (batch < 0 || seq < 0 || heads < 0 || pos0 < 0)
    throw std::runtime_error(std::string(kernel) + ": negative dimension");
  if (positions < 0)
    positions = seq;
  if (pos0 + seq > positions)
    throw std::runtime_error(std::string(kernel) + ": positions " +
                             std::to_string(pos0) + ".." +
                             std::to_string(pos0 + seq - 1) +
                             " exceed the capacity " + std::to_string(positions));
  const RopeTable<T> &table = rope_table<T>(positions, head_dim, angles, kernel);
  const int64_t half = head_dim / 2;
  const int64_t tokens = batch * seq;
  const bool parallel = tokens * heads * head_dim >= kParallelElements;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t bt = 0; bt < tokens; ++bt) {
    const int64_t t = pos0 + bt % seq;
    const T *c = table.cos.data() + t * half;
    const T *s = table.sin.data() + t * half;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t off = (bt * heads + h) * head_dim;
      const T *xh = x + off;
      T *yh = y + off;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const T x1 = xh[i], x2 = xh[i + half];
        const T sn = direction * s[i];
        yh[i] = x1 * c[i] - x2 * sn;
        yh[i + half] = x2 * c[i] + x1 * sn;
      }
    }
  }
}

} // namespace

template <typename T>
void rope_forward(const T *x, T *y, int64_t batch, int64_t seq, int64_t heads,
                  int64_t head_dim, double theta, const double *inv_freq,
                  double attention_factor) {
  rotate(x, y, batch, seq, heads, head_dim, Angles{theta, inv_freq, attention_factor}, T(1),
         "rope_forward");
}

template <typename T>
void rope_backward(const T *dy, T *dx, int64_t batch, int64_t seq,
                   int64_t heads, int64_t head_dim, double theta,
                   const double *inv_freq, double attention_factor) {
  rotate(dy, dx, batch, seq, heads, head_dim, Angles{theta, inv_freq, attention_factor}, T(-1),
         "rope_backward");
}

template <typename T>
void rope_forward_at(const T *x, T *y, int64_t batch, int64_t chunk,
                     int64_t heads, int64_t head_dim, double theta, int64_t pos0,
                     int64_t max_positions, const double *inv_freq,
                     double attention_factor) {
  rotate(x, y, batch, chunk, heads, head_dim, Angles{theta, inv_freq, attention_factor}, T(1),
         "rope_forward_at", pos0, max_positions);
}

#define LLAMART_INSTANTIATE(T)                                                 \
  template void rope_forward_at<T>(const T *, T *, int64_t, int64_t, int64_t,  \
                                   int64_t, double, int64_t, int64_t,          \
                                   const double *, double);                    \
  template void rope_forward<T>(const T *, T *, int64_t, int64_t, int64_t,     \
                                int64_t, double, const double *, double);      \
  template void rope_backward<T>(const T *, T *, int64_t, int64_t, int64_t,    \
                                 int64_t, double, const double *, double);
LLAMART_INSTANTIATE(float)
LLAMART_INSTANTIATE(double)
#undef LLAMART_INSTANTIATE

} // namespace llamart::cpu
