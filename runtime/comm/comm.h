// Process-group communication for partitioned programs (CPU: MPI).
//
// A run is a grid of world_size = dp x tp ranks. World rank w sits at grid
// coordinates (dp_index, tp_index) = (w / tp, w % tp): tensor-parallel groups
// are consecutive ranks (on a cluster, the ranks of one node), as in Megatron.
// Axis::DP is the group of ranks that share tp_index (they hold the same
// parameter shard and see different data); Axis::TP the group that shares
// dp_index (same data, different parameter shards); Axis::World everyone.
// Axis values equal the IR's grid axes (shard.grid @grid(shape = DPxTP):
// axis 0 = dp, axis 1 = tp).
//
// Every collective is blocking for the caller, but waits with a deadline:
// a peer that died or desynchronized ends the job with a message naming this
// rank, the collective and `what` (instead of hanging forever), then
// MPI_Abort. The timeout is set by init() (LLAMA_COMM_TIMEOUT_S overrides).
//
// Single-process programs (1 x 1 grid) never call init(): every function
// below then works without MPI (size 1, collectives are copies), so a
// single-rank binary runs without mpirun.
#pragma once
#include <cstdint>
#include <string>

namespace llamart::comm {

enum class Axis : int32_t { World = -1, DP = 0, TP = 1 };
enum class ReduceOp : int32_t { Sum = 0, Max = 1 };

// Starts MPI (if not started) and builds the dp x tp grid. Throws
// std::runtime_error when the world size is not dp * tp, naming both
// (e.g. "this binary is partitioned for dp=2 x tp=2 = 4 ranks but runs on 1;
// start it with llama-run -n 4"). timeout_s <= 0 means the default (600 s).
void init(int dp, int tp, double timeout_s = 0.0);
// MPI_Finalize if init() started MPI. Idempotent.
void finalize();
// Ends every rank of the job now (MPI_Abort), after printing `message`
// prefixed by this rank. For fatal errors on one rank.
[[noreturn]] void abort_job(const std::string &message, int code = 1);

bool initialized();
int rank(Axis axis = Axis::World);   // index within the axis group
int size(Axis axis = Axis::World);   // ranks in the axis group
int grid_dp();
int grid_tp();
// How long a collective may wait for its peers (init's timeout, or
// LLAMA_COMM_TIMEOUT_S) before the job ends.
double timeout_s();

// In-place all-reduce of buf[0..n).
void all_reduce(float *buf, int64_t n, ReduceOp op, Axis axis, const char *what);
void all_reduce(double *buf, int64_t n, ReduceOp op, Axis axis, const char *what);
void all_reduce(int64_t *buf, int64_t n, ReduceOp op, Axis axis, const char *what);

// Gather along a dimension of a row-major tensor. Each rank's input is
// [outer, chunk] (chunk = the local extent of the gathered dimension times
// everything after it); the output is [outer, size(axis) * chunk] with rank
// r's chunk at column block r. outer = 1 is a plain rank-major concatenation.
// `out` must not alias `in`.
void all_gather(const float *in, float *out, int64_t outer, int64_t chunk,
                Axis axis, const char *what);
void all_gather(const double *in, double *out, int64_t outer, int64_t chunk,
                Axis axis, const char *what);

// all_gather's result on rank `root` of the group alone (checkpoint saves:
// the other ranks never hold the gathered tensor). `out` is used, and must
// be non-null, on the root only.
void gather(const float *in, float *out, int64_t outer, int64_t chunk, int root,
            Axis axis, const char *what);
void gather(const double *in, double *out, int64_t outer, int64_t chunk, int root,
            Axis axis, const char *what);

// Pieces of different lengths onto one rank: rank r of the group sends
// in[0..counts[r]) and rank `root` receives them concatenated in rank order
// into out (sum of counts elements; used, and non-null, on the root only).
// Every rank passes the same counts. Checkpoint saves assemble a tensor's
// AdamW moments from the ZeRO-1 shards that hold its parts.
void gather_varying(const float *in, float *out, const int64_t *counts, int root,
                    Axis axis, const char *what);
void gather_varying(const double *in, double *out, const int64_t *counts, int root,
                    Axis axis, const char *what);

// Sum-reduce then scatter along a dimension: the input is
// [outer, size(axis) * chunk] on every rank, rank r receives the sum over
// ranks of column block r, [outer, chunk]. `out` must not alias `in`.
void reduce_scatter(const float *in, float *out, int64_t outer, int64_t chunk,
                    Axis axis, const char *what);
void reduce_scatter(const double *in, double *out, int64_t outer, int64_t chunk,
                    Axis axis, const char *what);

// Rank `root` (index within the axis group) sends bytes[0..n) to the group.
void broadcast(void *bytes, int64_t n, int root, Axis axis, const char *what);
void barrier(Axis axis, const char *what);

} // namespace llamart::comm
