#include "runtime/program/partition.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace llamart {

bool is_partitioned(const ProgramInfo &program) {
  return static_cast<int64_t>(program.grid_dp) * program.grid_tp > 1;
}

int32_t effective_shard_dim(const ProgramInfo &program, const ParamInfo &param) {
  return program.grid_tp > 1 ? param.shard_dim : -1;
}

SliceGeometry slice_geometry(const ProgramInfo &program, const ParamInfo &param) {
  const int32_t dim = effective_shard_dim(program, param);
  if (dim < 0)
    return {1, param.numel};
  int64_t outer = 1;
  for (int32_t d = 0; d < dim; ++d)
    outer *= param.shape[d];
  return {outer, param.numel / outer};
}

FullProgramView::FullProgramView(const ProgramInfo &local)
    : params_(local.params, local.params + local.num_params), program_(local) {
  int64_t offset = 0;
  for (ParamInfo &p : params_) {
    int64_t numel = 1;
    for (int32_t d = 0; d < p.rank; ++d) {
      p.shape[d] = p.full_shape[d];
      numel *= p.full_shape[d];
    }
    p.numel = numel;
    p.offset = offset;
    p.shard_dim = -1;
    offset += numel;
  }
  program_.params = params_.data();
  program_.param_numel = offset;
  program_.full_param_numel = offset;
  program_.batch = local.global_batch;
  program_.grid_dp = 1;
  program_.grid_tp = 1;
  program_.sequence_parallel = 0;
  // Nothing runs on the view; null entry points make any attempt fail loudly.
  program_.train_arena_bytes = program_.logits_arena_bytes = program_.eval_arena_bytes = 0;
  program_.train_step = nullptr;
  program_.logits = nullptr;
  program_.eval_loss = nullptr;
  program_.gen_batch = 0;
}

template <typename T>
void slice_params(const ProgramInfo &local, const FullProgramView &view,
                  int tp_rank, const T *full_buf, T *local_buf) {
  if (tp_rank < 0 || tp_rank >= std::max(1, local.grid_tp))
    throw std::runtime_error("slice_params: tp rank " + std::to_string(tp_rank) +
                             " is outside the grid's " +
                             std::to_string(local.grid_tp) + " tp ranks");
#pragma omp parallel for schedule(dynamic, 1)
  for (int32_t p = 0; p < local.num_params; ++p) {
    const ParamInfo &info = local.params[p];
    const SliceGeometry g = slice_geometry(local, info);
    const int64_t full_chunk =
        effective_shard_dim(local, info) < 0 ? g.chunk : g.chunk * local.grid_tp;
    const int64_t first = effective_shard_dim(local, info) < 0 ? 0 : tp_rank * g.chunk;
    const T *src = full_buf + view.param(p).offset;
    T *dst = local_buf + info.offset;
    for (int64_t o = 0; o < g.outer; ++o)
      std::copy_n(src + o * full_chunk + first, g.chunk, dst + o * g.chunk);
  }
}

DpShard dp_shard(int64_t param_numel, int grid_dp, int dp_rank,
                 const std::vector<int64_t> &bounds) {
  if (grid_dp < 1 || dp_rank < 0 || dp_rank >= grid_dp)
    throw std::runtime_error("dp_shard: dp rank " + std::to_string(dp_rank) +
                             " is outside a grid of " + std::to_string(grid_dp) +
                             " dp ranks");
  DpShard s{};
  s.size = (param_numel + grid_dp - 1) / grid_dp;
  s.padded_numel = s.size * grid_dp;
  s.dp = grid_dp;
  s.rank = dp_rank;
  s.bounds = bounds.empty() ? std::vector<int64_t>{0, s.padded_numel} : bounds;
  auto bad = [&](const std::string &why) {
    throw std::runtime_error("gradient buckets: " + why + " (" +
                             std::to_string(s.bounds.size() - 1) + " buckets over " +
                             std::to_string(s.padded_numel) + " elements, dp " +
                             std::to_string(grid_dp) + ")");
  };
  if (s.bounds.size() < 2 || s.bounds.front() != 0 || s.bounds.back() != s.padded_numel)
    bad("the bounds must run from 0 to the padded parameter count");
  for (size_t k = 1; k < s.bounds.size(); ++k) {
    if (s.bounds[k] <= s.bounds[k - 1])
      bad("bound #" + std::to_string(k) + " is not above the one before");
    if (s.bounds[k] % grid_dp != 0)
      bad("bound #" + std::to_string(k) + " (" + std::to_string(s.bounds[k]) +
          ") is not a multiple of dp");
  }
  return s;
}

DpShard::Piece DpShard::piece(int k, int d) const {
  const int64_t b = bounds[size_t(k)], len = (bounds[size_t(k) + 1] - b) / dp;
  return {b + d * len, b / dp, len};
}

std::vector<DpShard::Piece> DpShard::pieces() const {
  std::vector<Piece> out;
  for (int k = 0; k < buckets(); ++k)
    out.push_back(piece(k));
  return out;
}

std::vector<int64_t> grad_bucket_bounds(const ProgramInfo &program) {
  if (program.num_grad_buckets <= 0 || !program.grad_bucket_bounds)
    return {};
  return std::vector<int64_t>(program.grad_bucket_bounds,
                              program.grad_bucket_bounds + program.num_grad_buckets + 1);
}

std::vector<RangePart> split_range(const DpShard &shard, int64_t lo, int64_t hi) {
  std::vector<RangePart> parts;
  for (int k = 0; k < shard.buckets(); ++k) {
    const int64_t b = shard.bounds[size_t(k)], e = shard.bounds[size_t(k) + 1];
    const int64_t from = std::max(lo, b), to = std::min(hi, e);
    if (from >= to)
      continue;
    RangePart part{from, std::vector<int64_t>(size_t(shard.dp)), 0, 0};
    for (int d = 0; d < shard.dp; ++d) {
      const DpShard::Piece p = shard.piece(k, d);
      part.counts[size_t(d)] =
          std::max<int64_t>(0, std::min(to, p.flat_end()) - std::max(from, p.flat));
      if (d == shard.rank) {
        // Where this rank's part starts (its piece's end when it holds none).
        part.mine = std::min(std::max(from, p.flat), p.flat_end());
        part.mine_shard = p.shard + (part.mine - p.flat);
      }
    }
    parts.push_back(std::move(part));
  }
  return parts;
}

std::vector<std::pair<int64_t, int64_t>>
norm_ranges(const ProgramInfo &program, const DpShard &shard, int tp_rank) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const DpShard::Piece &piece : shard.pieces())
    for (int32_t p = 0; p < program.num_params; ++p) {
      const ParamInfo &info = program.params[p];
      if (effective_shard_dim(program, info) < 0 && tp_rank != 0)
        continue; // an identical copy; tp rank 0 counts it
      const int64_t lo = std::max(info.offset, piece.flat);
      const int64_t hi = std::min(info.offset + info.numel, piece.flat_end());
      if (lo < hi)
        ranges.emplace_back(piece.shard + lo - piece.flat, piece.shard + hi - piece.flat);
    }
  std::sort(ranges.begin(), ranges.end());
  // Adjacent params make one range: fewer, longer runs for the reduction.
  std::vector<std::pair<int64_t, int64_t>> merged;
  for (const auto &r : ranges) {
    if (!merged.empty() && merged.back().second == r.first)
      merged.back().second = r.second;
    else
      merged.push_back(r);
  }
  return merged;
}

#define LLAMART_INSTANTIATE(T)                                                 \
  template void slice_params<T>(const ProgramInfo &, const FullProgramView &,  \
                                int, const T *, T *);
LLAMART_INSTANTIATE(float)
LLAMART_INSTANTIATE(double)
#undef LLAMART_INSTANTIATE

} // namespace llamart
