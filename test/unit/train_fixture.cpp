#include "test/unit/train_fixture.h"

#include <algorithm>
#include <cmath>
#include <csignal>
#include <string>
#include <vector>

namespace llamart::testing {

std::atomic<int64_t> bigram_train_calls{0};
std::atomic<int64_t> raise_sigterm_at_call{0};

namespace {

// Loss, and the gradients when `grads` is not null.
template <typename T, int V, int B, int S>
void bigram_compute(const void *params_v, T *grads, const int32_t *tokens,
                    const int32_t *targets, void *arena, double *loss_out) {
  const T *w = static_cast<const T *>(params_v);
  const T *g = w + V * V;
  // Scratch in the arena, so an arena the driver sized wrongly would show.
  double *z = static_cast<double *>(arena);
  std::vector<double> acc(V * V + V, 0.0);

  int64_t scored = 0;
  for (int i = 0; i < B * S; ++i)
    scored += targets[i] != kBigramIgnoreIndex;
  double loss = 0.0;
  for (int i = 0; i < B * S && scored > 0; ++i) {
    const int tgt = targets[i];
    if (tgt == kBigramIgnoreIndex)
      continue;
    const int tok = tokens[i];
    double m = -INFINITY;
    for (int j = 0; j < V; ++j) {
      z[j] = static_cast<double>(w[tok * V + j]) * static_cast<double>(g[j]);
      m = std::max(m, z[j]);
    }
    double sum = 0.0;
    for (int j = 0; j < V; ++j)
      sum += std::exp(z[j] - m);
    const double lse = m + std::log(sum);
    loss += lse - z[tgt];
    for (int j = 0; j < V; ++j) {
      const double d = (std::exp(z[j] - lse) - (j == tgt ? 1.0 : 0.0)) /
                       static_cast<double>(scored);
      acc[tok * V + j] += d * static_cast<double>(g[j]);
      acc[V * V + j] += d * static_cast<double>(w[tok * V + j]);
    }
  }
  if (grads)
    for (int k = 0; k < V * V + V; ++k)
      grads[k] = static_cast<T>(acc[k]);
  *loss_out = scored > 0 ? loss / static_cast<double>(scored) : 0.0;
}

template <typename T, int V, int B, int S>
void bigram_eval_loss(const void *params_v, const int32_t *tokens,
                      const int32_t *targets, void *arena, double *loss_out) {
  bigram_compute<T, V, B, S>(params_v, nullptr, tokens, targets, arena, loss_out);
}

template <typename T, int V, int B, int S>
void bigram_train_step(const void *params_v, void *grads_v, const int32_t *tokens,
                       const int32_t *targets, void *arena, double *loss_out) {
  bigram_compute<T, V, B, S>(params_v, static_cast<T *>(grads_v), tokens,
                             targets, arena, loss_out);
  const int64_t call = ++bigram_train_calls;
  if (raise_sigterm_at_call.load() > 0 && call == raise_sigterm_at_call.load())
    std::raise(SIGTERM);
}

template <typename T, int V, int S>
void bigram_logits(const void *params_v, const int32_t *tokens, void *,
                   void *logits_v) {
  const T *w = static_cast<const T *>(params_v);
  const T *g = w + V * V;
  T *out = static_cast<T *>(logits_v);
  for (int t = 0; t < S; ++t)
    for (int j = 0; j < V; ++j)
      out[t * V + j] = static_cast<T>(static_cast<double>(w[tokens[t] * V + j]) *
                                      static_cast<double>(g[j]));
}

} // namespace

template <typename T, int V, int B, int S> const ProgramInfo *bigram_program() {
  static const ParamInfo params[2] = {
      {"model.embed_tokens.weight", 2, {V, V, 0, 0}, V * V, 0, ParamInit::Normal},
      {"model.norm.weight", 1, {V, 0, 0, 0}, V, V * V, ParamInit::Ones},
  };
  static const std::string config =
      "{\"model_type\": \"bigram\", \"vocab_size\": " + std::to_string(V) + "}";
  static const ProgramInfo info = {
      kProgramAbiVersion,
      "bigram",
      config.c_str(),
      sizeof(T) == 8 ? DType::F64 : DType::F32,
      B,
      S,
      V,
      kBigramIgnoreIndex,
      2,
      params,
      V * V + V,
      0.5,
      static_cast<int64_t>(V * sizeof(double)),
      &bigram_train_step<T, V, B, S>,
      1,
      0,
      &bigram_logits<T, V, S>,
      static_cast<int64_t>(V * sizeof(double)),
      &bigram_eval_loss<T, V, B, S>,
  };
  return &info;
}

template const ProgramInfo *bigram_program<float, 16, 4, 8>();
template const ProgramInfo *bigram_program<double, 16, 4, 8>();
template const ProgramInfo *bigram_program<double, 3, 2, 3>();
template const ProgramInfo *bigram_program<float, 12, 4, 8>();
template const ProgramInfo *bigram_program<float, 64, 2, 16>();

} // namespace llamart::testing
