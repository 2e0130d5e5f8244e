// Helpers of the emulated kernel tests (cuda_kernels_test,
// cuda_kernels_attention_test): inputs rounded to the storage type with
// their exact values in double, NaN-poisoned outputs, relative L2 errors.
#pragma once

#include "runtime/cuda/kernels/common.cuh"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace cuda_test {

/// Random values rounded to T, and the same values in double.
template <typename T> struct Buf {
  std::vector<T> dev;
  std::vector<double> ref;
  Buf(size_t n, std::mt19937 &rng, double scale = 1.0) : dev(n), ref(n) {
    std::normal_distribution<float> d(0.0f, float(scale));
    for (size_t i = 0; i < n; ++i) {
      dev[i] = llk::from_float<T>(d(rng));
      ref[i] = llk::to_float(dev[i]);
    }
  }
};
template <typename T> std::vector<T> poisoned(size_t n) {
  return std::vector<T>(n, llk::from_float<T>(std::numeric_limits<float>::quiet_NaN()));
}
template <typename T> std::vector<double> widen(const std::vector<T> &v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out[i] = llk::to_float(v[i]);
  return out;
}

/// ||got - want|| / ||want||, NaN-aware (a NaN anywhere fails).
inline double rel_l2(const std::vector<double> &got, const std::vector<double> &want) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i]))
      return std::numeric_limits<double>::infinity();
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / (den > 0.0 ? den : 1.0));
}

} // namespace cuda_test
