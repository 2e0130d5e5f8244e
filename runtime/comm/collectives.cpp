// The collectives of comm.h, built so that results are bit-reproducible.
//
// MPI_Allreduce may pick a different reduction tree per message size, per
// process count or per library version, and floating-point addition is not
// associative: the same gradients could then sum to different bits on
// different runs (or, with some algorithms, on different ranks, which makes
// replicated weights drift apart). So reductions are done here with data
// movement only, and the arithmetic in a fixed order:
//
//   all_reduce     = all-to-all (rank r receives block r of every rank),
//                    sum in rank order 0..p-1 on rank r, all-gather the blocks
//   reduce_scatter = all-to-all of the column blocks, sum in rank order
//
// Every element is summed exactly once, by one rank, as the left fold
// ((x_0 + x_1) + x_2) + ... regardless of the message size or the MPI
// build, and everyone receives copies of that one sum. The traffic equals
// a ring all-reduce (2 (p-1)/p n per rank). Staging buffers are bounded
// (Context::staging_bytes): long buffers go through in tiles.
#include "runtime/comm/context.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace llamart::comm {
namespace {

using detail::Call;
using detail::check_mpi;
using detail::wait_all;

template <typename T> MPI_Datatype mpi_type();
template <> MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <> MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }
template <> MPI_Datatype mpi_type<int64_t>() { return MPI_INT64_T; }

struct Group {
  MPI_Comm comm = MPI_COMM_NULL;
  int size = 1;
  int rank = 0;
};

// The group of `axis`; size 1 without init() (no MPI call is made then).
Group group_of(Axis axis) {
  Group g;
  g.size = comm::size(axis); // also rejects an invalid axis value
  g.rank = comm::rank(axis);
  if (initialized())
    g.comm = detail::axis_comm(axis);
  return g;
}

[[noreturn]] void bad_argument(const Call &call, const std::string &problem) {
  throw std::runtime_error(std::string("comm: ") + call.collective + " over " +
                           detail::axis_name(call.axis) + " ('" +
                           (call.what ? call.what : "") + "'): " + problem);
}

void check_buffer(const Call &call, const void *p, int64_t n, const char *name) {
  if (n < 0)
    bad_argument(call, std::string(name) + " has a negative element count " +
                           std::to_string(n));
  if (n > 0 && !p)
    bad_argument(call, std::string(name) + " is null");
}

void check_extents(const Call &call, int64_t outer, int64_t chunk) {
  if (outer < 0 || chunk < 0)
    bad_argument(call, "negative extent (outer " + std::to_string(outer) + ", chunk " +
                           std::to_string(chunk) + ")");
}

template <typename T>
void check_no_alias(const Call &call, const T *a, int64_t na, const T *b, int64_t nb) {
  const std::less<const T *> before;
  if (na > 0 && nb > 0 && before(a, b + nb) && before(b, a + na))
    bad_argument(call, "the output overlaps the input");
}

// Elements per rank per round such that `buffers_per_rank` staging arrays of
// p ranks' tiles fit the budget; at least 1, and an int for MPI counts.
int64_t tile_elements(size_t elem_bytes, int p, int buffers_per_rank) {
  const size_t budget = detail::context().staging_bytes;
  const size_t per = elem_bytes * size_t(p) * size_t(buffers_per_rank);
  return std::clamp<int64_t>(int64_t(budget / per), 1, INT_MAX / 2);
}

// Splits an [outer, chunk] slab into tiles of at most `tile` elements that
// are contiguous in the slab: whole rows when a row fits, else pieces of one
// row. f(first_row, rows, first_col, cols).
template <typename F>
void for_each_tile(int64_t outer, int64_t chunk, int64_t tile, F &&f) {
  if (chunk <= tile) {
    const int64_t rows = tile / chunk;
    for (int64_t o = 0; o < outer; o += rows)
      f(o, std::min(rows, outer - o), int64_t(0), chunk);
    return;
  }
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < chunk; c += tile)
      f(o, int64_t(1), c, std::min(tile, chunk - c));
}

// dst = src[0] op src[1] op ... op src[p-1], left to right; src[r] is at
// src + r * stride. A NaN anywhere makes the max NaN (std::max would keep
// or drop it depending on the rank it came from).
template <typename T>
void combine_in_rank_order(T *dst, const T *src, int64_t stride, int64_t n, int p,
                           ReduceOp op) {
  std::copy(src, src + n, dst);
  for (int r = 1; r < p; ++r) {
    const T *s = src + r * stride;
    if (op == ReduceOp::Sum) {
      for (int64_t j = 0; j < n; ++j)
        dst[j] += s[j];
    } else {
      for (int64_t j = 0; j < n; ++j) {
        bool take = s[j] > dst[j];
        if constexpr (std::is_floating_point_v<T>)
          take = take || std::isnan(s[j]);
        if (take)
          dst[j] = s[j];
      }
    }
  }
}

template <typename T>
void all_reduce_impl(T *buf, int64_t n, ReduceOp op, Axis axis, const char *what) {
  const Call call{"all_reduce", axis, what};
  if (op != ReduceOp::Sum && op != ReduceOp::Max)
    bad_argument(call, "unknown reduce op " + std::to_string(int(op)));
  check_buffer(call, buf, n, "the buffer");
  const Group g = group_of(axis);
  if (g.size == 1 || n == 0)
    return;
  const int p = g.size;
  const MPI_Datatype type = mpi_type<T>();
  // One staging array: the p received blocks of a piece (p * ceil(m / p)
  // <= m + p elements).
  const int64_t piece = std::max<int64_t>(p, tile_elements(sizeof(T), 1, 1) - p);
  T *recv = reinterpret_cast<T *>(detail::staging(size_t(piece + p) * sizeof(T)));
  std::vector<int> counts(p), displs(p), recv_counts(p), recv_displs(p);
  for (int64_t base = 0; base < n; base += piece) {
    const int64_t m = std::min(piece, n - base);
    const int64_t block = (m + p - 1) / p;
    for (int r = 0; r < p; ++r) {
      displs[r] = int(std::min<int64_t>(r * block, m));
      counts[r] = int(std::min<int64_t>(block, m - displs[r]));
    }
    const int mine = counts[g.rank];
    for (int r = 0; r < p; ++r) {
      recv_counts[r] = mine;
      recv_displs[r] = r * mine;
    }
    MPI_Request req;
    check_mpi(MPI_Ialltoallv(buf + base, counts.data(), displs.data(), type, recv,
                             recv_counts.data(), recv_displs.data(), type, g.comm, &req),
              call, "MPI_Ialltoallv");
    wait_all(&req, 1, call);
    // Our block of buf was sent already; overwrite it with the reduction.
    combine_in_rank_order(buf + base + displs[g.rank], recv, mine, mine, p, op);
    check_mpi(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf + base,
                              counts.data(), displs.data(), type, g.comm, &req),
              call, "MPI_Iallgatherv");
    wait_all(&req, 1, call);
  }
}

// all_gather (root < 0: every rank receives) and gather (rank `root` of the
// group alone receives; `out` is used there only).
template <typename T>
void gather_impl(const T *in, T *out, int64_t outer, int64_t chunk, int root, Axis axis,
                 const char *what) {
  const Call call{root < 0 ? "all_gather" : "gather", axis, what};
  check_extents(call, outer, chunk);
  const Group g = group_of(axis);
  const int p = g.size;
  if (root >= p)
    bad_argument(call, "root " + std::to_string(root) + " is outside the group of " +
                           std::to_string(p) + " ranks");
  const bool receives = root < 0 || g.rank == root;
  check_buffer(call, in, outer * chunk, "the input");
  if (receives) {
    check_buffer(call, out, outer * chunk * p, "the output");
    check_no_alias(call, in, outer * chunk, out, outer * chunk * p);
  }
  if (outer == 0 || chunk == 0)
    return;
  if (p == 1) {
    std::copy(in, in + outer * chunk, out);
    return;
  }
  // Every rank computes the same tiles; only receivers stage what arrives.
  const int64_t tile = tile_elements(sizeof(T), p, 1);
  T *recv = receives ? reinterpret_cast<T *>(detail::staging(size_t(tile) * p * sizeof(T)))
                     : nullptr;
  for_each_tile(outer, chunk, tile, [&](int64_t o0, int64_t rows, int64_t c0, int64_t cols) {
    // A tile is contiguous in the input (whole rows, or part of one row).
    const int block = int(rows * cols);
    MPI_Request req;
    if (root < 0)
      check_mpi(MPI_Iallgather(in + o0 * chunk + c0, block, mpi_type<T>(), recv, block,
                               mpi_type<T>(), g.comm, &req),
                call, "MPI_Iallgather");
    else
      check_mpi(MPI_Igather(in + o0 * chunk + c0, block, mpi_type<T>(), recv, block,
                            mpi_type<T>(), root, g.comm, &req),
                call, "MPI_Igather");
    wait_all(&req, 1, call);
    if (!receives)
      return;
    for (int r = 0; r < p; ++r)
      for (int64_t i = 0; i < rows; ++i) {
        const T *src = recv + int64_t(r) * block + i * cols;
        std::copy(src, src + cols, out + (o0 + i) * p * chunk + r * chunk + c0);
      }
  });
}

// gather: a negative root would mean all_gather to gather_impl.
template <typename T>
void gather_to_root(const T *in, T *out, int64_t outer, int64_t chunk, int root, Axis axis,
                    const char *what) {
  if (root < 0)
    bad_argument(Call{"gather", axis, what}, "negative root " + std::to_string(root));
  gather_impl(in, out, outer, chunk, root, axis, what);
}

template <typename T>
void gather_varying_impl(const T *in, T *out, const int64_t *counts, int root, Axis axis,
                         const char *what) {
  const Call call{"gather_varying", axis, what};
  const Group g = group_of(axis);
  if (root < 0 || root >= g.size)
    bad_argument(call, "root " + std::to_string(root) + " is outside the group of " +
                           std::to_string(g.size) + " ranks");
  int64_t total = 0;
  for (int r = 0; r < g.size; ++r) {
    if (counts[r] < 0)
      bad_argument(call, "negative count for rank " + std::to_string(r));
    total += counts[r];
  }
  check_buffer(call, in, counts[g.rank], "the input");
  if (g.rank == root)
    check_buffer(call, out, total, "the output");
  // Point to point in rounds of at most 2^28 elements per message (MPI
  // counts are int); every rank walks the same rounds.
  constexpr int64_t kPiece = int64_t(1) << 28;
  int64_t longest = 0;
  for (int r = 0; r < g.size; ++r)
    longest = std::max(longest, counts[r]);
  for (int64_t off = 0; off < longest; off += kPiece) {
    std::vector<MPI_Request> reqs;
    auto piece = [&](int r) { return std::max<int64_t>(0, std::min(kPiece, counts[r] - off)); };
    if (g.rank == root) {
      int64_t base = 0;
      for (int r = 0; r < g.size; ++r) {
        const int64_t n = piece(r);
        if (n > 0 && r == root)
          std::copy(in + off, in + off + n, out + base + off);
        else if (n > 0) {
          reqs.emplace_back();
          check_mpi(MPI_Irecv(out + base + off, int(n), mpi_type<T>(), r, /*tag=*/7, g.comm,
                              &reqs.back()),
                    call, "MPI_Irecv");
        }
        base += counts[r];
      }
    } else if (const int64_t n = piece(g.rank); n > 0) {
      reqs.emplace_back();
      check_mpi(MPI_Isend(in + off, int(n), mpi_type<T>(), root, /*tag=*/7, g.comm,
                          &reqs.back()),
                call, "MPI_Isend");
    }
    if (!reqs.empty())
      wait_all(reqs.data(), int(reqs.size()), call);
  }
}

template <typename T>
void reduce_scatter_impl(const T *in, T *out, int64_t outer, int64_t chunk, Axis axis,
                         const char *what) {
  const Call call{"reduce_scatter", axis, what};
  check_extents(call, outer, chunk);
  const Group g = group_of(axis);
  const int p = g.size;
  check_buffer(call, in, outer * chunk * p, "the input");
  check_buffer(call, out, outer * chunk, "the output");
  check_no_alias(call, in, outer * chunk * p, out, outer * chunk);
  if (outer == 0 || chunk == 0)
    return;
  if (p == 1) {
    std::copy(in, in + outer * chunk, out);
    return;
  }
  // Two staging arrays: the column blocks packed per destination, and the
  // blocks received from every rank.
  const int64_t tile = tile_elements(sizeof(T), p, 2);
  T *send = reinterpret_cast<T *>(detail::staging(size_t(tile) * p * 2 * sizeof(T)));
  T *recv = send + tile * p;
  for_each_tile(outer, chunk, tile, [&](int64_t o0, int64_t rows, int64_t c0, int64_t cols) {
    const int block = int(rows * cols);
    for (int q = 0; q < p; ++q)
      for (int64_t i = 0; i < rows; ++i) {
        const T *src = in + (o0 + i) * p * chunk + q * chunk + c0;
        std::copy(src, src + cols, send + int64_t(q) * block + i * cols);
      }
    MPI_Request req;
    check_mpi(MPI_Ialltoall(send, block, mpi_type<T>(), recv, block, mpi_type<T>(),
                            g.comm, &req),
              call, "MPI_Ialltoall");
    wait_all(&req, 1, call);
    for (int64_t i = 0; i < rows; ++i)
      combine_in_rank_order(out + (o0 + i) * chunk + c0, recv + i * cols, block, cols, p,
                            ReduceOp::Sum);
  });
}

} // namespace

void all_reduce(float *buf, int64_t n, ReduceOp op, Axis axis, const char *what) {
  all_reduce_impl(buf, n, op, axis, what);
}
void all_reduce(double *buf, int64_t n, ReduceOp op, Axis axis, const char *what) {
  all_reduce_impl(buf, n, op, axis, what);
}
void all_reduce(int64_t *buf, int64_t n, ReduceOp op, Axis axis, const char *what) {
  all_reduce_impl(buf, n, op, axis, what);
}

void all_gather(const float *in, float *out, int64_t outer, int64_t chunk, Axis axis,
                const char *what) {
  gather_impl(in, out, outer, chunk, /*root=*/-1, axis, what);
}
void all_gather(const double *in, double *out, int64_t outer, int64_t chunk, Axis axis,
                const char *what) {
  gather_impl(in, out, outer, chunk, /*root=*/-1, axis, what);
}

void gather(const float *in, float *out, int64_t outer, int64_t chunk, int root,
            Axis axis, const char *what) {
  gather_to_root(in, out, outer, chunk, root, axis, what);
}
void gather(const double *in, double *out, int64_t outer, int64_t chunk, int root,
            Axis axis, const char *what) {
  gather_to_root(in, out, outer, chunk, root, axis, what);
}

void gather_varying(const float *in, float *out, const int64_t *counts, int root,
                    Axis axis, const char *what) {
  gather_varying_impl(in, out, counts, root, axis, what);
}
void gather_varying(const double *in, double *out, const int64_t *counts, int root,
                    Axis axis, const char *what) {
  gather_varying_impl(in, out, counts, root, axis, what);
}

void reduce_scatter(const float *in, float *out, int64_t outer, int64_t chunk, Axis axis,
                    const char *what) {
  reduce_scatter_impl(in, out, outer, chunk, axis, what);
}
void reduce_scatter(const double *in, double *out, int64_t outer, int64_t chunk,
                    Axis axis, const char *what) {
  reduce_scatter_impl(in, out, outer, chunk, axis, what);
}

void broadcast(void *bytes, int64_t n, int root, Axis axis, const char *what) {
  const Call call{"broadcast", axis, what};
  check_buffer(call, bytes, n, "the buffer");
  const Group g = group_of(axis);
  if (root < 0 || root >= g.size)
    bad_argument(call, "root " + std::to_string(root) + " is outside the group of " +
                           std::to_string(g.size) + " ranks");
  if (g.size == 1)
    return;
  // MPI counts are int: send long buffers in pieces of 1 GiB.
  constexpr int64_t kPiece = int64_t(1) << 30;
  auto *p = static_cast<char *>(bytes);
  for (int64_t off = 0; off < n; off += kPiece) {
    MPI_Request req;
    check_mpi(MPI_Ibcast(p + off, int(std::min(kPiece, n - off)), MPI_BYTE, root, g.comm,
                         &req),
              call, "MPI_Ibcast");
    wait_all(&req, 1, call);
  }
}

void barrier(Axis axis, const char *what) {
  const Call call{"barrier", axis, what};
  const Group g = group_of(axis);
  if (g.size == 1)
    return;
  MPI_Request req;
  check_mpi(MPI_Ibarrier(g.comm, &req), call, "MPI_Ibarrier");
  wait_all(&req, 1, call);
}

} // namespace llamart::comm
