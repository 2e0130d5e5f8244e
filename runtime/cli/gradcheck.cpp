// Finite-difference gradient check of a compiled float64 program.
#include "runtime/cli/gradcheck.h"

#include "runtime/program/aligned_buffer.h"
#include "runtime/program/param_store.h"
#include "runtime/program/rng.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <vector>

namespace llamart::cli {

bool run_gradcheck(const ProgramInfo &program, const GradcheckOptions &o) {
  if (program.dtype != DType::F64)
    throw std::runtime_error(
        "gradcheck needs a float64 program (compile with --dtype f64): float32 "
        "finite differences cannot resolve the gradients");
  if (!(o.step > 0) || !(o.tolerance > 0))
    throw std::runtime_error("gradcheck: --step and --tolerance must be > 0");

  const int64_t n = program.param_numel;
  AlignedBuffer<double> params(n), grads(n);
  init_params<double>(program, o.seed, params.data());
  Rng rng(derive_seed(o.seed, "gradcheck"));
  for (int32_t t = 0; t < program.num_params; ++t) {
    const ParamInfo &p = program.params[t];
    if (p.init != ParamInit::Ones) {
      const double scale = o.weight_std / program.init_std;
      for (int64_t i = 0; i < p.numel; ++i)
        params[p.offset + i] *= scale;
      continue;
    }
    for (int64_t i = 0; i < p.numel; i += 2) {
      double z0, z1;
      rng.normal_pair(z0, z1);
      params[p.offset + i] += o.norm_jitter * z0;
      if (i + 1 < p.numel)
        params[p.offset + i + 1] += o.norm_jitter * z1;
    }
  }
  const int64_t tokens_n = program.batch * program.seq_len;
  std::vector<int32_t> tokens(tokens_n), targets(tokens_n);
  for (int64_t i = 0; i < tokens_n; ++i) {
    tokens[i] = static_cast<int32_t>(rng.below(program.vocab_size));
    targets[i] = static_cast<int32_t>(rng.below(program.vocab_size));
  }
  AlignedBuffer<unsigned char> arena(program.train_arena_bytes);
  AlignedBuffer<double> scratch_grads(n);

  double loss = 0;
  program.train_step(params.data(), grads.data(), tokens.data(), targets.data(),
                     arena.data(), &loss);
  auto loss_at = [&](int64_t i, double value) {
    const double saved = params[i];
    params[i] = value;
    double l = 0;
    program.train_step(params.data(), scratch_grads.data(), tokens.data(),
                       targets.data(), arena.data(), &l);
    params[i] = saved;
    return l;
  };

  std::printf("gradcheck: loss %.12g, %d tensors, step %g, tolerance %g\n", loss,
              program.num_params, o.step, o.tolerance);
  bool ok = true;
  double worst = 0;
  int64_t checked = 0;
  for (int32_t t = 0; t < program.num_params; ++t) {
    const ParamInfo &p = program.params[t];
    const int64_t count = o.max_per_tensor > 0 ? std::min(o.max_per_tensor, p.numel) : p.numel;
    // Spread the sampled elements over the whole tensor.
    const int64_t stride = std::max<int64_t>(1, p.numel / count);
    double max_err = 0, max_ref = 0;
    for (int64_t k = 0; k < count; ++k) {
      const int64_t i = p.offset + k * stride;
      const double x = params[i];
      const double fd = (loss_at(i, x + o.step) - loss_at(i, x - o.step)) / (2 * o.step);
      max_err = std::max(max_err, std::fabs(fd - grads[i]));
      max_ref = std::max(max_ref, std::fabs(grads[i]));
    }
    for (int64_t i = p.offset; i < p.offset + p.numel; ++i)
      max_ref = std::max(max_ref, std::fabs(grads[i]));
    const double rel = max_err / std::max(max_ref, 1e-12);
    const bool pass = rel <= o.tolerance && std::isfinite(rel);
    ok &= pass;
    worst = std::max(worst, rel);
    checked += count;
    std::printf("  %-55s %8lld elems  max|g| %.3e  rel err %.3e  %s\n", p.name,
                static_cast<long long>(count), max_ref, rel, pass ? "PASS" : "FAIL");
  }
  std::printf("gradcheck: %lld elements, max relative error %.3e: %s\n",
              static_cast<long long>(checked), worst, ok ? "PASS" : "FAIL");
  return ok;
}

} // namespace llamart::cli
