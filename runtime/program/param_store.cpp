#include "runtime/program/param_store.h"

#include "runtime/program/program_check.h"
#include "runtime/program/rng.h"

#include <algorithm>
#include <set>
#include <stdexcept>
#include <type_traits>

namespace llamart {

template <typename T>
void init_params(const ProgramInfo &program, uint64_t seed, T *params) {
  std::fill(params, params + program.param_numel, T(0));
  // Params are independent streams, so they can be filled in parallel and a
  // param's values depend only on (seed, its name, its size).
#pragma omp parallel for schedule(dynamic, 1)
  for (int32_t p = 0; p < program.num_params; ++p) {
    const ParamInfo &info = program.params[p];
    T *out = params + info.offset;
    if (info.init == ParamInit::Ones) {
      std::fill(out, out + info.numel, T(1));
      continue;
    }
    Rng rng(derive_seed(seed, info.name));
    const double std_dev = program.init_std;
    for (int64_t i = 0; i < info.numel; i += 2) {
      double z0, z1;
      rng.normal_pair(z0, z1);
      out[i] = static_cast<T>(z0 * std_dev);
      if (i + 1 < info.numel)
        out[i + 1] = static_cast<T>(z1 * std_dev);
    }
  }
}

template <typename T>
void add_param_tensors(const ProgramInfo &program, const T *flat,
                       const std::string &suffix, ckpt::File &file) {
  for (int32_t p = 0; p < program.num_params; ++p) {
    const ParamInfo &info = program.params[p];
    const T *src = flat + info.offset;
    std::vector<int64_t> shape = param_shape(info);
    ckpt::Tensor t;
    if constexpr (std::is_same_v<T, float>)
      t = ckpt::Tensor::from_f32(std::move(shape), src);
    else
      t = ckpt::Tensor::from_f64(std::move(shape), src);
    file.tensors[std::string(info.name) + suffix] = std::move(t);
  }
}

template <typename T>
void load_param_tensors(const ProgramInfo &program, const ckpt::File &file,
                        const std::string &path,
                        const std::vector<ParamTensorSet<T>> &sets) {
  std::set<std::string> expected;
  for (const auto &set : sets) {
    for (int32_t p = 0; p < program.num_params; ++p) {
      const ParamInfo &info = program.params[p];
      const std::string name = std::string(info.name) + set.suffix;
      expected.insert(name);
      auto it = file.tensors.find(name);
      if (it == file.tensors.end())
        throw std::runtime_error(path + ": missing tensor " + name + " (model " +
                                 program.model_name + " expects it)");
      const ckpt::Tensor &tensor = it->second;
      const std::vector<int64_t> shape = param_shape(info);
      if (tensor.shape != shape)
        throw std::runtime_error(path + ": tensor " + name + " has shape " +
                                 shape_string(tensor.shape) + ", model " +
                                 program.model_name + " expects " +
                                 shape_string(shape));
      T *dest = set.dest + info.offset;
      if (std::is_same_v<T, float> && tensor.dtype == ckpt::StDType::F32) {
        std::copy_n(tensor.data.data(), info.numel * sizeof(T),
                    reinterpret_cast<uint8_t *>(dest));
      } else if (std::is_same_v<T, double> &&
                 tensor.dtype == ckpt::StDType::F64) {
        std::copy_n(tensor.data.data(), info.numel * sizeof(T),
                    reinterpret_cast<uint8_t *>(dest));
      } else {
        std::vector<double> values;
        try {
          values = tensor.to_f64();
        } catch (const std::exception &e) {
          throw std::runtime_error(path + ": tensor " + name +
                                   " is not a floating-point tensor (" +
                                   e.what() + ")");
        }
        for (int64_t i = 0; i < info.numel; ++i)
          dest[i] = static_cast<T>(values[static_cast<size_t>(i)]);
      }
    }
  }
  for (const auto &entry : file.tensors)
    if (!expected.count(entry.first))
      throw std::runtime_error(path + ": unexpected tensor " + entry.first +
                               " (model " + program.model_name +
                               " has no such parameter)");
}

#define LLAMART_INSTANTIATE(T)                                                 \
  template void init_params<T>(const ProgramInfo &, uint64_t, T *);            \
  template void add_param_tensors<T>(const ProgramInfo &, const T *,           \
                                     const std::string &, ckpt::File &);       \
  template void load_param_tensors<T>(const ProgramInfo &, const ckpt::File &, \
                                      const std::string &,                     \
                                      const std::vector<ParamTensorSet<T>> &);
LLAMART_INSTANTIATE(float)
LLAMART_INSTANTIATE(double)
#undef LLAMART_INSTANTIATE

} // namespace llamart
