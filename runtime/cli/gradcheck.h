// `gradcheck`: every analytic gradient of a float64 program against central
// finite differences of its own loss, (L(p + h) - L(p - h)) / 2h, element by
// element. The compiled backward and the forward share no code path beyond
// the forward kernels, so agreement checks autodiff, remat and every
// backward kernel at once.
#pragma once
#include "runtime/program/program.h"

#include <cstdint>
#include <string>

namespace llamart::cli {

struct GradcheckOptions {
  uint64_t seed = 1234;      // weights (init_params) and the random batch
  double step = 1e-6;        // h
  double tolerance = 1e-6;   // max per-tensor relative error allowed
  int64_t max_per_tensor = 0; // check at most this many elements per tensor (0: all)
  double norm_jitter = 0.1;  // norm weights = 1 + jitter * N(0,1), so their
                             // gradients are not those of an identity gain
  double weight_std = 0.2;   // matrices ~ N(0, weight_std): at the training
                             // init (0.02) attention is nearly uniform and the
                             // q/k gradients drown in finite-difference noise
};

// Prints one line per tensor and a summary; returns true iff every tensor's
// max |fd - analytic| / max(max |analytic|, 1e-12) is within tolerance.
// Throws std::runtime_error for a float32 program.
bool run_gradcheck(const ProgramInfo &program, const GradcheckOptions &options);

} // namespace llamart::cli
