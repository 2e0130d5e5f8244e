// Tests of the CPU kernels (runtime/cpu/kernels.h).
//
// Every forward is compared with a naive reference written here from the
// math (double, no blocking, no online softmax); every backward with central
// finite differences of the double forward: for a random cotangent dy,
//   <dy, f(x + h e_i) - f(x - h e_i)> / 2h  ~=  analytic gradient_i,
// to 1e-6 relative. The float kernels are compared with the double ones on
// the same (float-representable) inputs. Attention runs once per ISA variant
// the machine supports. Timings are tools/bench/cpu_kernels_timing's.
#include "runtime/cpu/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/cpu/isa.h"
#include "runtime/cpu/vec_math.h"

namespace llamart::cpu {
namespace {

using Vec = std::vector<double>;

// ------------------------------------------------------------ helpers ----

// Uniform values rounded to float, so the float and double kernels see
// exactly the same inputs.
Vec random_vec(size_t n, std::mt19937_64 &rng, double lo = -1.0,
               double hi = 1.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (double &x : v)
    x = static_cast<float>(dist(rng));
  return v;
}

template <typename T> std::vector<T> to(const Vec &v) {
  return std::vector<T>(v.begin(), v.end());
}
template <typename T> Vec to_double(const std::vector<T> &v) {
  return Vec(v.begin(), v.end());
}

double dot(const Vec &a, const Vec &b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i)
    s += a[i] * b[i];
  return s;
}

double max_abs(const Vec &v) {
  double m = 0.0;
  for (double x : v)
    m = std::max(m, std::fabs(x));
  return m;
}

// |got - want| <= tol * max(|want_i|, floor * max|want|): relative per
// element, with a floor so entries that cancel to ~0 are judged on the scale
// of the tensor instead of their own.
void expect_close(const Vec &got, const Vec &want, double tol,
                  const std::string &what, double floor = 0.1) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double scale = floor * max_abs(want);
  int reported = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double bound = tol * std::max(std::fabs(want[i]), scale);
    if (!(std::fabs(got[i] - want[i]) <= bound) && reported++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want "
                    << want[i] << " (bound " << bound << ")";
  }
}

// Central finite differences of x -> <dy, f(x)> against `analytic`, for every
// element of x (or only those listed in `only`).
void expect_gradient(const std::function<Vec(const Vec &)> &f, const Vec &x,
                     const Vec &dy, const Vec &analytic,
                     const std::string &what,
                     const std::vector<size_t> &only = {}) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  const double h = 1e-5, tol = 1e-6;
  // Elements whose true gradient is ~0 are judged against 1e-3 of the
  // gradient's scale; everything else against its own magnitude.
  const double scale = 1e-3 * max_abs(analytic);
  std::vector<size_t> indices = only;
  if (indices.empty())
    for (size_t i = 0; i < x.size(); ++i)
      indices.push_back(i);
  Vec xp = x;
  int reported = 0;
  double worst = 0.0;
  for (size_t i : indices) {
    xp[i] = x[i] + h;
    const double plus = dot(dy, f(xp));
    xp[i] = x[i] - h;
    const double minus = dot(dy, f(xp));
    xp[i] = x[i];
    const double numeric = (plus - minus) / (2 * h);
    const double denom =
        std::max({std::fabs(numeric), std::fabs(analytic[i]), scale, 1e-300});
    const double rel = std::fabs(numeric - analytic[i]) / denom;
    worst = std::max(worst, rel);
    if (!(rel < tol) && reported++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: analytic " << analytic[i]
                    << ", finite difference " << numeric << " (rel " << rel
                    << ")";
  }
  ::testing::Test::RecordProperty(what + "_max_rel_err", std::to_string(worst));
}

std::vector<size_t> random_indices(size_t n, size_t count,
                                   std::mt19937_64 &rng) {
  std::uniform_int_distribution<size_t> dist(0, n - 1);
  std::vector<size_t> out(count);
  for (size_t &i : out)
    i = dist(rng);
  return out;
}

// Every ISA variant this CPU can run, baseline first; restores the ISA that
// was active before.
class EachIsa {
public:
  EachIsa() : saved_(active_isa()) {
    for (int i = 0; i <= static_cast<int>(supported_isa()); ++i)
      isas_.push_back(static_cast<Isa>(i));
  }
  ~EachIsa() { set_isa_limit(saved_); }
  const std::vector<Isa> &isas() const { return isas_; }

private:
  Isa saved_;
  std::vector<Isa> isas_;
};

// ------------------------------------------------------------- exp_fast --

TEST(ExpFast, MatchesLibmAcrossTheRange) {
  double worst = 0.0;
  for (int i = 0; i <= 400000; ++i) {
    const float x = -87.0f + 175.0f * float(i) / 400000.0f;
    const double want = std::exp(double(x));
    worst = std::max(worst, std::fabs(exp_fast(x) - want) / want);
  }
  EXPECT_LT(worst, 1.5e-7); // measured 8e-8: within ~1 ulp of float
}

TEST(ExpFast, EdgeValues) {
  EXPECT_EQ(exp_fast(0.0f), 1.0f);
  EXPECT_EQ(exp_fast(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(exp_fast(-100.0f), 0.0f);
  EXPECT_TRUE(std::isfinite(exp_fast(200.0f)));
  EXPECT_GT(exp_fast(200.0f), 1e38f);
  EXPECT_TRUE(std::isnan(exp_fast(std::numeric_limits<float>::quiet_NaN())));
}

// ------------------------------------------------------------ embedding --

TEST(Embedding, ForwardGathersRows) {
  std::mt19937_64 rng(1);
  const int64_t vocab = 11, dim = 7;
  const std::vector<int32_t> ids = {3, 0, 10, 3, 7};
  const Vec table = random_vec(vocab * dim, rng);
  for (bool use_float : {false, true}) {
    Vec out;
    if (use_float) {
      std::vector<float> t = to<float>(table), o(ids.size() * dim);
      embedding_forward(t.data(), ids.data(), o.data(), ids.size(), vocab, dim);
      out = to_double(o);
    } else {
      out.resize(ids.size() * dim);
      embedding_forward(table.data(), ids.data(), out.data(), ids.size(), vocab,
                        dim);
    }
    for (size_t t = 0; t < ids.size(); ++t)
      for (int64_t c = 0; c < dim; ++c)
        EXPECT_EQ(out[t * dim + c], table[ids[t] * dim + c]);
  }
}

TEST(Embedding, BackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(2);
  // dim 150 spans three 64-column slices; ids repeat so rows accumulate.
  const int64_t vocab = 9, dim = 150;
  const std::vector<int32_t> ids = {4, 1, 4, 8, 0, 4, 1};
  const int64_t n = ids.size();
  const Vec table = random_vec(vocab * dim, rng);
  const Vec dy = random_vec(n * dim, rng);
  Vec dtable(vocab * dim, 123.0); // must be overwritten, not accumulated into
  embedding_backward(dy.data(), ids.data(), dtable.data(), n, vocab, dim);
  auto f = [&](const Vec &t) {
    Vec out(n * dim);
    embedding_forward(t.data(), ids.data(), out.data(), n, vocab, dim);
    return out;
  };
  expect_gradient(f, table, dy, dtable, "dtable");
  // Rows never looked up get exactly zero.
  for (int64_t c = 0; c < dim; ++c)
    EXPECT_EQ(dtable[2 * dim + c], 0.0);
}

TEST(Embedding, FloatBackwardMatchesDouble) {
  std::mt19937_64 rng(3);
  const int64_t vocab = 50, dim = 200, n = 300;
  std::vector<int32_t> ids(n);
  std::uniform_int_distribution<int32_t> pick(0, vocab - 1);
  for (int32_t &id : ids)
    id = pick(rng);
  const Vec dy = random_vec(n * dim, rng);
  Vec want(vocab * dim);
  embedding_backward(dy.data(), ids.data(), want.data(), n, vocab, dim);
  std::vector<float> dyf = to<float>(dy), got(vocab * dim);
  embedding_backward(dyf.data(), ids.data(), got.data(), n, vocab, dim);
  expect_close(to_double(got), want, 1e-5, "dtable");
}

TEST(Embedding, IdOutOfRangeThrowsNamingPositionAndId) {
  const int64_t vocab = 5, dim = 3;
  std::vector<float> table(vocab * dim, 1.0f), out(4 * dim);
  for (int32_t bad : {5, -1}) {
    const std::vector<int32_t> ids = {0, 1, 2, bad};
    try {
      embedding_forward(table.data(), ids.data(), out.data(), 4, vocab, dim);
      ADD_FAILURE() << "id " << bad << " was accepted";
    } catch (const std::runtime_error &e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("position 3"), std::string::npos) << msg;
      EXPECT_NE(msg.find("id " + std::to_string(bad)), std::string::npos)
          << msg;
    }
    std::vector<float> dtable(vocab * dim);
    EXPECT_THROW(embedding_backward(out.data(), ids.data(), dtable.data(), 4,
                                    vocab, dim),
                 std::runtime_error);
  }
}

// ------------------------------------------------------------- rms_norm --

Vec naive_rms_norm(const Vec &x, const Vec &w, int64_t rows, int64_t dim,
                   double eps) {
  Vec y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0.0;
    for (int64_t j = 0; j < dim; ++j)
      ss += x[r * dim + j] * x[r * dim + j];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int64_t j = 0; j < dim; ++j)
      y[r * dim + j] = x[r * dim + j] * inv * w[j];
  }
  return y;
}

TEST(RmsNorm, ForwardMatchesReferenceInDoubleAndFloat) {
  std::mt19937_64 rng(4);
  const int64_t rows = 37, dim = 130;
  const double eps = 1e-5;
  const Vec x = random_vec(rows * dim, rng, -2, 2), w = random_vec(dim, rng);
  const Vec want = naive_rms_norm(x, w, rows, dim, eps);
  Vec y(rows * dim);
  rms_norm_forward(x.data(), w.data(), y.data(), rows, dim, eps);
  expect_close(y, want, 1e-12, "y(double)");
  std::vector<float> xf = to<float>(x), wf = to<float>(w), yf(rows * dim);
  rms_norm_forward(xf.data(), wf.data(), yf.data(), rows, dim, eps);
  expect_close(to_double(yf), want, 1e-5, "y(float)");
}

TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(5);
  const int64_t rows = 6, dim = 19;
  const double eps = 1e-6;
  const Vec x = random_vec(rows * dim, rng, -2, 2), w = random_vec(dim, rng);
  const Vec dy = random_vec(rows * dim, rng);
  Vec dx(rows * dim), dw(dim);
  rms_norm_backward(dy.data(), x.data(), w.data(), dx.data(), dw.data(), rows,
                    dim, eps);
  auto forward = [&](const Vec &xx, const Vec &ww) {
    Vec y(rows * dim);
    rms_norm_forward(xx.data(), ww.data(), y.data(), rows, dim, eps);
    return y;
  };
  expect_gradient([&](const Vec &xx) { return forward(xx, w); }, x, dy, dx,
                  "dx");
  expect_gradient([&](const Vec &ww) { return forward(x, ww); }, w, dy, dw,
                  "dw");
}

TEST(RmsNorm, FloatBackwardMatchesDoubleOnManyRows) {
  // Enough rows for the per-thread dw partials to matter.
  std::mt19937_64 rng(6);
  const int64_t rows = 513, dim = 256;
  const Vec x = random_vec(rows * dim, rng, -2, 2), w = random_vec(dim, rng);
  const Vec dy = random_vec(rows * dim, rng);
  Vec dx(rows * dim), dw(dim);
  rms_norm_backward(dy.data(), x.data(), w.data(), dx.data(), dw.data(), rows,
                    dim, 1e-5);
  std::vector<float> dyf = to<float>(dy), xf = to<float>(x), wf = to<float>(w);
  std::vector<float> dxf(rows * dim), dwf(dim);
  rms_norm_backward(dyf.data(), xf.data(), wf.data(), dxf.data(), dwf.data(),
                    rows, dim, 1e-5);
  expect_close(to_double(dxf), dx, 1e-5, "dx(float)");
  expect_close(to_double(dwf), dw, 1e-5, "dw(float)");
}

// --------------------------------------------------------------- matmul --

// C[b] = op(A[b]) op(B[b]) from the storage conventions of kernels.h.
Vec naive_matmul(const Vec &a, const Vec &b, int64_t batch, int64_t m,
                 int64_t n, int64_t k, bool ta, bool tb, bool broadcast) {
  Vec c(batch * m * n);
  for (int64_t bi = 0; bi < batch; ++bi) {
    const double *A = a.data() + bi * m * k;
    const double *B = b.data() + (broadcast ? 0 : bi * k * n);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (int64_t p = 0; p < k; ++p)
          s += (ta ? A[p * m + i] : A[i * k + p]) *
               (tb ? B[j * k + p] : B[p * n + j]);
        c[bi * m * n + i * n + j] = s;
      }
  }
  return c;
}

TEST(Matmul, AllTransposesBatchedAndBroadcast) {
  std::mt19937_64 rng(7);
  const int64_t m = 13, n = 9, k = 21;
  for (int64_t batch : {1, 3})
    for (bool broadcast : {false, true})
      for (bool ta : {false, true})
        for (bool tb : {false, true}) {
          const std::string what = "batch " + std::to_string(batch) +
                                   (broadcast ? " broadcast" : "") +
                                   (ta ? " A^T" : " A") + (tb ? " B^T" : " B");
          const Vec a = random_vec(batch * m * k, rng);
          const Vec b = random_vec((broadcast ? 1 : batch) * k * n, rng);
          const Vec want =
              naive_matmul(a, b, batch, m, n, k, ta, tb, broadcast);
          Vec c(batch * m * n, 99.0);
          matmul(a.data(), b.data(), c.data(), batch, m, n, k, ta, tb,
                 broadcast);
          expect_close(c, want, 1e-12, what + " (double)");
          std::vector<float> af = to<float>(a), bf = to<float>(b),
                             cf(batch * m * n, 99.0f);
          matmul(af.data(), bf.data(), cf.data(), batch, m, n, k, ta, tb,
                 broadcast);
          expect_close(to_double(cf), want, 1e-5, what + " (float)");
        }
}

TEST(Matmul, EmptyInnerDimensionGivesZeros) {
  std::vector<float> a(1), b(1), c(2 * 3 * 4, 7.0f);
  matmul(a.data(), b.data(), c.data(), 2, 3, 4, 0, false, false, false);
  for (float x : c)
    EXPECT_EQ(x, 0.0f);
}

// ----------------------------------------------------------------- rope --

// Hugging Face: q * cos + rotate_half(q) * sin with emb = cat(freqs, freqs).
Vec naive_rope(const Vec &x, int64_t batch, int64_t seq, int64_t heads,
               int64_t d, double theta) {
  Vec y(x.size());
  const int64_t half = d / 2;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        const double *xh = x.data() + ((b * seq + t) * heads + h) * d;
        double *yh = y.data() + ((b * seq + t) * heads + h) * d;
        for (int64_t c = 0; c < d; ++c) {
          const double inv_freq =
              1.0 / std::pow(theta, double(2 * (c % half)) / d);
          const double angle = t * inv_freq;
          const double rotated = c < half ? -xh[c + half] : xh[c - half];
          yh[c] = xh[c] * std::cos(angle) + rotated * std::sin(angle);
        }
      }
  return y;
}

TEST(Rope, ForwardMatchesHuggingFaceFormula) {
  std::mt19937_64 rng(8);
  const int64_t batch = 2, seq = 17, heads = 3, d = 10;
  const double theta = 10000.0;
  const Vec x = random_vec(batch * seq * heads * d, rng);
  const Vec want = naive_rope(x, batch, seq, heads, d, theta);
  Vec y(x.size());
  rope_forward(x.data(), y.data(), batch, seq, heads, d, theta);
  expect_close(y, want, 1e-12, "y(double)");
  std::vector<float> xf = to<float>(x), yf(x.size());
  rope_forward(xf.data(), yf.data(), batch, seq, heads, d, theta);
  expect_close(to_double(yf), want, 1e-5, "y(float)");
  // A different theta must not reuse the cached table.
  const Vec want2 = naive_rope(x, batch, seq, heads, d, 500000.0);
  rope_forward(x.data(), y.data(), batch, seq, heads, d, 500000.0);
  expect_close(y, want2, 1e-12, "y(theta 5e5)");
}

TEST(Rope, BackwardMatchesFiniteDifferencesAndInvertsForward) {
  std::mt19937_64 rng(9);
  const int64_t batch = 2, seq = 5, heads = 2, d = 8;
  const double theta = 10000.0;
  const Vec x = random_vec(batch * seq * heads * d, rng);
  const Vec dy = random_vec(x.size(), rng);
  Vec dx(x.size());
  rope_backward(dy.data(), dx.data(), batch, seq, heads, d, theta);
  auto f = [&](const Vec &xx) {
    Vec y(xx.size());
    rope_forward(xx.data(), y.data(), batch, seq, heads, d, theta);
    return y;
  };
  expect_gradient(f, x, dy, dx, "dx");
  // A rotation's transpose is its inverse.
  Vec back(x.size());
  rope_backward(f(x).data(), back.data(), batch, seq, heads, d, theta);
  expect_close(back, x, 1e-12, "backward(forward(x))");
}

TEST(Rope, OddHeadDimThrows) {
  std::vector<float> x(9), y(9);
  EXPECT_THROW(rope_forward(x.data(), y.data(), 1, 1, 1, 9, 1e4),
               std::runtime_error);
}

// ------------------------------------------------------------ attention --

struct AttnShape {
  int64_t batch, seq, heads, kv_heads, d;
  double scale() const { return 1.0 / std::sqrt(double(d)); }
  size_t q_size() const { return batch * seq * heads * d; }
  size_t kv_size() const { return batch * seq * kv_heads * d; }
  size_t lse_size() const { return batch * heads * seq; }
};

// Full softmax over a causal row, no blocking: out and lse.
void naive_attention(const AttnShape &s, const Vec &q, const Vec &k,
                     const Vec &v, Vec &out, Vec &lse) {
  out.assign(s.q_size(), 0.0);
  lse.assign(s.lse_size(), 0.0);
  const int64_t D = s.d, group = s.heads / s.kv_heads;
  std::vector<double> scores(s.seq);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t i = 0; i < s.seq; ++i) {
        const int64_t g = h / group;
        const double *qi = &q[((b * s.seq + i) * s.heads + h) * D];
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          const double *kj = &k[((b * s.seq + j) * s.kv_heads + g) * D];
          double dotp = 0.0;
          for (int64_t c = 0; c < D; ++c)
            dotp += qi[c] * kj[c];
          scores[j] = s.scale() * dotp;
          mx = std::max(mx, scores[j]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j <= i; ++j)
          sum += std::exp(scores[j] - mx);
        lse[(b * s.heads + h) * s.seq + i] = mx + std::log(sum);
        double *oi = &out[((b * s.seq + i) * s.heads + h) * D];
        for (int64_t j = 0; j <= i; ++j) {
          const double p = std::exp(scores[j] - mx) / sum;
          const double *vj = &v[((b * s.seq + j) * s.kv_heads + g) * D];
          for (int64_t c = 0; c < D; ++c)
            oi[c] += p * vj[c];
        }
      }
}

// The textbook backward through the explicit softmax Jacobian.
void naive_attention_backward(const AttnShape &s, const Vec &dout, const Vec &q,
                              const Vec &k, const Vec &v, Vec &dq, Vec &dk,
                              Vec &dv) {
  dq.assign(s.q_size(), 0.0);
  dk.assign(s.kv_size(), 0.0);
  dv.assign(s.kv_size(), 0.0);
  const int64_t D = s.d, group = s.heads / s.kv_heads;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t i = 0; i < s.seq; ++i) {
        const int64_t g = h / group;
        auto K = [&](int64_t j) {
          return &k[((b * s.seq + j) * s.kv_heads + g) * D];
        };
        auto V = [&](int64_t j) {
          return &v[((b * s.seq + j) * s.kv_heads + g) * D];
        };
        const double *qi = &q[((b * s.seq + i) * s.heads + h) * D];
        const double *doi = &dout[((b * s.seq + i) * s.heads + h) * D];
        std::vector<double> p(i + 1), dp(i + 1);
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          double d = 0.0;
          for (int64_t c = 0; c < D; ++c)
            d += qi[c] * K(j)[c];
          p[j] = s.scale() * d;
          mx = std::max(mx, p[j]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j <= i; ++j)
          sum += (p[j] = std::exp(p[j] - mx));
        double pdp = 0.0;
        for (int64_t j = 0; j <= i; ++j) {
          p[j] /= sum;
          double d = 0.0;
          for (int64_t c = 0; c < D; ++c)
            d += doi[c] * V(j)[c];
          dp[j] = d;
          pdp += p[j] * d;
        }
        for (int64_t j = 0; j <= i; ++j) {
          const double ds = p[j] * (dp[j] - pdp) * s.scale();
          for (int64_t c = 0; c < D; ++c) {
            dq[((b * s.seq + i) * s.heads + h) * D + c] += ds * K(j)[c];
            dk[((b * s.seq + j) * s.kv_heads + g) * D + c] += ds * qi[c];
            dv[((b * s.seq + j) * s.kv_heads + g) * D + c] += p[j] * doi[c];
          }
        }
      }
}

template <typename T>
void run_attention(const AttnShape &s, const Vec &q, const Vec &k, const Vec &v,
                   Vec &out, Vec &lse) {
  std::vector<T> qt = to<T>(q), kt = to<T>(k), vt = to<T>(v);
  std::vector<T> o(s.q_size(), T(-7)), l(s.lse_size(), T(-7));
  attention_forward(qt.data(), kt.data(), vt.data(), o.data(), l.data(),
                    s.batch, s.seq, s.heads, s.kv_heads, s.d, s.scale());
  out = to_double(o);
  lse = to_double(l);
}

template <typename T>
void run_attention_backward(const AttnShape &s, const Vec &dout, const Vec &q,
                            const Vec &k, const Vec &v, Vec &dq, Vec &dk,
                            Vec &dv) {
  std::vector<T> qt = to<T>(q), kt = to<T>(k), vt = to<T>(v), dot = to<T>(dout);
  std::vector<T> o(s.q_size()), l(s.lse_size());
  attention_forward(qt.data(), kt.data(), vt.data(), o.data(), l.data(),
                    s.batch, s.seq, s.heads, s.kv_heads, s.d, s.scale());
  // Poisoned outputs: the kernel must overwrite them, not accumulate.
  std::vector<T> gq(s.q_size(), T(5)), gk(s.kv_size(), T(5)),
      gv(s.kv_size(), T(5));
  attention_backward(dot.data(), qt.data(), kt.data(), vt.data(), o.data(),
                     l.data(), gq.data(), gk.data(), gv.data(), s.batch, s.seq,
                     s.heads, s.kv_heads, s.d, s.scale());
  dq = to_double(gq);
  dk = to_double(gk);
  dv = to_double(gv);
}

// Shapes: a single 64-block, and seq 70 / odd head_dim so the tiles have
// ragged row and column edges and the online softmax crosses a block.
const AttnShape kSmallGqa{2, 9, 4, 2, 8};
const AttnShape kRaggedGqa{1, 70, 4, 2, 12};

TEST(Attention, ForwardMatchesExplicitCausalSoftmax) {
  EachIsa each;
  std::mt19937_64 rng(10);
  for (const AttnShape &s :
       {kSmallGqa, kRaggedGqa, AttnShape{2, 130, 3, 3, 16} /* MHA */,
        AttnShape{1, 67, 4, 1, 5} /* MQA */, AttnShape{1, 1, 2, 1, 4}}) {
    const Vec q = random_vec(s.q_size(), rng, -2, 2);
    const Vec k = random_vec(s.kv_size(), rng, -2, 2);
    const Vec v = random_vec(s.kv_size(), rng);
    Vec want_out, want_lse;
    naive_attention(s, q, k, v, want_out, want_lse);
    for (Isa isa : each.isas()) {
      set_isa_limit(isa);
      const std::string tag = std::string(isa_name(isa)) + " seq " +
                              std::to_string(s.seq) + " d " +
                              std::to_string(s.d);
      Vec out, lse;
      run_attention<double>(s, q, k, v, out, lse);
      expect_close(out, want_out, 1e-12, "out(double) " + tag);
      expect_close(lse, want_lse, 1e-12, "lse(double) " + tag);
      run_attention<float>(s, q, k, v, out, lse);
      expect_close(out, want_out, 1e-5, "out(float) " + tag);
      expect_close(lse, want_lse, 1e-5, "lse(float) " + tag);
    }
  }
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  EachIsa each;
  std::mt19937_64 rng(11);
  const AttnShape &s = kSmallGqa;
  const Vec q = random_vec(s.q_size(), rng, -2, 2);
  const Vec k = random_vec(s.kv_size(), rng, -2, 2);
  const Vec v = random_vec(s.kv_size(), rng);
  const Vec dout = random_vec(s.q_size(), rng);
  auto out_of = [&](const Vec &qq, const Vec &kk, const Vec &vv) {
    Vec out, lse;
    run_attention<double>(s, qq, kk, vv, out, lse);
    return out;
  };
  for (Isa isa : each.isas()) {
    set_isa_limit(isa);
    const std::string tag = isa_name(isa);
    Vec dq, dk, dv;
    run_attention_backward<double>(s, dout, q, k, v, dq, dk, dv);
    expect_gradient([&](const Vec &x) { return out_of(x, k, v); }, q, dout, dq,
                    "dq " + tag);
    expect_gradient([&](const Vec &x) { return out_of(q, x, v); }, k, dout, dk,
                    "dk " + tag);
    expect_gradient([&](const Vec &x) { return out_of(q, k, x); }, v, dout, dv,
                    "dv " + tag);
  }
}

TEST(Attention, RaggedBlocksBackwardMatchesReferenceAndFiniteDifferences) {
  EachIsa each;
  std::mt19937_64 rng(12);
  const AttnShape &s = kRaggedGqa;
  const Vec q = random_vec(s.q_size(), rng, -2, 2);
  const Vec k = random_vec(s.kv_size(), rng, -2, 2);
  const Vec v = random_vec(s.kv_size(), rng);
  const Vec dout = random_vec(s.q_size(), rng);
  Vec want_dq, want_dk, want_dv;
  naive_attention_backward(s, dout, q, k, v, want_dq, want_dk, want_dv);
  auto out_of = [&](const Vec &qq, const Vec &kk, const Vec &vv) {
    Vec out, lse;
    run_attention<double>(s, qq, kk, vv, out, lse);
    return out;
  };
  for (Isa isa : each.isas()) {
    set_isa_limit(isa);
    const std::string tag = isa_name(isa);
    Vec dq, dk, dv;
    run_attention_backward<double>(s, dout, q, k, v, dq, dk, dv);
    expect_close(dq, want_dq, 1e-10, "dq(double) " + tag);
    expect_close(dk, want_dk, 1e-10, "dk(double) " + tag);
    expect_close(dv, want_dv, 1e-10, "dv(double) " + tag);
    // Finite differences on a sample, weighted towards the second key block.
    std::vector<size_t> pick_q = random_indices(s.q_size(), 60, rng);
    std::vector<size_t> pick_kv = random_indices(s.kv_size(), 60, rng);
    pick_kv.push_back(s.kv_size() - 1);
    expect_gradient([&](const Vec &x) { return out_of(x, k, v); }, q, dout, dq,
                    "dq " + tag, pick_q);
    expect_gradient([&](const Vec &x) { return out_of(q, x, v); }, k, dout, dk,
                    "dk " + tag, pick_kv);
    expect_gradient([&](const Vec &x) { return out_of(q, k, x); }, v, dout, dv,
                    "dv " + tag, pick_kv);
    Vec fdq, fdk, fdv;
    run_attention_backward<float>(s, dout, q, k, v, fdq, fdk, fdv);
    expect_close(fdq, want_dq, 1e-4, "dq(float) " + tag);
    expect_close(fdk, want_dk, 1e-4, "dk(float) " + tag);
    expect_close(fdv, want_dv, 1e-4, "dv(float) " + tag);
  }
}

// Generation: feeding the sequence through the KV cache in chunks (a padded
// prefill chunk, then one-token decode steps) gives, for every real token,
// the causal attention of the whole sequence (naive reference), and the
// cache ends up holding exactly the sequence's keys and values.
TEST(AttentionCached, ChunksAndDecodeStepsMatchFullCausalAttention) {
  std::mt19937_64 rng(21);
  const AttnShape s{2, 13, 4, 2, 6};
  const int64_t capacity = 16, chunk = 5;
  const Vec q = random_vec(s.q_size(), rng, -2, 2);
  const Vec k = random_vec(s.kv_size(), rng, -2, 2);
  const Vec v = random_vec(s.kv_size(), rng);
  Vec want, lse;
  naive_attention(s, q, k, v, want, lse);

  const int64_t qrow = s.heads * s.d, kvrow = s.kv_heads * s.d;
  Vec kc(s.batch * capacity * kvrow, 0.0), vc(kc.size(), 0.0);
  Vec got(s.q_size(), 0.0);
  // Slices [pos, pos + n) of every batch row, zero-padded to `width` tokens.
  auto slice = [&](const Vec &x, int64_t row, int64_t pos, int64_t n, int64_t width) {
    Vec out(s.batch * width * row, 0.0);
    for (int64_t b = 0; b < s.batch; ++b)
      std::copy_n(&x[(b * s.seq + pos) * row], n * row, &out[b * width * row]);
    return out;
  };
  int64_t pos = 0;
  while (pos < s.seq) {
    // Prefill chunks of 5 (the second one covers 5..9), then decode steps.
    const int64_t width = pos < 10 ? chunk : 1;
    const int64_t n = std::min(width, s.seq - pos);
    Vec qs = slice(q, qrow, pos, n, width), ks = slice(k, kvrow, pos, n, width),
        vs = slice(v, kvrow, pos, n, width), out(qs.size(), 0.0);
    attention_cached_forward<double>(qs.data(), ks.data(), vs.data(), kc.data(),
                                     vc.data(), out.data(), s.batch, width, s.heads,
                                     s.kv_heads, s.d, capacity, pos, s.scale());
    for (int64_t b = 0; b < s.batch; ++b)
      std::copy_n(&out[b * width * qrow], n * qrow, &got[(b * s.seq + pos) * qrow]);
    pos += n;
  }
  expect_close(got, want, 1e-12, "cached attention");
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t t = 0; t < s.seq; ++t)
      for (int64_t c = 0; c < kvrow; ++c) {
        ASSERT_EQ(kc[(b * capacity + t) * kvrow + c], k[(b * s.seq + t) * kvrow + c]);
        ASSERT_EQ(vc[(b * capacity + t) * kvrow + c], v[(b * s.seq + t) * kvrow + c]);
      }
  // A chunk past the capacity is refused, naming it.
  Vec one(s.batch * qrow, 0.0), kv1(s.batch * kvrow, 0.0);
  try {
    attention_cached_forward<double>(one.data(), kv1.data(), kv1.data(), kc.data(),
                                     vc.data(), one.data(), s.batch, 1, s.heads,
                                     s.kv_heads, s.d, capacity, capacity, s.scale());
    FAIL() << "no error";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("capacity 16"), std::string::npos) << e.what();
  }
}

// rope_forward_at rotates a chunk exactly like rope_forward rotates the same
// rows of the whole sequence (bit for bit: generation must see the angles
// training saw), whatever table size was built before.
TEST(Rope, AtPositionMatchesWholeSequenceRows) {
  std::mt19937_64 rng(22);
  const int64_t batch = 2, seq = 11, heads = 3, d = 8;
  const Vec x = random_vec(batch * seq * heads * d, rng);
  std::vector<float> xf(x.begin(), x.end()), whole(xf.size());
  rope_forward<float>(xf.data(), whole.data(), batch, seq, heads, d, 10000.0);
  for (int64_t pos0 : {0, 3, 10}) {
    const int64_t chunk = std::min<int64_t>(4, seq - pos0);
    std::vector<float> in(batch * chunk * heads * d), out(in.size());
    for (int64_t b = 0; b < batch; ++b)
      std::copy_n(&xf[(b * seq + pos0) * heads * d], chunk * heads * d,
                  &in[b * chunk * heads * d]);
    rope_forward_at<float>(in.data(), out.data(), batch, chunk, heads, d, 10000.0,
                           pos0, 64);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t i = 0; i < chunk * heads * d; ++i)
        ASSERT_EQ(out[b * chunk * heads * d + i], whole[(b * seq + pos0) * heads * d + i])
            << "pos0 " << pos0;
  }
  std::vector<float> in(heads * d), out(in.size());
  EXPECT_THROW(rope_forward_at<float>(in.data(), out.data(), 1, 1, heads, d, 10000.0, 64, 64),
               std::runtime_error);
}

TEST(Attention, HeadsNotMultipleOfKvHeadsThrows) {
  std::vector<float> x(64), lse(64);
  EXPECT_THROW(attention_forward(x.data(), x.data(), x.data(), x.data(),
                                 lse.data(), 1, 2, 3, 2, 4, 0.5),
               std::runtime_error);
}

// --------------------------------------------------------------- swiglu --

TEST(SwiGlu, ForwardAndBackward) {
  std::mt19937_64 rng(13);
  const int64_t n = 101;
  Vec gate = random_vec(n, rng, -6, 6);
  gate[0] = 90.0; // far tails: exp(-g) saturates or vanishes
  gate[1] = -90.0;
  const Vec up = random_vec(n, rng, -2, 2), dy = random_vec(n, rng);
  Vec want(n);
  for (int64_t i = 0; i < n; ++i)
    want[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
  Vec y(n);
  swiglu_forward(gate.data(), up.data(), y.data(), n);
  expect_close(y, want, 1e-14, "y(double)");
  std::vector<float> gf = to<float>(gate), uf = to<float>(up), yf(n);
  swiglu_forward(gf.data(), uf.data(), yf.data(), n);
  expect_close(to_double(yf), want, 1e-5, "y(float)", 1e-3);

  Vec dgate(n), dup(n);
  swiglu_backward(dy.data(), gate.data(), up.data(), dgate.data(), dup.data(),
                  n);
  auto fwd = [&](const Vec &g, const Vec &u) {
    Vec out(n);
    swiglu_forward(g.data(), u.data(), out.data(), n);
    return out;
  };
  expect_gradient([&](const Vec &g) { return fwd(g, up); }, gate, dy, dgate,
                  "dgate");
  expect_gradient([&](const Vec &u) { return fwd(gate, u); }, up, dy, dup,
                  "dup");
  std::vector<float> dyf = to<float>(dy), dgf(n), duf(n);
  swiglu_backward(dyf.data(), gf.data(), uf.data(), dgf.data(), duf.data(), n);
  expect_close(to_double(dgf), dgate, 1e-5, "dgate(float)", 1e-3);
  expect_close(to_double(duf), dup, 1e-5, "dup(float)", 1e-3);
}

// ------------------------------------------------------------------ add --

TEST(Add, SumsAndAllowsAliasing) {
  std::mt19937_64 rng(14);
  const int64_t n = 200003; // above the threading threshold, odd tail
  const Vec a = random_vec(n, rng), b = random_vec(n, rng);
  Vec y(n);
  add(a.data(), b.data(), y.data(), n);
  for (int64_t i = 0; i < n; i += 997)
    ASSERT_EQ(y[i], a[i] + b[i]);
  Vec acc = a; // y aliases a: the compiler's gradient accumulation
  add(acc.data(), b.data(), acc.data(), n);
  EXPECT_EQ(acc, y);
}

// -------------------------------------------------------- cross_entropy --

double naive_cross_entropy(const Vec &logits, const std::vector<int32_t> &t,
                           int64_t vocab, int64_t ignore) {
  double total = 0.0;
  int64_t valid = 0;
  for (size_t r = 0; r < t.size(); ++r) {
    if (t[r] == ignore)
      continue;
    double sum = 0.0; // unshifted: the test logits are small
    for (int64_t j = 0; j < vocab; ++j)
      sum += std::exp(logits[r * vocab + j]);
    total += std::log(sum) - logits[r * vocab + t[r]];
    ++valid;
  }
  return valid ? total / valid : 0.0;
}

TEST(CrossEntropy, ForwardAndBackwardWithIgnoredRows) {
  std::mt19937_64 rng(15);
  const int64_t vocab = 23, ignore = -100;
  const std::vector<int32_t> targets = {3, -100, 22, 0, -100, 7, 7};
  const int64_t rows = targets.size();
  const Vec logits = random_vec(rows * vocab, rng, -3, 3);
  const double want = naive_cross_entropy(logits, targets, vocab, ignore);
  double loss = -1.0;
  cross_entropy_forward(logits.data(), targets.data(), &loss, rows, vocab,
                        ignore);
  EXPECT_NEAR(loss, want, 1e-13 * std::fabs(want));
  std::vector<float> lf = to<float>(logits);
  float lossf = -1.0f;
  cross_entropy_forward(lf.data(), targets.data(), &lossf, rows, vocab, ignore);
  EXPECT_NEAR(lossf, want, 1e-5 * std::fabs(want));

  const double dloss = 0.37;
  Vec dlogits(rows * vocab, 9.0);
  cross_entropy_backward(&dloss, logits.data(), targets.data(), dlogits.data(),
                         rows, vocab, ignore);
  auto f = [&](const Vec &x) {
    double l = 0.0;
    cross_entropy_forward(x.data(), targets.data(), &l, rows, vocab, ignore);
    return Vec{l};
  };
  expect_gradient(f, logits, Vec{dloss}, dlogits, "dlogits");
  for (int64_t j = 0; j < vocab; ++j)
    EXPECT_EQ(dlogits[1 * vocab + j], 0.0) << "ignored row 1";

  const float dlossf = 0.37f;
  std::vector<float> dlf(rows * vocab);
  cross_entropy_backward(&dlossf, lf.data(), targets.data(), dlf.data(), rows,
                         vocab, ignore);
  expect_close(to_double(dlf), dlogits, 1e-5, "dlogits(float)", 1e-2);
}

TEST(CrossEntropy, AllRowsIgnoredGivesZero) {
  const int64_t rows = 3, vocab = 5;
  const std::vector<int32_t> targets(rows, -1);
  std::vector<float> logits(rows * vocab, 1.5f), d(rows * vocab, 4.0f);
  float loss = 42.0f, dloss = 1.0f;
  cross_entropy_forward(logits.data(), targets.data(), &loss, rows, vocab, -1);
  EXPECT_EQ(loss, 0.0f);
  cross_entropy_backward(&dloss, logits.data(), targets.data(), d.data(), rows,
                         vocab, -1);
  for (float x : d)
    EXPECT_EQ(x, 0.0f);
}

TEST(CrossEntropy, LargeLogitsStayFinite) {
  // Logits of +-1000 overflow exp unless the max is subtracted first.
  const int64_t vocab = 4;
  const std::vector<int32_t> targets = {1, 2};
  const Vec logits = {1000, 999, -1000, 0, -1000, -1000, -998, -1000};
  double loss = 0.0;
  cross_entropy_forward(logits.data(), targets.data(), &loss, 2, vocab, -100);
  const double row0 = std::log(1 + std::exp(-1.0) + std::exp(-1000.0)) + 1.0;
  const double row1 = std::log(1 + 3 * std::exp(-2.0)); // target is the max
  EXPECT_NEAR(loss, (row0 + row1) / 2, 1e-12);
  std::vector<float> lf = to<float>(logits);
  float lossf = 0.0f;
  cross_entropy_forward(lf.data(), targets.data(), &lossf, 2, vocab, -100);
  EXPECT_NEAR(lossf, (row0 + row1) / 2, 1e-6);
}

TEST(CrossEntropy, BadTargetThrowsNamingRowAndValue) {
  const int64_t rows = 3, vocab = 5;
  const std::vector<int32_t> targets = {1, 5, -100};
  std::vector<float> logits(rows * vocab), d(rows * vocab);
  float loss = 0.0f, dloss = 1.0f;
  try {
    cross_entropy_forward(logits.data(), targets.data(), &loss, rows, vocab,
                          -100);
    ADD_FAILURE() << "target 5 was accepted";
  } catch (const std::runtime_error &e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("target 5"), std::string::npos) << msg;
    EXPECT_NE(msg.find("row 1"), std::string::npos) << msg;
  }
  EXPECT_THROW(cross_entropy_backward(&dloss, logits.data(), targets.data(),
                                      d.data(), rows, vocab, -100),
               std::runtime_error);
}

// ------------------------------------------------------- spot checks --
// Closed-form values at a larger shape than the reference tests use (the
// timings of these calls are tools/bench/cpu_kernels_timing's).

TEST(SpotChecks, AttentionRowZeroAndSgemmEntries) {
  EachIsa each;
  std::mt19937_64 rng(16);
  const AttnShape s{4, 256, 6, 6, 64};
  const std::vector<float> q = to<float>(random_vec(s.q_size(), rng));
  const std::vector<float> k = to<float>(random_vec(s.kv_size(), rng));
  const std::vector<float> v = to<float>(random_vec(s.kv_size(), rng));
  const std::vector<float> dout = to<float>(random_vec(s.q_size(), rng));
  std::vector<float> out(s.q_size()), lse(s.lse_size()), dq(s.q_size()),
      dk(s.kv_size()), dv(s.kv_size());
  for (Isa isa : each.isas()) {
    SCOPED_TRACE(isa_name(isa));
    set_isa_limit(isa);
    attention_forward(q.data(), k.data(), v.data(), out.data(), lse.data(),
                      s.batch, s.seq, s.heads, s.kv_heads, s.d, s.scale());
    attention_backward(dout.data(), q.data(), k.data(), v.data(), out.data(),
                       lse.data(), dq.data(), dk.data(), dv.data(), s.batch,
                       s.seq, s.heads, s.kv_heads, s.d, s.scale());
    // Row 0 attends only to key 0: out = v_0, lse = scale * q_0 . k_0.
    double qk = 0.0;
    for (int64_t c = 0; c < s.d; ++c) {
      ASSERT_FLOAT_EQ(out[c], v[c]);
      qk += double(q[c]) * k[c];
    }
    EXPECT_NEAR(lse[0], s.scale() * qk, 1e-5);
    for (float x : dq)
      ASSERT_TRUE(std::isfinite(x));
  }

  const int64_t n = 1024;
  const std::vector<float> a = to<float>(random_vec(n * n, rng));
  const std::vector<float> b = to<float>(random_vec(n * n, rng));
  std::vector<float> c(n * n);
  matmul(a.data(), b.data(), c.data(), 1, n, n, n, false, false, false);
  for (int64_t i : {0, 517, 1023}) {
    double want = 0.0;
    for (int64_t p = 0; p < n; ++p)
      want += double(a[i * n + p]) * b[p * n + (1023 - i)];
    EXPECT_NEAR(c[i * n + (1023 - i)], want, 1e-3);
  }
}

// ------------------------------------------------------ fused kernels ----
// Each fused kernel against the unfused ones it replaces (same arithmetic,
// so float64 results are identical), computed both into separate buffers
// and in place over the operand the memory plan lets it take.

TEST(Fused, AddRmsNormEqualsAddThenNormAlsoInPlace) {
  std::mt19937_64 rng(31);
  const int64_t rows = 37, dim = 96;
  const Vec a = random_vec(rows * dim, rng, -2, 2), b = random_vec(rows * dim, rng);
  const Vec w = random_vec(dim, rng);
  Vec sum_ref(rows * dim), y_ref(rows * dim), y_plain(rows * dim);
  add(a.data(), b.data(), sum_ref.data(), rows * dim);
  rms_norm_forward(sum_ref.data(), w.data(), y_plain.data(), rows, dim, 1e-5);
  Vec rstd(rows), y(rows * dim), sum(rows * dim);
  add_rms_norm_forward(a.data(), b.data(), w.data(), sum.data(), y.data(),
                       rstd.data(), rows, dim, 1e-5);
  EXPECT_EQ(sum, sum_ref);
  EXPECT_EQ(y, y_plain);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0.0;
    for (int64_t j = 0; j < dim; ++j)
      ss += sum_ref[r * dim + j] * sum_ref[r * dim + j];
    EXPECT_NEAR(rstd[r], 1.0 / std::sqrt(ss / dim + 1e-5), 1e-12);
  }
  Vec inplace = a, y2(rows * dim), rstd2(rows);
  add_rms_norm_forward(inplace.data(), b.data(), w.data(), inplace.data(),
                       y2.data(), rstd2.data(), rows, dim, 1e-5);
  EXPECT_EQ(inplace, sum_ref);
  EXPECT_EQ(y2, y_plain);
}

TEST(Fused, NormBackwardFromRstdWithAccumulateAlsoInPlace) {
  std::mt19937_64 rng(32);
  const int64_t rows = 41, dim = 80;
  const Vec x = random_vec(rows * dim, rng, -2, 2), w = random_vec(dim, rng);
  const Vec dy = random_vec(rows * dim, rng), acc = random_vec(rows * dim, rng);
  Vec y(rows * dim), rstd(rows);
  rms_norm_forward_rstd(x.data(), w.data(), y.data(), rstd.data(), rows, dim, 1e-6);
  Vec dx_ref(rows * dim), dw_ref(dim), sum_ref(rows * dim);
  rms_norm_backward(dy.data(), x.data(), w.data(), dx_ref.data(), dw_ref.data(),
                    rows, dim, 1e-6);
  add(dx_ref.data(), acc.data(), sum_ref.data(), rows * dim);
  Vec dx(rows * dim), dw(dim);
  rms_norm_backward_rstd(dy.data(), x.data(), w.data(), rstd.data(), acc.data(),
                         dx.data(), dw.data(), rows, dim);
  expect_close(dx, sum_ref, 1e-14, "dx");
  expect_close(dw, dw_ref, 1e-14, "dw");
  Vec inplace = acc, dw2(dim);
  rms_norm_backward_rstd(dy.data(), x.data(), w.data(), rstd.data(), inplace.data(),
                         inplace.data(), dw2.data(), rows, dim);
  EXPECT_EQ(inplace, dx);
  EXPECT_EQ(dw2, dw);
}

TEST(Fused, CrossEntropyEqualsForwardAndBackwardAlsoOverTheLogits) {
  std::mt19937_64 rng(33);
  const int64_t rows = 23, vocab = 301;
  const Vec logits = random_vec(rows * vocab, rng, -4, 4);
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r)
    targets[r] = r % 6 == 0 ? -100 : int32_t((r * 37) % vocab);
  Vec loss_ref(1), d_ref(rows * vocab);
  const Vec seed = {0.75};
  cross_entropy_forward(logits.data(), targets.data(), loss_ref.data(), rows, vocab, -100);
  cross_entropy_backward(seed.data(), logits.data(), targets.data(), d_ref.data(),
                         rows, vocab, -100);
  Vec loss(1), d(rows * vocab);
  cross_entropy_fused(logits.data(), targets.data(), loss.data(), d.data(), rows,
                      vocab, -100, 0.75);
  EXPECT_NEAR(loss[0], loss_ref[0], 1e-14 * std::abs(loss_ref[0]));
  EXPECT_EQ(d, d_ref);
  Vec inplace = logits, loss2(1);
  cross_entropy_fused(inplace.data(), targets.data(), loss2.data(), inplace.data(),
                      rows, vocab, -100, 0.75);
  EXPECT_EQ(loss2, loss);
  EXPECT_EQ(inplace, d_ref);
}

TEST(Fused, SumIsTheAddChainAlsoInPlace) {
  std::mt19937_64 rng(34);
  const int64_t n = 1001;
  const Vec a = random_vec(n, rng), b = random_vec(n, rng), c = random_vec(n, rng);
  Vec ab(n), ref(n);
  add(a.data(), b.data(), ab.data(), n);
  add(ab.data(), c.data(), ref.data(), n);
  Vec out(n), inplace = c;
  const double *in[] = {a.data(), b.data(), c.data()};
  sum(in, 3, out.data(), n);
  EXPECT_EQ(out, ref);
  const double *in2[] = {a.data(), b.data(), inplace.data()};
  sum(in2, 3, inplace.data(), n);
  EXPECT_EQ(inplace, ref);
}

} // namespace
} // namespace llamart::cpu
