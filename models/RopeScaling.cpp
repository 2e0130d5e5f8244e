// RoPE scaling: the inverse frequencies and cos/sin factor of each rope type,
// transcribed in double from the formulas transformers' modeling_rope_utils
// applies (transformers >= 4.51 for yarn's original_max_position_embeddings
// and mscale). The float64 Python transcription in
// test/integration/llama_torch.py is written separately and checks these.
#include "models/LlamaConfig.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace llama {
namespace {

constexpr double kPi = 3.14159265358979323846;

// theta^(-2i/d) for the d/2 pairs: RoPE without scaling.
std::vector<double> defaultFrequencies(double theta, int64_t headDim) {
  std::vector<double> f(static_cast<size_t>(headDim / 2));
  for (size_t i = 0; i < f.size(); ++i)
    f[i] = std::pow(theta, -2.0 * double(i) / double(headDim));
  return f;
}

// YaRN's factor: transformers reads max_position_embeddings /
// original_max_position_embeddings when the latter is given.
double yarnFactor(const LlamaConfig &c) {
  const RopeScaling &s = c.rope_scaling;
  if (s.original_max_position_embeddings)
    return double(c.max_position_embeddings) / double(*s.original_max_position_embeddings);
  return s.factor;
}

// YaRN's magnitude correction 0.1 m ln(scale) + 1 (1 for scale <= 1).
double yarnMscale(double scale, double m) { return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }

bool positiveFinite(double v) { return std::isfinite(v) && v > 0.0; }

} // namespace

const char *ropeTypeName(RopeType t) {
  switch (t) {
  case RopeType::Default: return "default";
  case RopeType::Linear: return "linear";
  case RopeType::Dynamic: return "dynamic";
  case RopeType::Yarn: return "yarn";
  case RopeType::Llama3: return "llama3";
  }
  return "?";
}

bool operator==(const RopeScaling &a, const RopeScaling &b) {
  return a.type == b.type && a.factor == b.factor &&
         a.original_max_position_embeddings == b.original_max_position_embeddings &&
         a.low_freq_factor == b.low_freq_factor && a.high_freq_factor == b.high_freq_factor &&
         a.attention_factor == b.attention_factor && a.beta_fast == b.beta_fast &&
         a.beta_slow == b.beta_slow && a.mscale == b.mscale &&
         a.mscale_all_dim == b.mscale_all_dim && a.truncate == b.truncate;
}

std::optional<std::string> findRopeScalingProblem(const LlamaConfig &c) {
  const RopeScaling &s = c.rope_scaling;
  const std::string where = std::string("rope_scaling (") + ropeTypeName(s.type) + "): ";
  if (s.type == RopeType::Default)
    return std::nullopt;
  if (!positiveFinite(s.factor))
    return where + "factor must be finite and > 0 (got " + std::to_string(s.factor) + ")";
  if (s.original_max_position_embeddings && *s.original_max_position_embeddings <= 0)
    return where + "original_max_position_embeddings must be > 0 (got " +
           std::to_string(*s.original_max_position_embeddings) + ")";
  switch (s.type) {
  case RopeType::Dynamic:
    if (c.head_dim <= 2)
      return where + "head_dim must be > 2 (the NTK base grows by a power d/(d-2))";
    break;
  case RopeType::Llama3:
    if (!s.original_max_position_embeddings)
      return where + "original_max_position_embeddings is required";
    if (!positiveFinite(s.low_freq_factor) || !positiveFinite(s.high_freq_factor) ||
        !(s.high_freq_factor > s.low_freq_factor))
      return where + "needs 0 < low_freq_factor < high_freq_factor (got " +
             std::to_string(s.low_freq_factor) + ", " + std::to_string(s.high_freq_factor) + ")";
    break;
  case RopeType::Yarn: {
    for (auto [name, v] : {std::pair("attention_factor", s.attention_factor),
                           std::pair("beta_fast", s.beta_fast), std::pair("beta_slow", s.beta_slow)})
      if (v && !positiveFinite(*v))
        return where + name + " must be finite and > 0 (got " + std::to_string(*v) + ")";
    for (auto [name, v] : {std::pair("mscale", s.mscale), std::pair("mscale_all_dim", s.mscale_all_dim)})
      if (v && !std::isfinite(*v))
        return where + name + " must be finite";
    if (!positiveFinite(yarnFactor(c)))
      return where + "the scaling factor must be > 0";
    break;
  }
  default:
    break;
  }
  return std::nullopt;
}

std::vector<double> ropeInverseFrequencies(const LlamaConfig &c, int64_t seqLen) {
  validate(c);
  const RopeScaling &s = c.rope_scaling;
  const int64_t d = c.head_dim;
  std::vector<double> f = defaultFrequencies(c.rope_theta, d);
  switch (s.type) {
  case RopeType::Default:
    break;
  case RopeType::Linear:
    for (double &v : f)
      v /= s.factor;
    break;
  case RopeType::Dynamic: {
    // NTK-aware: the base grows with the sequence past max_position_embeddings.
    const double m = double(c.max_position_embeddings);
    const double len = std::max<double>(double(seqLen), m);
    const double base =
        c.rope_theta * std::pow(s.factor * len / m - (s.factor - 1.0), double(d) / double(d - 2));
    f = defaultFrequencies(base, d);
    break;
  }
  case RopeType::Yarn: {
    const double factor = yarnFactor(c);
    const double original = double(s.original_max_position_embeddings.value_or(c.max_position_embeddings));
    const double beta_fast = s.beta_fast.value_or(32.0), beta_slow = s.beta_slow.value_or(1.0);
    // The pair index at which a wave turns `rotations` times over the
    // original context.
    auto correctionDim = [&](double rotations) {
      return double(d) * std::log(original / (rotations * 2.0 * kPi)) / (2.0 * std::log(c.rope_theta));
    };
    double low = correctionDim(beta_fast), high = correctionDim(beta_slow);
    if (s.truncate.value_or(true)) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, double(d - 1));
    if (low == high)
      high += 0.001; // transformers' guard against a zero-width ramp
    for (size_t i = 0; i < f.size(); ++i) {
      const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
      const double extrapolate = 1.0 - ramp; // weight of the unscaled frequency
      f[i] = f[i] / factor * (1.0 - extrapolate) + f[i] * extrapolate;
    }
    break;
  }
  case RopeType::Llama3: {
    const double original = double(*s.original_max_position_embeddings);
    const double lowWave = original / s.low_freq_factor, highWave = original / s.high_freq_factor;
    for (double &v : f) {
      const double wave = 2.0 * kPi / v;
      if (wave > lowWave) {
        v /= s.factor; // long waves: interpolated
      } else if (!(wave < highWave)) {
        const double smooth =
            (original / wave - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        v = (1.0 - smooth) * v / s.factor + smooth * v;
      } // short waves: unchanged
    }
    break;
  }
  }
  return f;
}

double ropeAttentionFactor(const LlamaConfig &c) {
  validate(c);
  const RopeScaling &s = c.rope_scaling;
  if (s.type != RopeType::Yarn)
    return 1.0;
  if (s.attention_factor)
    return *s.attention_factor;
  const double factor = yarnFactor(c);
  if (s.mscale && s.mscale_all_dim && *s.mscale != 0.0 && *s.mscale_all_dim != 0.0)
    return yarnMscale(factor, *s.mscale) / yarnMscale(factor, *s.mscale_all_dim);
  return yarnMscale(factor, 1.0);
}

} // namespace llama
