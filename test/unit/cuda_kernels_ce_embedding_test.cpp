// The cross-entropy and embedding kernels of runtime/cuda/kernels
// (cross_entropy.cuh, embedding.cuh), run on the CPU through the emulator
// (runtime/cuda/emulate.h) against references computed here:
//   cross-entropy   float64 from the same stored (rounded) logits;
//   embedding       forward: the table rows themselves (a copy: exact);
//                   backward: a float sum of each row's dout rows in
//                   position order from 0.0f, the order of the CPU
//                   reference (runtime/cpu/embedding.cpp, scatter_add_rows),
//                   rounded once to the output type.
// Tolerances:
//   loss (fp32 in both storages)   relative 1e-5 (|loss - ref| <= 1e-5 |ref|)
//   dlogits fp32                   ||d - ref|| / ||ref|| <= 1e-5
//   dlogits bf16                   ||d - ref|| / ||ref|| <= 1e-2
//   rows that are not scored       exactly 0
//   embedding forward              bitwise (copies, zeros, NaN)
//   embedding backward             bitwise, every storage pair (the sum is
//                                  fp32 in position order; one rounding)
// Outputs are poisoned with NaN and the workspaces with garbage before each
// launch; each case runs twice (the emulator's thread order differs per
// launch) and must give the same bits.
//
// Built by hand (the lead wires it into CMake):
//   g++ -std=c++17 -O1 -DLLAMA_CUDA_EMULATE -I. test/unit/cuda_kernels_ce_embedding_test.cpp
//       -lgtest -lgtest_main -pthread
#include "runtime/cuda/kernels/cross_entropy.cuh"
#include "runtime/cuda/kernels/embedding.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using bf16 = __nv_bfloat16;

// ---- buffers and storage types ------------------------------------------

/// Device memory as the runtime allocates it (64-byte aligned), on the host.
template <typename T> class Buffer {
public:
  explicit Buffer(size_t n) : n_(n) {
    const size_t bytes = (std::max<size_t>(n * sizeof(T), 1) + 63) / 64 * 64;
    p_.reset(static_cast<T *>(std::aligned_alloc(64, bytes)));
  }
  T *data() { return p_.get(); }
  const T *data() const { return p_.get(); }
  size_t size() const { return n_; }
  T &operator[](size_t i) { return p_.get()[i]; }
  const T &operator[](size_t i) const { return p_.get()[i]; }
  /// Every byte `byte` (0xff: NaN in fp32 and bf16 alike).
  void poison(uint8_t byte = 0xff) { std::memset(p_.get(), byte, n_ * sizeof(T)); }

private:
  struct Free {
    void operator()(T *p) const { std::free(p); }
  };
  size_t n_;
  std::unique_ptr<T, Free> p_;
};

/// Random bytes: a workspace a previous user left behind.
void garbage(void *p, size_t bytes, uint32_t seed) {
  std::mt19937 rng(seed);
  auto *b = static_cast<uint8_t *>(p);
  for (size_t i = 0; i < bytes; ++i)
    b[i] = uint8_t(rng());
}

template <typename T> T from_f(float f) { return llk::from_float<T>(f); }
float to_f(float x) { return x; }
float to_f(bf16 x) { return __bfloat162float(x); }
uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}
uint32_t bits(bf16 x) { return x.bits; }
template <typename T> const char *type_name() {
  return sizeof(T) == 4 ? "fp32" : "bf16";
}

// ---- cross-entropy --------------------------------------------------------

constexpr int64_t kIgnore = -100;

struct CeReference {
  double loss;               // NaN on a bad target, 0 with no scored row
  std::vector<double> grad;  // rows x V
};

/// float64 loss and gradient from the stored logits.
template <typename T>
CeReference ce_reference(const std::vector<float> &x, const std::vector<int32_t> &targets,
                         int64_t V, double grad_scale) {
  const int64_t rows = int64_t(targets.size());
  int64_t n = 0;
  bool bad = false;
  for (int32_t t : targets) {
    if (t == kIgnore)
      continue;
    if (t < 0 || t >= V)
      bad = true;
    else
      ++n;
  }
  CeReference ref{0.0, std::vector<double>(size_t(rows * V), 0.0)};
  const double coef = n > 0 ? grad_scale / double(n) : 0.0;
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = targets[r];
    if (t == kIgnore || t < 0 || t >= V)
      continue;
    const float *row = x.data() + r * V;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < V; ++j)
      m = std::max(m, double(row[j]));
    double s = 0.0;
    for (int64_t j = 0; j < V; ++j)
      s += std::exp(double(row[j]) - m);
    total += std::log(s) + m - double(row[t]);
    for (int64_t j = 0; j < V; ++j)
      ref.grad[r * V + j] = coef * (std::exp(double(row[j]) - m) / s - (j == t ? 1.0 : 0.0));
  }
  ref.loss = bad ? std::nan("") : n > 0 ? total / double(n) : 0.0;
  return ref;
}

struct CeCase {
  int64_t rows;
  std::vector<int32_t> targets; // empty: random valid targets, every 7th ignored
  bool in_place = false;
  float spread = 4.0f;       // logits uniform in [-spread, spread]
  int64_t masked = 0;        // the first `masked` logits of every row are -inf
};

struct CeResult {
  float loss;
  std::vector<uint32_t> grad_bits;
};

template <typename T, int64_t V, bool kGrad>
void check_ce(const CeCase &c, uint32_t seed) {
  SCOPED_TRACE(std::string(type_name<T>()) + " V=" + std::to_string(V) +
               (kGrad ? " grad" : " forward") + (c.in_place ? " in place" : "") +
               " rows=" + std::to_string(c.rows));
  const int64_t rows = c.rows;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(-c.spread, c.spread);
  std::vector<int32_t> targets = c.targets;
  if (targets.empty()) {
    targets.resize(size_t(rows));
    for (int64_t r = 0; r < rows; ++r)
      targets[r] = r % 7 == 3 ? int32_t(kIgnore) : int32_t(rng() % uint32_t(V));
  }
  ASSERT_EQ(int64_t(targets.size()), rows);
  // Stored logits and their exact values.
  std::vector<float> x(size_t(rows * V));
  for (int64_t i = 0; i < rows * V; ++i) {
    const float v = (i % V) < c.masked ? -std::numeric_limits<float>::infinity() : uni(rng);
    x[i] = to_f(from_f<T>(v));
  }
  const float grad_scale = 0.75f;
  const CeReference ref = ce_reference<T>(x, targets, V, grad_scale);

  Buffer<T> logits{size_t(rows * V)}, dlogits{size_t(rows * V)};
  Buffer<int32_t> tgt{size_t(rows)};
  Buffer<float> loss(1);
  Buffer<uint8_t> ws{size_t(llk::cross_entropy_workspace_bytes(rows))};
  std::memcpy(tgt.data(), targets.data(), size_t(rows) * 4);

  std::vector<CeResult> runs;
  for (int run = 0; run < 2; ++run) {
    for (int64_t i = 0; i < rows * V; ++i)
      logits[i] = from_f<T>(x[i]);
    dlogits.poison();
    loss.poison();
    garbage(ws.data(), ws.size(), seed + run);
    T *d = kGrad ? (c.in_place ? logits.data() : dlogits.data()) : nullptr;
    llk::cross_entropy_fused<T, V, kGrad>(logits.data(), tgt.data(), loss.data(), d, rows,
                                          kIgnore, grad_scale, ws.data(), nullptr);
    CeResult res{loss[0], {}};
    if (kGrad)
      for (int64_t i = 0; i < rows * V; ++i)
        res.grad_bits.push_back(bits(d[i]));
    runs.push_back(res);
    if (!kGrad) {
      // The logits are untouched.
      for (int64_t i = 0; i < rows * V; ++i)
        ASSERT_EQ(to_f(logits[i]), x[i]) << "logit " << i;
      continue;
    }
  }
  // Bitwise reproducible across launches with different thread orders.
  EXPECT_EQ(bits(runs[0].loss), bits(runs[1].loss));
  EXPECT_TRUE(runs[0].grad_bits == runs[1].grad_bits);

  const float got = runs[1].loss;
  if (std::isnan(ref.loss)) {
    EXPECT_TRUE(std::isnan(got)) << got;
  } else if (ref.loss == 0.0) {
    EXPECT_EQ(got, 0.0f);
  } else {
    EXPECT_LE(std::fabs(double(got) - ref.loss), 1e-5 * std::fabs(ref.loss))
        << "loss " << got << " want " << ref.loss;
  }
  if (!kGrad)
    return;
  const T *d = c.in_place ? logits.data() : dlogits.data();
  double err = 0.0, norm = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = targets[r];
    const bool scored = t != kIgnore && t >= 0 && t < V;
    for (int64_t j = 0; j < V; ++j) {
      const double g = to_f(d[r * V + j]), want = ref.grad[r * V + j];
      if (!scored) {
        ASSERT_EQ(g, 0.0) << "row " << r << " (not scored) column " << j;
        continue;
      }
      ASSERT_TRUE(std::isfinite(g)) << "row " << r << " column " << j;
      err += (g - want) * (g - want);
      norm += want * want;
    }
  }
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-2;
  if (norm > 0.0) {
    EXPECT_LE(std::sqrt(err / norm), tol) << "relative L2 error of dlogits";
  }
}

template <typename T, int64_t V> void check_ce_all(int64_t rows, uint32_t seed) {
  check_ce<T, V, false>({rows, {}}, seed);
  check_ce<T, V, true>({rows, {}}, seed + 1);
  check_ce<T, V, true>({rows, {}, /*in_place=*/true}, seed + 2);
}

// V a multiple of the pack (40, 1000: fp32 and bf16) and not (37, 1003).
TEST(CudaCrossEntropy, Fp32Shapes) {
  check_ce_all<float, 40>(37, 1);
  check_ce_all<float, 37>(20, 2);
  check_ce_all<float, 1000>(9, 3);
  check_ce_all<float, 1003>(9, 4);
}
TEST(CudaCrossEntropy, Bf16Shapes) {
  check_ce_all<bf16, 40>(37, 5);
  check_ce_all<bf16, 37>(20, 6);
  check_ce_all<bf16, 1000>(9, 7);
  check_ce_all<bf16, 1003>(9, 8);
}

// Rows longer than one register tile (1024 threads x 4 packs): pass 2
// re-reads the earlier tiles, in place too.
TEST(CudaCrossEntropy, RowsOfSeveralTiles) {
  check_ce_all<float, 20000>(3, 9);  // 5000 packs: two tiles, the second partial
  check_ce_all<bf16, 40000>(3, 10);  // 5000 packs
  check_ce_all<float, 16384>(2, 11); // exactly one full tile
  check_ce_all<float, 32768>(2, 12); // exactly two full tiles
}

TEST(CudaCrossEntropy, EdgeTargetsAndIgnoredRows) {
  // First and last vocabulary entries; ignored rows in between.
  const std::vector<int32_t> t = {0, 999, int32_t(kIgnore), 500, int32_t(kIgnore), 1};
  check_ce<float, 1000, true>({6, t}, 13);
  check_ce<bf16, 1000, true>({6, t, true}, 14);
  check_ce<float, 37, true>({6, {0, 36, int32_t(kIgnore), 5, 7, int32_t(kIgnore)}}, 15);
}

TEST(CudaCrossEntropy, ABadTargetMakesTheLossNaN) {
  // V itself and a negative target that is not `ignore`: NaN loss, zero
  // gradient rows for them, the other rows' gradients as usual.
  check_ce<float, 40, true>({4, {3, 40, 5, int32_t(kIgnore)}}, 16);
  check_ce<bf16, 1003, true>({3, {-1, 2, 1002}, true}, 17);
  check_ce<float, 1000, false>({3, {1, 2, 1000}}, 18);
}

TEST(CudaCrossEntropy, AllRowsIgnoredGiveZero) {
  const std::vector<int32_t> none(5, int32_t(kIgnore));
  check_ce<float, 1000, true>({5, none}, 19);
  check_ce<bf16, 37, true>({5, none, true}, 20);
  check_ce<float, 40, false>({5, none}, 21);
}

TEST(CudaCrossEntropy, MaskedLogitsAndLargeSpread) {
  // -inf logits (a masked vocabulary) contribute nothing: whole threads see
  // only -inf in pass 1. Large logits exercise the max shift.
  check_ce<float, 1000, true>({4, {600, 700, 999, int32_t(kIgnore)}, false, 4.0f, 500}, 22);
  check_ce<bf16, 1000, true>({4, {600, 700, 999, 800}, true, 4.0f, 520}, 23);
  check_ce<float, 1003, true>({5, {}, false, 80.0f}, 24);
  check_ce<bf16, 40000, true>({2, {}, true, 60.0f}, 25);
}

TEST(CudaCrossEntropy, NoRows) {
  Buffer<float> loss(1);
  loss.poison();
  Buffer<uint8_t> ws{size_t(llk::cross_entropy_workspace_bytes(0))};
  llk::cross_entropy_fused<float, 40, true>(nullptr, nullptr, loss.data(), nullptr, 0,
                                            kIgnore, 1.0f, ws.data(), nullptr);
  EXPECT_EQ(loss[0], 0.0f);
}

// ---- embedding forward ----------------------------------------------------

template <typename T, int64_t D>
void check_embedding_forward(int64_t tokens, int64_t vocab, int64_t rows, int64_t row0,
                             uint32_t seed) {
  SCOPED_TRACE(std::string(type_name<T>()) + " D=" + std::to_string(D) + " tokens=" +
               std::to_string(tokens) + " rows=" + std::to_string(rows) + " row0=" +
               std::to_string(row0));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Buffer<T> table{size_t(rows * D)}, out{size_t(tokens * D)};
  for (int64_t i = 0; i < rows * D; ++i)
    table[i] = from_f<T>(normal(rng));
  Buffer<int32_t> ids{size_t(tokens)};
  for (int64_t t = 0; t < tokens; ++t) {
    // Mostly this shard's ids, some other shards', a few bad ones.
    const uint32_t k = rng() % 16;
    ids[t] = k == 0   ? -1 - int32_t(rng() % 3)
             : k == 1 ? int32_t(vocab + rng() % 3)
             : k < 5  ? int32_t(rng() % uint32_t(vocab))
                      : int32_t(row0 + rng() % uint32_t(rows));
  }
  for (int run = 0; run < 2; ++run) {
    out.poison(0x7f);
    llk::embedding_forward<T, D>(table.data(), ids.data(), out.data(), tokens, rows, vocab,
                                 row0, nullptr);
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t id = ids[t], local = id - row0;
      for (int64_t j = 0; j < D; ++j) {
        const T got = out[t * D + j];
        if (id < 0 || id >= vocab)
          ASSERT_TRUE(std::isnan(to_f(got))) << "token " << t << " id " << id;
        else if (local >= 0 && local < rows)
          ASSERT_EQ(bits(got), bits(table[local * D + j])) << "token " << t << " id " << id;
        else
          ASSERT_EQ(bits(got), 0u) << "token " << t << " id " << id << " (other shard)";
      }
    }
  }
}

template <typename T> void check_embedding_forward_widths(uint32_t seed) {
  // 300 tokens: neither the packs nor the elements fill whole blocks.
  check_embedding_forward<T, 64>(300, 50, 50, 0, seed);
  check_embedding_forward<T, 24>(300, 50, 15, 20, seed + 1);
  check_embedding_forward<T, 20>(300, 50, 15, 35, seed + 2);
  check_embedding_forward<T, 7>(300, 50, 50, 0, seed + 3);
  check_embedding_forward<T, 64>(1, 50, 20, 30, seed + 4);
}

TEST(CudaEmbedding, ForwardFp32) { check_embedding_forward_widths<float>(100); }
TEST(CudaEmbedding, ForwardBf16) { check_embedding_forward_widths<bf16>(200); }

// ---- embedding backward ---------------------------------------------------

/// dtable as the CPU reference computes it: a zeroed fp32 row, then each
/// position's dout row added in position order; rounded once.
template <typename TIn, typename TOut>
std::vector<uint32_t> embedding_backward_reference(const Buffer<TIn> &dout,
                                                   const std::vector<int32_t> &ids,
                                                   int64_t rows, int64_t row0, int64_t D) {
  std::vector<float> acc(size_t(rows * D), 0.0f);
  for (size_t t = 0; t < ids.size(); ++t) {
    const int64_t r = int64_t(ids[t]) - row0;
    if (r < 0 || r >= rows)
      continue;
    for (int64_t j = 0; j < D; ++j)
      acc[r * D + j] += to_f(dout[t * D + j]);
  }
  std::vector<uint32_t> out(acc.size());
  for (size_t i = 0; i < acc.size(); ++i)
    out[i] = bits(from_f<TOut>(acc[i]));
  return out;
}

enum class Ids { Mixed, HotToken, OtherShards, Sorted, Reversed };

std::vector<int32_t> make_ids(Ids kind, int64_t tokens, int64_t vocab, int64_t rows,
                              int64_t row0, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(tokens));
  const int32_t hot = int32_t(row0 + rows / 2);
  for (int64_t t = 0; t < tokens; ++t) {
    const uint32_t k = rng() % 16;
    switch (kind) {
    case Ids::Mixed: // this shard, others, out of range
      ids[t] = k == 0   ? -1 - int32_t(rng() % 3)
               : k == 1 ? int32_t(vocab + rng() % 3)
               : k < 4  ? int32_t(rng() % uint32_t(vocab))
                        : int32_t(row0 + rng() % uint32_t(rows));
      break;
    case Ids::HotToken: // one id in ~80% of the positions
      ids[t] = k < 13 ? hot : int32_t(row0 + rng() % uint32_t(rows));
      break;
    case Ids::OtherShards: // nothing for this shard
      ids[t] = int32_t(row0 + rows + rng() % uint32_t(vocab - row0 - rows));
      break;
    case Ids::Sorted:
      ids[t] = int32_t(row0 + (t * rows) / tokens);
      break;
    case Ids::Reversed:
      ids[t] = int32_t(row0 + rows - 1 - (t * rows) / tokens);
      break;
    }
  }
  return ids;
}

template <typename TIn, typename TOut, int64_t D>
void check_embedding_backward(Ids kind, int64_t tokens, int64_t vocab, int64_t rows,
                              int64_t row0, uint32_t seed) {
  SCOPED_TRACE(std::string(type_name<TIn>()) + " -> " + type_name<TOut>() +
               " D=" + std::to_string(D) + " ids kind " + std::to_string(int(kind)) +
               " tokens=" + std::to_string(tokens) + " rows=" + std::to_string(rows) +
               " row0=" + std::to_string(row0));
  std::mt19937 rng(seed);
  // Magnitudes over several octaves: a sum in any other order than the
  // position order rounds differently.
  std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
  Buffer<TIn> dout{size_t(tokens * D)};
  for (int64_t i = 0; i < tokens * D; ++i)
    dout[i] = from_f<TIn>(std::ldexp(mant(rng), int(rng() % 12) - 6));
  Buffer<TOut> dtable{size_t(rows * D)};
  Buffer<uint8_t> ws{size_t(llk::embedding_backward_workspace_bytes(tokens, rows))};
  Buffer<int32_t> ids{size_t(tokens)};
  garbage(ws.data(), ws.size(), seed);
  // Two different id sets through the same workspace: the second call finds
  // the first one's run indices in it.
  for (int call = 0; call < 2; ++call) {
    const std::vector<int32_t> host_ids =
        make_ids(call == 0 ? kind : Ids::Mixed, tokens, vocab, rows, row0, seed + 7 * call);
    std::memcpy(ids.data(), host_ids.data(), host_ids.size() * 4);
    const std::vector<uint32_t> want =
        embedding_backward_reference<TIn, TOut>(dout, host_ids, rows, row0, D);
    for (int run = 0; run < 2; ++run) { // thread orders differ per launch
      dtable.poison();
      llk::embedding_backward<TIn, TOut, D>(dout.data(), ids.data(), dtable.data(), tokens,
                                            rows, row0, ws.data(), nullptr);
      for (int64_t i = 0; i < rows * D; ++i)
        ASSERT_EQ(bits(dtable[i]), want[i])
            << "call " << call << " run " << run << ": row " << i / D << " column "
            << i % D << ": got " << to_f(dtable[i]);
    }
  }
}

/// Every id pattern at one storage pair and width.
template <typename TIn, typename TOut, int64_t D> void check_embedding_backward_kinds(uint32_t s) {
  // Unsharded, 37 rows (2 digit passes: the result in the second buffer).
  check_embedding_backward<TIn, TOut, D>(Ids::Mixed, 1000, 37, 37, 0, s);
  check_embedding_backward<TIn, TOut, D>(Ids::HotToken, 1000, 37, 37, 0, s + 1);
  // A shard of 15 rows from 10 of a 40-row vocabulary (1 pass).
  check_embedding_backward<TIn, TOut, D>(Ids::Mixed, 777, 40, 15, 10, s + 2);
  check_embedding_backward<TIn, TOut, D>(Ids::HotToken, 777, 40, 15, 10, s + 3);
  check_embedding_backward<TIn, TOut, D>(Ids::OtherShards, 300, 40, 15, 10, s + 4);
  // 300 rows (3 passes), already sorted and reversed ids, fewer tokens than
  // sort threads.
  check_embedding_backward<TIn, TOut, D>(Ids::Sorted, 1500, 600, 300, 300, s + 5);
  check_embedding_backward<TIn, TOut, D>(Ids::Reversed, 1500, 600, 300, 0, s + 6);
  check_embedding_backward<TIn, TOut, D>(Ids::Mixed, 100, 600, 300, 0, s + 7);
}

TEST(CudaEmbedding, BackwardFp32) {
  check_embedding_backward_kinds<float, float, 64>(300);
  check_embedding_backward_kinds<float, float, 24>(310);
  check_embedding_backward_kinds<float, float, 20>(320);
  check_embedding_backward_kinds<float, float, 7>(330);
}
TEST(CudaEmbedding, BackwardBf16) {
  check_embedding_backward_kinds<bf16, bf16, 64>(400);
  check_embedding_backward_kinds<bf16, bf16, 24>(410);
  check_embedding_backward_kinds<bf16, bf16, 20>(420);
  check_embedding_backward_kinds<bf16, bf16, 7>(430);
}
TEST(CudaEmbedding, BackwardMixedStorage) {
  // bf16 gradients into an fp32 table and back: packs of the wider type's
  // element count (24 = 3 bf16 packs = 6 fp32 packs; 20: 4-element packs).
  check_embedding_backward_kinds<bf16, float, 24>(500);
  check_embedding_backward_kinds<bf16, float, 20>(510);
  check_embedding_backward_kinds<float, bf16, 64>(520);
  check_embedding_backward_kinds<float, bf16, 7>(530);
}

TEST(CudaEmbedding, BackwardLargeVocabularyAndOneHotRun) {
  // 70000 rows: five digit passes (an odd count: the result in the first
  // buffer), most rows without tokens.
  check_embedding_backward<float, float, 7>(Ids::Mixed, 2000, 70000, 70000, 0, 600);
  check_embedding_backward<bf16, float, 8>(Ids::HotToken, 2000, 140000, 70000, 70000, 601);
  // A run far longer than the sum's read-ahead: 4100 positions, every one
  // the same id (the worst case of the design).
  check_embedding_backward<float, float, 64>(Ids::Sorted, 4100, 1, 1, 0, 602);
}

TEST(CudaEmbedding, BackwardWithoutTokensWritesZeros) {
  Buffer<float> dtable(5 * 24);
  dtable.poison();
  Buffer<uint8_t> ws{size_t(llk::embedding_backward_workspace_bytes(0, 5))};
  garbage(ws.data(), ws.size(), 1);
  llk::embedding_backward<float, float, 24>(nullptr, nullptr, dtable.data(), 0, 5, 0,
                                            ws.data(), nullptr);
  for (size_t i = 0; i < dtable.size(); ++i)
    ASSERT_EQ(bits(dtable[i]), 0u) << i;
}

} // namespace
