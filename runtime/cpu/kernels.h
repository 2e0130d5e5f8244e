// CPU kernels of the llama runtime: the forward and backward of every op the
// `llama` dialect lowers to. Generated step functions call these with constant
// shapes and pointers into one arena. No MLIR, no allocation inside a kernel.
//
// Conventions (all tensors dense, row-major, contiguous):
//   T is float or double (fp32 training, fp64 for gradient checks).
//   "rows" = product of all leading dims; the last dim is the feature dim.
//   Backward kernels OVERWRITE their gradient outputs (never accumulate);
//   the compiler adds gradients explicitly with add().
//   Threads: OpenMP parallel loops inside each kernel.
#pragma once
#include <cstdint>

namespace llamart::cpu {

// out[r, :] = table[ids[r], :] for r < n_tokens. ids outside [0, vocab) throw
// std::runtime_error naming the token and position (corrupt data must not
// read out of bounds).
template <typename T>
void embedding_forward(const T *table, const int32_t *ids, T *out,
                       int64_t n_tokens, int64_t vocab, int64_t dim);
// dtable = scatter-add of dout rows at ids (dtable fully overwritten first).
template <typename T>
void embedding_backward(const T *dout, const int32_t *ids, T *dtable,
                        int64_t n_tokens, int64_t vocab, int64_t dim);

// y = x * rsqrt(mean(x^2) + eps) * w, per row of length dim.
template <typename T>
void rms_norm_forward(const T *x, const T *w, T *y, int64_t rows, int64_t dim,
                      double eps);
// dx and dw (dw summed over rows) from dy, x, w.
template <typename T>
void rms_norm_backward(const T *dy, const T *x, const T *w, T *dx, T *dw,
                       int64_t rows, int64_t dim, double eps);

// C[b] = op(A[b]) @ op(B[b]) for b < batch, op = transpose if flag set.
// op(A) is M x K, op(B) is K x N, C is M x N. A is stored M x K (or K x M
// when transpose_a), B stored K x N (or N x K when transpose_b).
// If b_broadcast, B has no batch dim (same matrix for every b).
// GEMMs go to cblas (OpenBLAS).
template <typename T>
void matmul(const T *a, const T *b, T *c, int64_t batch, int64_t m, int64_t n,
            int64_t k, bool transpose_a, bool transpose_b, bool b_broadcast);

// Rotary embedding, Hugging Face pairing (rotate halves: i with i + d/2),
// x is [batch, seq, heads, head_dim], position of token t is t, pair i turns
// by t * inv_freq[i] with inv_freq[i] = theta^(-2i/d), i < d/2, unless
// inv_freq is given (RoPE scaling: d/2 frequencies); cos and sin are scaled
// by attention_factor (YaRN).
template <typename T>
void rope_forward(const T *x, T *y, int64_t batch, int64_t seq, int64_t heads,
                  int64_t head_dim, double theta, const double *inv_freq = nullptr,
                  double attention_factor = 1.0);
// The transpose of the forward linear map (the inverse rotation, times
// attention_factor).
template <typename T>
void rope_backward(const T *dy, T *dx, int64_t batch, int64_t seq,
                   int64_t heads, int64_t head_dim, double theta,
                   const double *inv_freq = nullptr, double attention_factor = 1.0);

// Causal attention with grouped KV heads.
// q, out: [batch, seq, n_heads, head_dim]; k, v: [batch, seq, n_kv_heads, head_dim]
// query head h uses kv head h / (n_heads / n_kv_heads).
// lse: [batch, n_heads, seq] = logsumexp over keys j <= i of scale * q_i.k_j
// (kept for backward; the T x T matrix is never stored beyond one row/tile).
template <typename T>
void attention_forward(const T *q, const T *k, const T *v, T *out, T *lse,
                       int64_t batch, int64_t seq, int64_t n_heads,
                       int64_t n_kv_heads, int64_t head_dim, double scale);
// dq, dk, dv overwritten (dk, dv summed over the query heads of a group).
template <typename T>
void attention_backward(const T *dout, const T *q, const T *k, const T *v,
                        const T *out, const T *lse, T *dq, T *dk, T *dv,
                        int64_t batch, int64_t seq, int64_t n_heads,
                        int64_t n_kv_heads, int64_t head_dim, double scale);

// y = silu(gate) * up, elementwise over n.
template <typename T>
void swiglu_forward(const T *gate, const T *up, T *y, int64_t n);
template <typename T>
void swiglu_backward(const T *dy, const T *gate, const T *up, T *dgate, T *dup,
                     int64_t n);

// y = a + b, elementwise over n (y may alias a or b).
template <typename T> void add(const T *a, const T *b, T *y, int64_t n);
// y = inputs[0] + inputs[1] + ... (left to right), elementwise over n; y may
// alias any input.
template <typename T>
void sum(const T *const *inputs, int64_t count, T *y, int64_t n);

// loss[0] = mean over rows with targets != ignore_index of
// logsumexp(logits[r]) - logits[r, targets[r]]; 0 if every row is ignored.
// targets outside [0, vocab) that are not ignore_index throw
// std::runtime_error naming the row and the value.
template <typename T>
void cross_entropy_forward(const T *logits, const int32_t *targets, T *loss,
                           int64_t rows, int64_t vocab, int64_t ignore_index);
// dlogits = dloss[0] * (softmax(logits) - onehot(target)) / n_valid for valid
// rows, 0 for ignored rows.
template <typename T>
void cross_entropy_backward(const T *dloss, const T *logits,
                            const int32_t *targets, T *dlogits, int64_t rows,
                            int64_t vocab, int64_t ignore_index);

// ---- Fused kernels (llama-fuse) -------------------------------------------
// rms_norm_forward that also stores rstd[r] = 1 / sqrt(mean(x_r^2) + eps).
template <typename T>
void rms_norm_forward_rstd(const T *x, const T *w, T *y, T *rstd, int64_t rows,
                           int64_t dim, double eps);
// sum = a + b (sum may alias a or b), then rms_norm_forward_rstd of sum.
template <typename T>
void add_rms_norm_forward(const T *a, const T *b, const T *w, T *sum, T *y,
                          T *rstd, int64_t rows, int64_t dim, double eps);
// rms_norm_backward from the forward's rstd; dx = vjp + accumulate when
// accumulate is not null (dx may alias accumulate or dy).
template <typename T>
void rms_norm_backward_rstd(const T *dy, const T *x, const T *w,
                            const T *rstd, const T *accumulate, T *dx, T *dw,
                            int64_t rows, int64_t dim);
// cross_entropy_forward and cross_entropy_backward with dloss[0] = dloss, in
// one pass; dlogits may alias logits.
template <typename T>
void cross_entropy_fused(const T *logits, const int32_t *targets, T *loss,
                         T *dlogits, int64_t rows, int64_t vocab,
                         int64_t ignore_index, double dloss);

// ---- Generation with a KV cache -------------------------------------------
// rope_forward for the chunk of tokens at positions pos0 .. pos0 + chunk - 1
// (bit-identical angles); pos0 + chunk must not exceed max_positions.
template <typename T>
void rope_forward_at(const T *x, T *y, int64_t batch, int64_t chunk,
                     int64_t heads, int64_t head_dim, double theta, int64_t pos0,
                     int64_t max_positions, const double *inv_freq = nullptr,
                     double attention_factor = 1.0);
// Appends k, v [batch, chunk, kv_heads, head_dim] to the caches [batch,
// capacity, kv_heads, head_dim] at rows pos0.., then out[b, i, h] = causal
// attention of q[b, i, h] over cache rows 0 .. pos0 + i of KV head
// h / (heads / kv_heads). Throws when pos0 + chunk exceeds the capacity.
template <typename T>
void attention_cached_forward(const T *q, const T *k, const T *v, T *k_cache,
                              T *v_cache, T *out, int64_t batch, int64_t chunk,
                              int64_t heads, int64_t kv_heads, int64_t head_dim,
                              int64_t capacity, int64_t pos0, double scale);

// ---- Partitioned programs (vocab_parallel.cpp) ------------------------------
// Vocabulary-parallel embedding: `table` holds rows [row0, row0 + rows) of a
// `vocab`-row table; ids outside that range give zero rows (forward) and are
// skipped (backward; dtable is [rows, dim], overwritten).
template <typename T>
void embedding_forward_shard(const T *table, const int32_t *ids, T *out,
                             int64_t n_tokens, int64_t vocab, int64_t row0,
                             int64_t rows, int64_t dim);
template <typename T>
void embedding_backward_shard(const T *dout, const int32_t *ids, T *dtable,
                              int64_t n_tokens, int64_t vocab, int64_t row0,
                              int64_t rows, int64_t dim);
// max[r] = max_v logits[r, v] over the local vocabulary.
template <typename T>
void logits_row_max(const T *logits, T *max, int64_t rows, int64_t vocab);
// sums[r] = (sum_v exp(logits[r, v] - max[r]), logits[r, target - col0] when
// the target is in [col0, col0 + vocab_local) and scored, else 0); targets
// are checked against the whole vocabulary.
template <typename T>
void ce_partial_sums(const T *logits, const T *max, const int32_t *targets,
                     T *sums, int64_t rows, int64_t vocab_local, int64_t col0,
                     int64_t vocab, int64_t ignore_index);
template <typename T>
void ce_partial_sums_backward(const T *dsums, const T *logits, const T *max,
                              const int32_t *targets, T *dlogits, int64_t rows,
                              int64_t vocab_local, int64_t col0,
                              int64_t ignore_index);
// *count = number of targets != ignore_index.
template <typename T>
void count_valid(const int32_t *targets, T *count, int64_t n, int64_t ignore_index);
// *loss = sum over scored rows of (log sums[r,0] + max[r] - sums[r,1]) / *count.
template <typename T>
void ce_combine(const T *max, const T *sums, const int32_t *targets,
                const T *count, T *loss, int64_t rows, int64_t ignore_index);
template <typename T>
void ce_combine_backward(const T *dloss, const T *sums, const int32_t *targets,
                         const T *count, T *dsums, int64_t rows,
                         int64_t ignore_index);

// Explicit instantiations for float and double live in the .cpp files.
} // namespace llamart::cpu
