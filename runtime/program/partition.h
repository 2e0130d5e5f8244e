// How one rank of a dp x tp grid (program.h, ABI v3) holds its share of the
// model, as pure index arithmetic (no communication, so it is unit-tested
// without MPI):
//
//  - Tensor parallelism: tp rank r holds the r-th of grid_tp equal slices of
//    a parameter along its shard_dim, or the whole tensor (shard_dim -1).
//    Seen as a row-major [outer, full_chunk] matrix (outer = the product of
//    the dimensions before shard_dim), slice r is the column block
//    [r * chunk, (r + 1) * chunk), chunk = full_chunk / grid_tp: exactly the
//    layout comm::all_gather assembles from [outer, chunk] pieces.
//  - ZeRO-1: the AdamW state of the flat local buffer is split over the dp
//    ranks. param_numel is padded up to a multiple of grid_dp; dp rank d owns
//    1/grid_dp of every gradient bucket (DpShard below), the contiguous
//    shard [d * S, (d + 1) * S) when there is one bucket.
//  - Checkpoints: the full (unpartitioned) model is described by a
//    FullProgramView, a 1 x 1 ProgramInfo with the full shapes packed into
//    one flat buffer, so that the single-rank checkpoint code writes and
//    reads the grid-independent format unchanged.
#pragma once
#include "runtime/program/program.h"

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace llamart {

// Whether the program is one rank of a grid larger than 1 x 1.
bool is_partitioned(const ProgramInfo &program);

// The dimension a param is split along over tp, or -1 when every tp rank
// holds all of it (always -1 on a grid with grid_tp == 1, whatever
// ParamInfo::shard_dim says: a slice 0 of 1 is the whole tensor).
int32_t effective_shard_dim(const ProgramInfo &program, const ParamInfo &param);

// A param as [outer, chunk] blocks: its local elements are `outer` runs of
// `chunk`, and the full tensor is `outer` runs of grid_tp * chunk.
struct SliceGeometry {
  int64_t outer;
  int64_t chunk;
};
SliceGeometry slice_geometry(const ProgramInfo &program, const ParamInfo &param);

// The model as the single-rank program and checkpoints know it. Metadata
// only: the entry points (train_step, logits, eval_loss) are null.
class FullProgramView {
public:
  explicit FullProgramView(const ProgramInfo &local);
  FullProgramView(const FullProgramView &) = delete;
  FullProgramView &operator=(const FullProgramView &) = delete;

  const ProgramInfo &program() const { return program_; }
  // The full param corresponding to local param `index` (same order).
  const ParamInfo &param(int32_t index) const { return params_[static_cast<size_t>(index)]; }

private:
  std::vector<ParamInfo> params_;
  ProgramInfo program_;
};

// Copies tp rank `tp_rank`'s slice of every param from `full_buf` (laid out
// as view.program()) into `local_buf` (laid out as `local`).
template <typename T>
void slice_params(const ProgramInfo &local, const FullProgramView &view,
                  int tp_rank, const T *full_buf, T *local_buf);

// The ZeRO-1 shard of one dp rank in the flat local buffer. The buffer
// (padded to a multiple of grid_dp) is cut into gradient buckets [b_k,
// b_k+1), each a multiple of grid_dp long (ProgramInfo::grad_bucket_bounds;
// one bucket, the whole buffer, when the program names none). Every dp rank
// owns 1/grid_dp of every bucket: rank d the piece [b_k + d L_k, b_k +
// (d + 1) L_k), L_k = (b_k+1 - b_k) / grid_dp, so one reduce-scatter per
// bucket (the device starts each one as soon as the backward has written
// the bucket's gradients, Megatron's overlapped gradient reduction) leaves
// every rank its pieces. The shard is the concatenation of the rank's
// pieces in bucket order: piece k starts at b_k / grid_dp in shard
// coordinates. With one bucket this is the contiguous block [d S, (d + 1) S).
struct DpShard {
  int64_t padded_numel; // param_numel rounded up to a multiple of grid_dp
  int64_t size;         // S = padded_numel / grid_dp
  int dp = 1, rank = 0;
  std::vector<int64_t> bounds; // b_0 = 0 < b_1 < ... < b_K = padded_numel

  struct Piece {
    int64_t flat;  // first element in the flat local buffer
    int64_t shard; // first element in shard coordinates
    int64_t count;
    int64_t flat_end() const { return flat + count; }
  };
  int buckets() const { return static_cast<int>(bounds.size()) - 1; }
  // Bucket k's piece of dp rank `d` (this rank's by default).
  Piece piece(int k, int d) const;
  Piece piece(int k) const { return piece(k, rank); }
  std::vector<Piece> pieces() const; // this rank's, in shard order
};
// `bounds`: the program's bucket bounds (empty: one bucket). Throws a
// std::runtime_error naming the problem when they are not ascending
// multiples of grid_dp from 0 to the padded size.
DpShard dp_shard(int64_t param_numel, int grid_dp, int dp_rank,
                 const std::vector<int64_t> &bounds = {});

// The program's bucket bounds (empty when it names none).
std::vector<int64_t> grad_bucket_bounds(const ProgramInfo &program);

// How the dp ranks' shards split the flat range [lo, hi): one part per
// bucket the range overlaps, in flat order. In a part, dp rank d holds
// counts[d] consecutive elements and the ranks' elements follow each other
// in rank order from `flat`; this rank's start at `mine` (flat) and
// `mine_shard` (shard coordinates).
struct RangePart {
  int64_t flat;
  std::vector<int64_t> counts;
  int64_t mine, mine_shard;
};
std::vector<RangePart> split_range(const DpShard &shard, int64_t lo, int64_t hi);

// The ranges [begin, end) of the shard, in shard coordinates (0 = the
// shard's first element), whose squared gradients this rank adds to the
// global gradient norm: the elements of params, without the padding and the
// gaps between params, and without params every tp rank holds whole unless
// tp_rank is 0, so that each gradient element of the model counts once over
// the grid. Sorted.
std::vector<std::pair<int64_t, int64_t>>
norm_ranges(const ProgramInfo &program, const DpShard &shard, int tp_rank);

} // namespace llamart
