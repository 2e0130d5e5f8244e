// Algorithm-based fault tolerance (Huang & Abraham 1984) for the GEMMs of a
// training step: silent data corruption (a flipped bit in a core's datapath
// or in memory between the GEMM and its consumer) is caught by a checksum
// identity that costs O(MK + KN + MN) against the GEMM's O(MNK).
//
// For C = op(A) op(B) (M x K times K x N) and a fixed vector r of weights in
// [1, 2), every row i must satisfy
//     s_i = sum_j C_ij r_j   ==   t_i = sum_k op(A)_ik (op(B) r)_k
// up to rounding. Both sides are evaluated in double. The tolerance is the
// worst-case rounding bound, not an estimate, so a clean GEMM can never fail:
// C_ij computed in precision u (any summation order, with or without FMA)
// is off by at most gamma_K (|A||B|)_ij, gamma_n = n u / (1 - n u) (Higham,
// "Accuracy and Stability of Numerical Algorithms", 3.5), hence
//     |s_i - exact_i| <= gamma_K(u) p_i,   p_i = sum_k |op(A)_ik| (|op(B)| r)_k,
// and the double evaluation of s, t and p adds gamma_{N+K+1}(2^-53) p_i
// (sum_j |C_ij| r_j <= (1 + gamma_K) p_i). The check uses twice the sum, plus
// an absolute term for products that underflow. A corrupted element moves s_i
// by |delta| r_j >= |delta|, so it is caught whenever |delta| exceeds the
// row's bound; a non-finite element always fails the check.
//
// What that means for a bit flip: turning on a clear high exponent bit (what
// flip_high_exponent_bit does, and what --inject bitflip@N injects) scales a
// nonzero value by at least 2^64 for every value of magnitude below 2^63, far
// beyond any rounding bound. A flip that shrinks a value (1 -> 0) changes it
// by at most its own magnitude, which is caught only when that magnitude
// exceeds the row's bound (about K^2 N u |a||b| for fp32): ABFT cannot see an
// error that is the size of rounding noise, and no check can.
//
// State (whether checks run, the failure count, an armed injection) is
// process-wide: matmul is entered from one thread at a time (matmul.cpp), and
// the counters are atomics. The checks themselves are deterministic (fixed r,
// fixed summation order per row) and use per-thread scratch that only grows.
#pragma once
#include <cstdint>

namespace llamart::cpu {

struct GemmCheckStats {
  int64_t checked = 0; // GEMMs verified since gemm_check_begin
  int64_t failed = 0;  // of those, how many failed their checksum
  bool bitflip_delivered = false; // the armed injection hit a GEMM output
};

// Starts a step: resets the counters, turns verification on or off, and
// disarms any injection.
void gemm_check_begin(bool verify);

// Arms a fault: one of the next GEMMs (the (seed % 4)-th, counting from 0)
// gets one element of its output (chosen from the seed) passed through
// flip_high_exponent_bit right after the GEMM wrote it, before any check.
void gemm_inject_bitflip(uint64_t seed);

// Ends the step: returns the counters and turns checks and injection off.
GemmCheckStats gemm_check_end();

// The hook matmul calls after every GEMM it issues (C row-major M x N, A and
// B stored row-major as op() expects). Does nothing unless a step enabled
// checks or armed an injection.
template <typename T>
void after_gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n,
                int64_t k, const T *a, const T *b, T *c);

// The checksum test of one GEMM, independent of the global state. Returns
// true when every row passes. `worst` (optional) receives the largest
// |s_i - t_i| / tolerance_i over the rows (NaN-safe: non-finite rows give
// infinity).
template <typename T>
bool gemm_checksum_ok(bool transpose_a, bool transpose_b, int64_t m, int64_t n,
                      int64_t k, const T *a, const T *b, const T *c,
                      double *worst = nullptr);

// Sets the highest clear bit of x's exponent field (for an exponent of all
// ones, which holds only for Inf / NaN, clears the top bit instead): the
// single-bit upset with the largest effect on a finite value.
template <typename T> void flip_high_exponent_bit(T &x);

} // namespace llamart::cpu
