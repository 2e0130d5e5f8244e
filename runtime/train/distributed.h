// What the training driver needs from runtime/comm when its program is one
// rank of a dp x tp grid: where this process sits in the grid, agreement on
// every value that decides control flow (a rank that skipped an update or
// stopped while its peers went on would leave them waiting in a collective
// forever), and the full model put back together from its tp slices for a
// checkpoint.
//
// On a 1 x 1 grid (GridPlace::partitioned false) every function here returns
// its input without calling comm: a single-rank binary never touches MPI.
#pragma once
#include "runtime/program/partition.h"
#include "runtime/program/program.h"

#include <cstdint>
#include <string>

namespace llamart::train {

struct GridPlace {
  bool partitioned = false;
  int world_rank = 0;
  int dp_rank = 0;
  int tp_rank = 0;
  // World rank 0 alone writes checkpoints and metrics, holds the run lock
  // and talks to the user.
  bool root() const { return world_rank == 0; }
};

// This process's place for `program`. Throws std::runtime_error when the
// program is partitioned but the process grid (comm::init) is not the
// program's.
GridPlace grid_place(const ProgramInfo &program);

// The largest `value` over the world.
int64_t agree_max(const GridPlace &grid, int64_t value, const char *what);

// World rank 0's bytes[0..n) on every rank.
void broadcast_from_root(const GridPlace &grid, void *bytes, int64_t n,
                         const char *what);
// World rank 0's string on every rank.
std::string broadcast_from_root(const GridPlace &grid, const std::string &value,
                                const char *what);

// Every param of `local_buf` (laid out as `local`) gathered over this rank's
// tp group into `full_buf` (laid out as view.program()) on tp rank 0 alone
// (full_buf is used, and may be null, elsewhere). Collective over tp.
template <typename T>
void gather_full_params(const ProgramInfo &local, const FullProgramView &view,
                        const T *local_buf, T *full_buf);

} // namespace llamart::train
