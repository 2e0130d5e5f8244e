#include "runtime/train/distributed.h"

#include "runtime/comm/comm.h"

#include <algorithm>
#include <stdexcept>

namespace llamart::train {

using comm::Axis;

GridPlace grid_place(const ProgramInfo &program) {
  GridPlace place;
  if (!is_partitioned(program))
    return place;
  if (!comm::initialized() || comm::grid_dp() != program.grid_dp ||
      comm::grid_tp() != program.grid_tp)
    throw std::runtime_error(
        std::string("program ") + program.model_name + " is partitioned for dp=" +
        std::to_string(program.grid_dp) + " x tp=" + std::to_string(program.grid_tp) +
        " but the process grid is dp=" + std::to_string(comm::grid_dp()) +
        " x tp=" + std::to_string(comm::grid_tp()) +
        " (comm::init must be called with the program's grid first)");
  place.partitioned = true;
  place.world_rank = comm::rank(Axis::World);
  place.dp_rank = comm::rank(Axis::DP);
  place.tp_rank = comm::rank(Axis::TP);
  return place;
}

int64_t agree_max(const GridPlace &grid, int64_t value, const char *what) {
  if (grid.partitioned)
    comm::all_reduce(&value, 1, comm::ReduceOp::Max, Axis::World, what);
  return value;
}

void broadcast_from_root(const GridPlace &grid, void *bytes, int64_t n,
                         const char *what) {
  if (grid.partitioned)
    comm::broadcast(bytes, n, 0, Axis::World, what);
}

std::string broadcast_from_root(const GridPlace &grid, const std::string &value,
                                const char *what) {
  if (!grid.partitioned)
    return value;
  int64_t size = static_cast<int64_t>(value.size());
  comm::broadcast(&size, sizeof size, 0, Axis::World, what);
  std::string out = grid.root() ? value : std::string(static_cast<size_t>(size), '\0');
  if (size > 0)
    comm::broadcast(out.data(), size, 0, Axis::World, what);
  return out;
}

template <typename T>
void gather_full_params(const ProgramInfo &local, const FullProgramView &view,
                        const T *local_buf, T *full_buf) {
  for (int32_t p = 0; p < local.num_params; ++p) {
    const ParamInfo &info = local.params[p];
    const T *src = local_buf + info.offset;
    T *dst = full_buf ? full_buf + view.param(p).offset : nullptr;
    if (effective_shard_dim(local, info) < 0) {
      if (comm::rank(Axis::TP) == 0)
        std::copy_n(src, info.numel, dst);
      continue;
    }
    const SliceGeometry g = slice_geometry(local, info);
    comm::gather(src, dst, g.outer, g.chunk, /*root=*/0, Axis::TP, info.name);
  }
}

#define LLAMART_INSTANTIATE(T)                                                 \
  template void gather_full_params<T>(const ProgramInfo &,                     \
                                      const FullProgramView &, const T *, T *);
LLAMART_INSTANTIATE(float)
LLAMART_INSTANTIATE(double)
#undef LLAMART_INSTANTIATE

} // namespace llamart::train
