// Training on a dp x tp grid (runtime/program/partition.h, runtime/train:
// zero_optimizer.h, distributed.h and the partitioned paths of the trainer and the CLI).
//
// In-process, without MPI: the ZeRO-1 range update against the full AdamW
// update (bit for bit), tp slicing against index arithmetic and against the
// layout comm::all_gather assembles, dp shards and the gradient-norm ranges
// against a direct count, the full-model view against the single-rank
// program, and validate_program on inconsistent grid fields.
//
// Multi-rank: this executable is also the rank program. Started as
// `distributed_test bigram-grid DPxTP DTYPE <subcommand> ...` it runs
// run_main on the partitioned bigram of train_fixture.h; the MultiRank tests
// start it under mpirun and compare every grid with the single-rank bigram
// run in this process (the reference: same data, same init, one process).
#include "runtime/checkpoint/safetensors.h"
#include "runtime/train/checkpoint_dir.h"
#include "runtime/cli/cli.h"
#include "runtime/train/optimizer.h"
#include "runtime/program/param_store.h"
#include "runtime/program/partition.h"
#include "runtime/program/program_check.h"
#include "runtime/program/rng.h"
#include "runtime/train/trainer.h"
#include "runtime/train/zero_optimizer.h"
#include "test/unit/train_fixture.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <vector>

namespace fs = std::filesystem;
using llamart::DType;
using llamart::ParamInfo;
using llamart::ParamInit;
using llamart::ProgramInfo;
using nlohmann::json;
using namespace llamart;
using namespace llamart::train;

namespace {

constexpr int kV = 16;

struct TempDir : llamart::testing::TempDir {
  TempDir() : llamart::testing::TempDir("llamart_distributed_test") {}
};

void dummy_step(const void *, void *, const int32_t *, const int32_t *, void *,
                double *) {}
void dummy_eval(const void *, const int32_t *, const int32_t *, void *, double *) {}
void dummy_logits(const void *, const int32_t *, void *, void *) {}

// A program table built by hand: params given by their full shape and
// shard_dim, laid out in order with `gap` unused elements after each one.
struct Table {
  std::vector<std::string> names;
  std::vector<ParamInfo> params;
  ProgramInfo program{};

  Table(int dp, int tp, int gap,
        const std::vector<std::tuple<std::string, std::vector<int64_t>, int32_t>> &specs) {
    names.reserve(specs.size());
    int64_t offset = 0, full = 0;
    for (const auto &[name, full_shape, shard_dim] : specs) {
      names.push_back(name);
      ParamInfo p{};
      p.rank = static_cast<int32_t>(full_shape.size());
      p.shard_dim = shard_dim;
      p.numel = 1;
      int64_t full_numel = 1;
      for (int32_t d = 0; d < p.rank; ++d) {
        p.full_shape[d] = full_shape[static_cast<size_t>(d)];
        p.shape[d] = p.full_shape[d] / (d == shard_dim && tp > 1 ? tp : 1);
        p.numel *= p.shape[d];
        full_numel *= p.full_shape[d];
      }
      p.offset = offset;
      p.init = p.rank == 1 ? ParamInit::Ones : ParamInit::Normal;
      offset += p.numel + gap;
      full += full_numel;
      params.push_back(p);
    }
    for (size_t i = 0; i < params.size(); ++i)
      params[i].name = names[i].c_str();
    program.abi_version = llamart::kProgramAbiVersion;
    program.model_name = "table";
    program.config_json = "{}";
    program.dtype = DType::F64;
    program.batch = 2;
    program.seq_len = 4;
    program.vocab_size = 8;
    program.ignore_index = -1;
    program.num_params = static_cast<int32_t>(params.size());
    program.params = params.data();
    program.param_numel = offset;
    program.init_std = 0.02;
    program.train_step = &dummy_step;
    program.logits = dp * tp > 1 ? nullptr : &dummy_logits;
    program.eval_loss = &dummy_eval;
    program.grid_dp = dp;
    program.grid_tp = tp;
    program.global_batch = program.batch * dp;
    program.full_param_numel = full;
  }
  Table(const Table &) = delete;
};

// Params of every kind: split along the last, the first, a middle dimension,
// and whole (shard_dim -1); 1-D and 2-D for the weight-decay rule.
Table mixed_table(int dp, int tp, int gap) {
  return Table(dp, tp, gap,
               {{"w_col", {6, 8}, 1},
                {"w_row", {8, 6}, 0},
                {"gain", {5}, -1},
                {"t3", {2, 4, 3}, 1},
                {"bias", {8}, 0}});
}

// ---------------------------------------------------------------------------
// ZeRO-1: the range update

// Up to `buckets` gradient buckets over n elements on dp ranks: bounds at
// multiples of dp spread over the padded buffer (fewer when it is short).
std::vector<int64_t> some_bounds(int64_t n, int dp, int buckets) {
  const int64_t padded = (n + dp - 1) / dp * dp;
  std::vector<int64_t> b{0};
  for (int k = 1; k < buckets; ++k) {
    const int64_t cut = padded * k / buckets / dp * dp;
    if (cut > b.back() && cut < padded)
      b.push_back(cut);
  }
  b.push_back(padded);
  return b;
}

template <typename T> class AdamWRange : public ::testing::Test {};
using Dtypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(AdamWRange, Dtypes);

// dp shards of the flat buffer (boundaries inside params, padding past the
// end), each updated in its own buffers as a ZeRO-1 rank does, give exactly
// the bits of the one full update, for three steps with changing lr and
// gradient scale; the gaps between params stay untouched.
TYPED_TEST(AdamWRange, ShardsReproduceTheFullUpdateBitForBit) {
  using T = TypeParam;
  const Table t = mixed_table(1, 1, /*gap=*/2);
  const ProgramInfo &prog = t.program;
  const int64_t n = prog.param_numel;
  AdamWConfig config;
  Rng rng(42);
  std::vector<T> p0(static_cast<size_t>(n));
  for (T &x : p0)
    x = static_cast<T>(rng.uniform() - 0.5);
  std::vector<std::vector<T>> grads(3, std::vector<T>(static_cast<size_t>(n)));
  for (auto &g : grads)
    for (T &x : g)
      x = static_cast<T>(2.0 * rng.uniform() - 1.0);
  const double lrs[3] = {1e-2, 3e-3, 5e-4}, scales[3] = {1.0, 0.5, 0.25};

  std::vector<T> ref_p = p0, ref_m(static_cast<size_t>(n)), ref_v(static_cast<size_t>(n));
  for (int s = 0; s < 3; ++s)
    adamw_update<T>(prog, config, s + 1, lrs[s], scales[s], ref_p.data(),
                    grads[s].data(), ref_m.data(), ref_v.data());

  for (int dp : {1, 2, 3, 4, 7, 64})
    for (int buckets : {1, 2, 5}) {
      const std::vector<int64_t> bounds = some_bounds(n, dp, buckets);
      std::vector<T> p = p0, m(static_cast<size_t>(n)), v(static_cast<size_t>(n));
      for (int d = 0; d < dp; ++d) {
        const DpShard sh = dp_shard(n, dp, d, bounds);
        std::vector<T> ps(static_cast<size_t>(sh.size)), ms(ps.size()), vs(ps.size()),
            gs(ps.size());
        for (int s = 0; s < 3; ++s)
          for (const DpShard::Piece &pc : sh.pieces()) {
            const int64_t kept = std::max<int64_t>(0, std::min(pc.flat_end(), n) - pc.flat);
            if (s == 0)
              std::copy_n(p.begin() + pc.flat, kept, ps.begin() + pc.shard);
            std::fill_n(gs.begin() + pc.shard, pc.count, T(0));
            std::copy_n(grads[s].begin() + pc.flat, kept, gs.begin() + pc.shard);
            adamw_update_range<T>(prog, config, s + 1, lrs[s], scales[s], pc.flat,
                                  pc.flat_end(), ps.data() + pc.shard, gs.data() + pc.shard,
                                  ms.data() + pc.shard, vs.data() + pc.shard);
          }
        for (const DpShard::Piece &pc : sh.pieces()) {
          const int64_t kept = std::max<int64_t>(0, std::min(pc.flat_end(), n) - pc.flat);
          std::copy_n(ps.begin() + pc.shard, kept, p.begin() + pc.flat);
          std::copy_n(ms.begin() + pc.shard, kept, m.begin() + pc.flat);
          std::copy_n(vs.begin() + pc.shard, kept, v.begin() + pc.flat);
        }
      }
      EXPECT_EQ(0, std::memcmp(p.data(), ref_p.data(), sizeof(T) * n)) << "dp " << dp;
      EXPECT_EQ(0, std::memcmp(m.data(), ref_m.data(), sizeof(T) * n)) << "dp " << dp;
      EXPECT_EQ(0, std::memcmp(v.data(), ref_v.data(), sizeof(T) * n)) << "dp " << dp;
    }
  // The update moved every param element and no gap element.
  for (int32_t i = 0; i < prog.num_params; ++i) {
    const ParamInfo &info = prog.params[i];
    for (int64_t k = info.offset; k < info.offset + info.numel; ++k)
      EXPECT_NE(ref_p[static_cast<size_t>(k)], p0[static_cast<size_t>(k)]) << info.name;
    for (int64_t k = info.offset + info.numel; k < info.offset + info.numel + 2; ++k)
      EXPECT_EQ(ref_p[static_cast<size_t>(k)], p0[static_cast<size_t>(k)]) << "gap";
  }
}

// On a 1 x 1 grid ZeroAdamW is the plain optimizer: the norm is grad_l2_norm
// and the update adamw_update, to the bit.
TYPED_TEST(AdamWRange, SingleRankZeroAdamWIsThePlainOptimizer) {
  using T = TypeParam;
  const Table t = mixed_table(1, 1, /*gap=*/1);
  const ProgramInfo &prog = t.program;
  const int64_t n = prog.param_numel;
  ZeroAdamW<T> zero(prog, 0, 0);
  EXPECT_EQ(zero.shard().buckets(), 1);
  EXPECT_EQ(zero.shard().piece(0).flat, 0);
  EXPECT_EQ(zero.shard().size, n);
  EXPECT_EQ(zero.shard().padded_numel, n);
  Rng rng(3);
  std::vector<T> g(static_cast<size_t>(n)), p(static_cast<size_t>(n));
  for (size_t i = 0; i < g.size(); ++i) {
    g[i] = static_cast<T>(rng.uniform() - 0.5);
    p[i] = static_cast<T>(rng.uniform() - 0.5);
  }
  std::vector<T> ref_p = p, ref_m(p.size()), ref_v(p.size());
  AdamWConfig config;
  for (int s = 1; s <= 2; ++s) {
    EXPECT_EQ(zero.reduce_gradients(g.data(), 0.5), grad_l2_norm(g.data(), n, 0.5));
    zero.update(config, s, 1e-2, 0.5, g.data(), p.data());
    adamw_update<T>(prog, config, s, 1e-2, 0.5, ref_p.data(), g.data(), ref_m.data(),
                    ref_v.data());
  }
  EXPECT_EQ(0, std::memcmp(p.data(), ref_p.data(), sizeof(T) * n));
  EXPECT_EQ(0, std::memcmp(zero.exp_avg(), ref_m.data(), sizeof(T) * n));
  EXPECT_EQ(0, std::memcmp(zero.exp_avg_sq(), ref_v.data(), sizeof(T) * n));
}

// ---------------------------------------------------------------------------
// Layout: dp shards, tp slices, norm ranges, the full view

TEST(Partition, DpShardsTileThePaddedBuffer) {
  for (int64_t n : {1, 10, 147, 272})
    for (int dp = 1; dp <= 5; ++dp) {
      // One bucket: the contiguous blocks [d S, (d + 1) S).
      int64_t next = 0;
      for (int d = 0; d < dp; ++d) {
        const DpShard s = dp_shard(n, dp, d);
        ASSERT_EQ(s.buckets(), 1);
        EXPECT_EQ(s.piece(0).flat, next);
        EXPECT_EQ(s.piece(0).shard, 0);
        EXPECT_EQ(s.piece(0).count, s.size);
        EXPECT_EQ(s.size * dp, s.padded_numel);
        next = s.piece(0).flat_end();
      }
      const DpShard s = dp_shard(n, dp, 0);
      EXPECT_EQ(next, s.padded_numel);
      EXPECT_GE(s.padded_numel, n);
      EXPECT_LT(s.padded_numel - n, dp) << "more padding than needed";
      // Buckets: every flat element has exactly one owner, and each rank's
      // pieces fill its shard [0, S) once, in flat order.
      for (int buckets : {2, 3, 7}) {
        const std::vector<int64_t> bounds = some_bounds(n, dp, buckets);
        std::vector<int> owners(static_cast<size_t>(s.padded_numel), 0);
        for (int d = 0; d < dp; ++d) {
          const DpShard sh = dp_shard(n, dp, d, bounds);
          EXPECT_EQ(sh.size, s.size);
          int64_t shard_next = 0, flat_last = -1;
          for (const DpShard::Piece &p : sh.pieces()) {
            EXPECT_EQ(p.shard, shard_next);
            EXPECT_GT(p.flat, flat_last);
            shard_next += p.count;
            flat_last = p.flat;
            for (int64_t i = p.flat; i < p.flat_end(); ++i)
              ++owners[static_cast<size_t>(i)];
          }
          EXPECT_EQ(shard_next, sh.size) << "n " << n << " dp " << dp;
        }
        for (int o : owners)
          ASSERT_EQ(o, 1) << "n " << n << " dp " << dp << " buckets " << buckets;
      }
    }
  EXPECT_THROW(dp_shard(10, 2, 2), std::runtime_error);
  EXPECT_THROW(dp_shard(10, 0, 0), std::runtime_error);
  // Bounds that are not ascending multiples of dp from 0 to the padded size.
  EXPECT_THROW(dp_shard(10, 2, 0, {0, 3, 10}), std::runtime_error);
  EXPECT_THROW(dp_shard(10, 2, 0, {0, 6, 4, 10}), std::runtime_error);
  EXPECT_THROW(dp_shard(10, 2, 0, {0, 4, 8}), std::runtime_error);
  EXPECT_THROW(dp_shard(10, 2, 0, {2, 4, 10}), std::runtime_error);
  EXPECT_NO_THROW(dp_shard(10, 2, 0, {0, 4, 10}));
}

// split_range: the parts of a flat range, rank after rank within each bucket,
// put back together, are the range; each rank's start is its own element.
TEST(Partition, SplitRangeFollowsTheBucketPieces) {
  const int64_t n = 147;
  for (int dp : {1, 2, 3, 4})
    for (int buckets : {1, 3, 5}) {
      const std::vector<int64_t> bounds = some_bounds(n, dp, buckets);
      for (int64_t lo : {int64_t(0), int64_t(5), int64_t(60)})
        for (int64_t hi : {lo + 1, lo + 40, n}) {
          std::vector<int64_t> flat; // the elements in the order the parts give
          std::vector<std::vector<RangePart>> per_rank;
          for (int d = 0; d < dp; ++d)
            per_rank.push_back(split_range(dp_shard(n, dp, d, bounds), lo, hi));
          for (size_t k = 0; k < per_rank[0].size(); ++k) {
            int64_t at = per_rank[0][k].flat;
            for (int d = 0; d < dp; ++d) {
              const RangePart &part = per_rank[size_t(d)][k];
              EXPECT_EQ(part.counts, per_rank[0][k].counts);
              const int64_t count = part.counts[size_t(d)];
              if (count > 0) {
                EXPECT_EQ(part.mine, at);
                // The shard coordinate maps back to the same flat element.
                const DpShard sh = dp_shard(n, dp, d, bounds);
                bool found = false;
                for (const DpShard::Piece &p : sh.pieces())
                  if (part.mine_shard >= p.shard && part.mine_shard < p.shard + p.count) {
                    EXPECT_EQ(p.flat + part.mine_shard - p.shard, part.mine);
                    found = true;
                  }
                EXPECT_TRUE(found);
              }
              for (int64_t i = 0; i < count; ++i)
                flat.push_back(at + i);
              at += count;
            }
          }
          std::vector<int64_t> want;
          for (int64_t i = lo; i < hi; ++i)
            want.push_back(i);
          EXPECT_EQ(flat, want) << "dp " << dp << " buckets " << buckets << " [" << lo
                                << ", " << hi << ")";
        }
    }
}

// Row-major multi-index helpers for the slicing reference.
std::vector<int64_t> unravel(int64_t flat, const int64_t *shape, int rank) {
  std::vector<int64_t> idx(static_cast<size_t>(rank));
  for (int d = rank - 1; d >= 0; --d) {
    idx[static_cast<size_t>(d)] = flat % shape[d];
    flat /= shape[d];
  }
  return idx;
}
int64_t ravel(const std::vector<int64_t> &idx, const int64_t *shape) {
  int64_t flat = 0;
  for (size_t d = 0; d < idx.size(); ++d)
    flat = flat * shape[d] + idx[d];
  return flat;
}

// Slice r of a param holds, at local index i, the full element whose index
// along shard_dim is i + r * local_extent (index arithmetic, independent of
// slice_geometry); and the slices of all tp ranks, put side by side the way
// comm.h defines all_gather ([outer, chunk] each -> [outer, tp * chunk] with
// rank r at column block r), are the full tensor again.
TEST(Partition, TpSlicesMatchIndexArithmeticAndReassemble) {
  for (int tp : {1, 2, 4}) {
    const Table t = mixed_table(1, tp, /*gap=*/3);
    const ProgramInfo &local = t.program;
    ASSERT_NO_THROW(validate_program(local)) << "tp " << tp;
    const FullProgramView view(local);
    const ProgramInfo &full = view.program();
    std::vector<double> full_buf(static_cast<size_t>(full.param_numel));
    for (size_t i = 0; i < full_buf.size(); ++i)
      full_buf[i] = static_cast<double>(i) + 1.0;
    std::vector<std::vector<double>> locals;
    for (int r = 0; r < tp; ++r) {
      locals.emplace_back(static_cast<size_t>(local.param_numel), -7.0);
      slice_params(local, view, r, full_buf.data(), locals.back().data());
    }
    for (int32_t p = 0; p < local.num_params; ++p) {
      const ParamInfo &lp = local.params[p];
      const ParamInfo &fp = view.param(p);
      const int32_t dim = tp > 1 ? lp.shard_dim : -1;
      for (int r = 0; r < tp; ++r) {
        for (int64_t i = 0; i < lp.numel; ++i) {
          std::vector<int64_t> idx = unravel(i, lp.shape, lp.rank);
          if (dim >= 0)
            idx[static_cast<size_t>(dim)] += r * lp.shape[dim];
          ASSERT_EQ(locals[static_cast<size_t>(r)][static_cast<size_t>(lp.offset + i)],
                    full_buf[static_cast<size_t>(fp.offset + ravel(idx, fp.shape))])
              << lp.name << " tp " << tp << " rank " << r << " element " << i;
        }
        // The gap after each param is not written.
        EXPECT_EQ(locals[static_cast<size_t>(r)][static_cast<size_t>(lp.offset + lp.numel)], -7.0);
      }
      // all_gather's layout, written out.
      const SliceGeometry g = slice_geometry(local, lp);
      EXPECT_EQ(g.outer * g.chunk, lp.numel);
      std::vector<double> gathered;
      if (dim < 0) {
        gathered.assign(locals[0].begin() + lp.offset,
                        locals[0].begin() + lp.offset + lp.numel);
      } else {
        for (int64_t o = 0; o < g.outer; ++o)
          for (int r = 0; r < tp; ++r) {
            const auto src = locals[static_cast<size_t>(r)].begin() + lp.offset + o * g.chunk;
            gathered.insert(gathered.end(), src, src + g.chunk);
          }
      }
      const std::vector<double> want(full_buf.begin() + fp.offset,
                                     full_buf.begin() + fp.offset + fp.numel);
      EXPECT_EQ(gathered, want) << lp.name << " tp " << tp;
    }
  }
}

// Over every rank of the grid, the norm ranges add up each gradient element
// of the model exactly once: not the padding, not the gaps, not the copies of
// whole params on tp ranks > 0. Integer values make the sums exact.
TEST(Partition, NormRangesCountEveryModelElementOnce) {
  for (int tp : {1, 2, 4})
    for (int dp : {1, 2, 3, 5}) {
      const Table t = mixed_table(dp, tp, /*gap=*/2);
      const ProgramInfo &local = t.program;
      const FullProgramView view(local);
      std::vector<double> full(static_cast<size_t>(view.program().param_numel));
      double want = 0.0;
      for (size_t i = 0; i < full.size(); ++i) {
        full[i] = static_cast<double>(static_cast<int64_t>(i % 7) - 3);
        want += full[i] * full[i];
      }
      for (int buckets : {1, 3}) {
        double got = 0.0;
        const std::vector<int64_t> bounds = some_bounds(local.param_numel, dp, buckets);
        const DpShard any = dp_shard(local.param_numel, dp, 0, bounds);
        for (int r = 0; r < tp; ++r) {
          // Gaps and padding hold garbage that must not count.
          std::vector<double> buf(static_cast<size_t>(any.padded_numel), 1000.0);
          slice_params(local, view, r, full.data(), buf.data());
          for (int d = 0; d < dp; ++d) {
            const DpShard s = dp_shard(local.param_numel, dp, d, bounds);
            std::vector<double> shard(static_cast<size_t>(s.size));
            for (const DpShard::Piece &p : s.pieces())
              std::copy_n(buf.begin() + p.flat, p.count, shard.begin() + p.shard);
            for (const auto &[lo, hi] : norm_ranges(local, s, r)) {
              ASSERT_LE(0, lo);
              ASSERT_LE(hi, s.size);
              got += sum_of_squares(shard.data() + lo, hi - lo);
            }
          }
        }
        EXPECT_EQ(got, want) << "dp " << dp << " tp " << tp << " buckets " << buckets;
      }
    }
}

// The view of a grid program is the single-rank program as checkpoints see
// it: names, full shapes, packed offsets, batch = the global batch, the
// param count, 1 x 1; the state.json it writes says the same; and
// init_params on it gives the single-rank program's initial weights.
TEST(FullView, OfAGridProgramIsTheSingleRankProgram) {
  const ProgramInfo &grid = *llamart::testing::bigram_grid_program<float, kV, 4, 8, 2, 2>();
  const ProgramInfo &single = *llamart::testing::bigram_program<float, kV, 4, 8>();
  ASSERT_NO_THROW(validate_program(grid));
  const FullProgramView view(grid);
  const ProgramInfo &full = view.program();
  EXPECT_EQ(full.num_params, single.num_params);
  EXPECT_EQ(full.param_numel, single.param_numel);
  EXPECT_EQ(full.full_param_numel, single.param_numel);
  EXPECT_EQ(full.batch, single.batch);
  EXPECT_EQ(full.global_batch, single.batch);
  EXPECT_EQ(full.grid_dp, 1);
  EXPECT_EQ(full.grid_tp, 1);
  EXPECT_EQ(full.train_step, nullptr); // metadata only
  for (int32_t p = 0; p < full.num_params; ++p) {
    EXPECT_STREQ(full.params[p].name, single.params[p].name);
    EXPECT_EQ(param_shape(full.params[p]), param_shape(single.params[p]));
    EXPECT_EQ(full.params[p].numel, single.params[p].numel);
    EXPECT_EQ(full.params[p].offset, single.params[p].offset);
    EXPECT_EQ(full.params[p].shard_dim, -1);
  }
  TrainState state;
  EXPECT_EQ(state_to_json(full, state)["model"], state_to_json(single, state)["model"]);
  std::vector<float> a(static_cast<size_t>(full.param_numel)), b(a.size());
  init_params(full, 77, a.data());
  init_params(single, 77, b.data());
  EXPECT_EQ(a, b);
}

// ---------------------------------------------------------------------------
// validate_program on the grid fields

struct ProgramCopy {
  std::vector<ParamInfo> params;
  ProgramInfo program;
  explicit ProgramCopy(const ProgramInfo &p)
      : params(p.params, p.params + p.num_params), program(p) {
    program.params = params.data();
  }
};

std::string validation_error(const ProgramInfo &p) {
  try {
    validate_program(p);
  } catch (const std::runtime_error &e) {
    return e.what();
  }
  return "";
}

TEST(ProgramCheck, RejectsInconsistentGridFields) {
  const ProgramInfo &single = *llamart::testing::bigram_program<float, kV, 4, 8>();
  const ProgramInfo &grid = *llamart::testing::bigram_grid_program<float, kV, 4, 8, 2, 2>();
  ASSERT_EQ(validation_error(single), "");
  ASSERT_EQ(validation_error(grid), ""); // a null logits is fine when partitioned
  auto expect_error = [](const ProgramInfo &p, const std::string &want) {
    const std::string got = validation_error(p);
    EXPECT_NE(got.find(want), std::string::npos) << "got: '" << got << "'";
    EXPECT_EQ(got.find('\n'), std::string::npos);
  };

  { // All v3 fields zero, as a table written before ABI v3 has them.
    ProgramCopy c(single);
    c.program.grid_dp = c.program.grid_tp = 0;
    c.program.global_batch = c.program.full_param_numel = 0;
    for (ParamInfo &p : c.params) {
      p.shard_dim = 0;
      std::fill(p.full_shape, p.full_shape + 4, 0);
    }
    expect_error(c.program, "program bigram: grid dp=0 x tp=0: both must be >= 1");
    c.program.grid_dp = c.program.grid_tp = 1;
    c.program.global_batch = c.program.batch;
    expect_error(c.program, "program bigram: param model.embed_tokens.weight has "
                            "full_shape [0, 0], which does not match its shape [16, 16] "
                            "(a whole tensor: they must be equal)");
  }
  { // shard_dim 0 on a 1 x 1 grid: the tensor is whole all the same.
    ProgramCopy c(single);
    for (ParamInfo &p : c.params)
      p.shard_dim = 0;
    EXPECT_EQ(validation_error(c.program), "");
    EXPECT_EQ(effective_shard_dim(c.program, c.params[0]), -1);
    EXPECT_EQ(slice_geometry(c.program, c.params[0]).outer, 1);
  }
  {
    ProgramCopy c(single);
    c.params[0].shard_dim = 2;
    expect_error(c.program, "param model.embed_tokens.weight has shard_dim 2 (must be "
                            "-1 or a dimension of its rank-2 shape)");
    c.params[0].shard_dim = -2;
    expect_error(c.program, "has shard_dim -2");
  }
  {
    ProgramCopy c(single);
    c.program.global_batch = 8;
    expect_error(c.program, "global_batch 8 is not batch 4 x grid_dp 1");
  }
  {
    ProgramCopy c(single);
    c.program.sequence_parallel = 2;
    expect_error(c.program, "sequence_parallel must be 0 or 1, got 2");
  }
  { // ZeRO-1 gradient buckets (ABI v5): the grid fixture names three.
    ASSERT_EQ(grid.num_grad_buckets, 3);
    ProgramCopy c(grid);
    const int64_t padded = (c.program.param_numel + 1) / 2 * 2;
    const int64_t odd[3] = {0, 63, padded}, short_end[3] = {0, 64, padded - 2};
    c.program.num_grad_buckets = 2;
    c.program.grad_bucket_bounds = odd;
    expect_error(c.program, "gradient buckets: bound #1 (63) is not a multiple of dp");
    c.program.grad_bucket_bounds = short_end;
    expect_error(c.program, "the bounds must run from 0 to the padded parameter count");
    c.program.grad_bucket_bounds = nullptr;
    expect_error(c.program, "num_grad_buckets 2 does not match its bounds table");
  }
  {
    ProgramCopy c(single);
    c.program.full_param_numel = 271;
    expect_error(c.program, "full_param_numel is 271 but the params' full shapes hold 272");
  }
  {
    ProgramCopy c(single);
    c.program.logits = nullptr;
    expect_error(c.program, "a function pointer (train_step, logits or eval_loss) is null");
  }
  { // tp = 2: the full shape must be twice the shape along shard_dim.
    ProgramCopy c(grid);
    c.params[0].full_shape[0] = 12;
    expect_error(c.program, "param model.embed_tokens.weight has full_shape [12, 16], "
                            "which does not match its shape [8, 16] split 2 ways along "
                            "dimension 0");
    ProgramCopy d(grid);
    d.params[0].full_shape[1] = 32;
    expect_error(d.program, "full_shape [16, 32]");
    ProgramCopy e(grid);
    e.program.global_batch = 2;
    expect_error(e.program, "global_batch 2 is not batch 2 x grid_dp 2");
  }
}

// ---------------------------------------------------------------------------
// The CLI of a partitioned binary

using llamart::testing::CliResult;

CliResult run_cli(const ProgramInfo *program, std::vector<std::string> args) {
  return llamart::testing::run_cli(program, "bigram-2x2", std::move(args));
}

TEST(Cli, PartitionedBinaryRefusesSingleRankSubcommands) {
  const ProgramInfo *grid = llamart::testing::bigram_grid_program<float, kV, 4, 8, 2, 2>();
  for (const char *command :
       {"generate", "export", "eval", "gradcheck", "memcheck"}) {
    const CliResult r = run_cli(grid, {command, "--checkpoint", "x"});
    EXPECT_EQ(r.code, 2) << command;
    EXPECT_EQ(r.err, std::string("bigram-2x2 ") + command +
                         ": error: bigram-2x2 is partitioned for dp=2 x tp=2; run " +
                         command +
                         " with a single-rank binary of the same model (llama-compile "
                         "without --dp/--tp): checkpoints are grid-independent\n");
  }
}

TEST(Cli, InfoShowsTheGridAndPerRankSizes) {
  const CliResult r =
      run_cli(llamart::testing::bigram_grid_program<float, kV, 4, 8, 2, 2>(), {"info", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["grid_dp"], 2);
  EXPECT_EQ(j["grid_tp"], 2);
  EXPECT_EQ(j["sequence_parallel"], false);
  EXPECT_EQ(j["batch"], 2);
  EXPECT_EQ(j["global_batch"], 4);
  EXPECT_EQ(j["params"], 8 * 16 + 3 + 16); // W rows, the gap, g
  EXPECT_EQ(j["full_params"], 16 * 16 + 16);
  EXPECT_EQ(j["grad_buckets"], 3);
  EXPECT_EQ(j["gen_batch"], 0);
}

// train() itself refuses a partitioned program when the process is not the
// program's grid (instead of training a slice of the model as if it were all).
TEST(Trainer, PartitionedProgramOutsideItsGridIsRefused) {
  TempDir tmp;
  TrainOptions o;
  o.data_dir = llamart::testing::make_bigram_dataset(tmp / "data", kV, true);
  o.run_dir = tmp / "run";
  o.steps = 2;
  o.quiet = true;
  try {
    llamart::train::train(*llamart::testing::bigram_grid_program<float, kV, 4, 8, 2, 2>(), o);
    FAIL() << "trained outside the grid";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find(
                  "program bigram is partitioned for dp=2 x tp=2 but the process "
                  "grid is dp=1 x tp=1"),
              std::string::npos)
        << e.what();
  }
}

// ---------------------------------------------------------------------------
// Multi-rank: grids against the single-rank run

const ProgramInfo *grid_program(const std::string &grid, const std::string &dtype) {
  using llamart::testing::bigram_grid_program;
  if (dtype == "f64" && grid == "2x2")
    return bigram_grid_program<double, kV, 4, 8, 2, 2>();
  if (dtype == "f32") {
    if (grid == "2x1")
      return bigram_grid_program<float, kV, 4, 8, 2, 1>();
    if (grid == "1x2")
      return bigram_grid_program<float, kV, 4, 8, 1, 2>();
    if (grid == "2x2")
      return bigram_grid_program<float, kV, 4, 8, 2, 2>();
    if (grid == "4x1")
      return bigram_grid_program<float, kV, 4, 8, 4, 1>();
    if (grid == "1x4")
      return bigram_grid_program<float, kV, 4, 8, 1, 4>();
  }
  if (grid == "1x1")
    return dtype == "f64" ? llamart::testing::bigram_program<double, kV, 4, 8>()
                          : llamart::testing::bigram_program<float, kV, 4, 8>();
  return nullptr;
}

// `distributed_test bigram-grid GRID DTYPE <subcommand> ...`: one rank.
// BIGRAM_SIGTERM_RANK / BIGRAM_SIGTERM_AT make that world rank alone raise
// SIGTERM in its AT-th train step (a signal that reaches one rank first).
int rank_main(int argc, char **argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s bigram-grid DPxTP f32|f64 <subcommand> ...\n", argv[0]);
    return 2;
  }
  const ProgramInfo *program = grid_program(argv[2], argv[3]);
  if (!program) {
    std::fprintf(stderr, "%s: no bigram program for grid %s, dtype %s\n", argv[0],
                 argv[2], argv[3]);
    return 2;
  }
  const char *signal_rank = std::getenv("BIGRAM_SIGTERM_RANK");
  const char *world_rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (signal_rank && world_rank && std::strcmp(signal_rank, world_rank) == 0)
    llamart::testing::raise_sigterm_at_call = std::atoll(std::getenv("BIGRAM_SIGTERM_AT"));
  std::vector<char *> args = {argv[0]};
  args.insert(args.end(), argv + 4, argv + argc);
  return llamart::run_main(static_cast<int>(args.size()), args.data(), program);
}

struct Launch {
  int code;
  std::string log; // stdout and stderr of every rank
};

std::string read_text(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Starts this executable as `ranks` MPI ranks (ranks = 0: one plain process,
// no mpirun) running `bigram-grid GRID DTYPE args...`.
Launch launch(const TempDir &tmp, int ranks, const std::string &grid,
              const std::string &dtype, const std::vector<std::string> &args,
              const std::string &env = "") {
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  std::string cmd = "cd " + (tmp / "") + " && ";
  // One OpenMP thread per rank: 4 ranks share 2 cores here.
  cmd += "OMP_NUM_THREADS=1 LLAMA_COMM_TIMEOUT_S=120 " + env + " timeout 300 ";
  if (ranks > 0)
    cmd += std::string(LLAMA_MPIEXEC) +
           " --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS "
           "-x LLAMA_COMM_TIMEOUT_S" +
           (env.empty() ? std::string() : " -x BIGRAM_SIGTERM_RANK -x BIGRAM_SIGTERM_AT") +
           " -n " + std::to_string(ranks) + " ";
  cmd += self + " bigram-grid " + grid + " " + dtype;
  for (const std::string &a : args)
    cmd += " '" + a + "'";
  const std::string log = tmp / "launch.log";
  cmd += " > " + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  Launch l{WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text(log)};
  return l;
}

std::vector<json> read_jsonl(const std::string &path) {
  std::ifstream in(path);
  std::vector<json> out;
  std::string line;
  while (std::getline(in, line))
    out.push_back(json::parse(line));
  return out;
}

double rel_diff(double a, double b) {
  return std::fabs(a - b) / std::max(std::fabs(b), 1e-300);
}

// Compares the metrics of run `got` with those of `want`: the same records
// in the same order (steps, skips, rollbacks, evals), lr exact, loss, grad
// norm and val loss within `tol` relative. A run stopped and resumed at step
// K logs an end-of-run val loss at K that the straight run has not:
// `stopped_at` > 0 drops that record of `got`. Returns the largest loss
// difference seen.
double expect_same_metrics(const std::string &got, const std::string &want, double tol,
                           int64_t stopped_at = 0) {
  std::vector<json> a = read_jsonl(got);
  const std::vector<json> b = read_jsonl(want);
  a.erase(std::remove_if(a.begin(), a.end(),
                         [&](const json &r) {
                           return stopped_at > 0 && r.contains("val_loss") &&
                                  r["step"] == stopped_at;
                         }),
          a.end());
  EXPECT_EQ(a.size(), b.size()) << got << " vs " << want;
  double worst = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    for (const char *key : {"step", "skipped", "rollback_to", "lr"})
      EXPECT_EQ(a[i].value(key, json()), b[i].value(key, json())) << key << " of record " << i;
    for (const char *key : {"loss", "grad_norm", "val_loss"}) {
      const json x = a[i].value(key, json()), y = b[i].value(key, json());
      EXPECT_EQ(x.is_number(), y.is_number()) << key << " of record " << i;
      if (!x.is_number() || !y.is_number())
        continue;
      const double d = rel_diff(x.get<double>(), y.get<double>());
      EXPECT_LE(d, tol) << key << " of record " << i << ": " << x << " vs " << y;
      if (std::strcmp(key, "grad_norm") != 0)
        worst = std::max(worst, d);
    }
  }
  return worst;
}

// Every tensor of two safetensors files within `tol` relative to the largest
// magnitude of the reference tensor. Returns the largest such difference.
double expect_same_tensors(const std::string &got, const std::string &want, double tol) {
  const llamart::ckpt::File a = llamart::ckpt::read_safetensors(got);
  const llamart::ckpt::File b = llamart::ckpt::read_safetensors(want);
  EXPECT_EQ(a.tensors.size(), b.tensors.size());
  double worst = 0.0;
  for (const auto &[name, tb] : b.tensors) {
    const auto it = a.tensors.find(name);
    if (it == a.tensors.end()) {
      ADD_FAILURE() << got << " lacks " << name;
      continue;
    }
    EXPECT_EQ(it->second.shape, tb.shape) << name;
    EXPECT_EQ(it->second.dtype, tb.dtype) << name;
    const std::vector<double> x = it->second.to_f64(), y = tb.to_f64();
    if (x.size() != y.size())
      continue;
    double scale = 0.0, diff = 0.0;
    for (size_t i = 0; i < y.size(); ++i) {
      scale = std::max(scale, std::fabs(y[i]));
      diff = std::max(diff, std::fabs(x[i] - y[i]));
    }
    const double d = scale > 0 ? diff / scale : diff;
    EXPECT_LE(d, tol) << name << " in " << got;
    worst = std::max(worst, d);
  }
  return worst;
}

std::string checkpoint(const std::string &run, int step) {
  return run + "/checkpoints/" + checkpoint_name(step);
}

// The single-rank reference, in this process.
void train_single(const std::string &dtype, const std::vector<std::string> &args) {
  std::vector<std::string> all = {"bigram-1x1"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char *> argv;
  for (std::string &a : all)
    argv.push_back(a.data());
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  const int code = llamart::run_main(static_cast<int>(argv.size()), argv.data(),
                                     grid_program("1x1", dtype));
  ::testing::internal::GetCapturedStdout();
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(code, 0) << err;
}

std::vector<std::string> train_args(const std::string &data, const std::string &run,
                                    int steps, std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"train", "--data", data, "--run-dir", run,
                                "--steps", std::to_string(steps), "--lr", "0.05",
                                "--warmup", "4", "--quiet"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

int ranks_of(const std::string &grid) {
  return std::stoi(grid.substr(0, grid.find('x'))) * std::stoi(grid.substr(grid.find('x') + 1));
}

struct GridCase {
  std::string grid, dtype;
  double tol;
};

// Test names and failure messages show "2x2 f32", not the struct's bytes.
void PrintTo(const GridCase &c, std::ostream *os) { *os << c.grid << " " << c.dtype; }

class MultiRank : public ::testing::TestWithParam<GridCase> {};

// 20 updates of 2 micro-batches with evaluations: the loss sequence, the
// gradient norms, the val losses and the final model and AdamW state equal
// the single-rank run's to rounding (f32: the order of float sums changes;
// f64: far tighter).
TEST_P(MultiRank, TrainingEqualsTheSingleRankRun) {
  const GridCase c = GetParam();
  TempDir tmp;
  const std::string data = llamart::testing::make_bigram_dataset(tmp / "data", kV, true);
  const std::vector<std::string> extra = {"--grad-accum", "2", "--eval-every", "5",
                                          "--eval-batches", "3", "--checkpoint-every", "10"};
  train_single(c.dtype, train_args(data, tmp / "one", 20, extra));
  const Launch l = launch(tmp, ranks_of(c.grid), c.grid, c.dtype,
                          train_args(data, tmp / "grid", 20, extra));
  ASSERT_EQ(l.code, 0) << l.log;
  // Rank 0 alone reports: the only output is its final losses.
  EXPECT_EQ(l.log.find("final train loss"), l.log.rfind("final train loss")) << l.log;
  const double loss_diff = expect_same_metrics(tmp / "grid/metrics.jsonl",
                                               tmp / "one/metrics.jsonl", c.tol);
  double tensor_diff = 0.0;
  for (int step : {10, 20})
    for (const char *f : {"model.safetensors", "optimizer.safetensors"})
      tensor_diff = std::max(
          tensor_diff, expect_same_tensors(checkpoint(tmp / "grid", step) + "/" + f,
                                           checkpoint(tmp / "one", step) + "/" + f, c.tol));
  // The sidecar is the single-rank one: same model facts, data position, counters.
  json a = json::parse(read_text(checkpoint(tmp / "grid", 20) + "/state.json"));
  json b = json::parse(read_text(checkpoint(tmp / "one", 20) + "/state.json"));
  for (json *j : {&a, &b})
    for (const char *volatile_key : {"elapsed_s", "last_loss", "checksums", "state_checksum"})
      j->erase(volatile_key);
  a.erase("anomaly");
  b.erase("anomaly");
  EXPECT_EQ(a, b);
  std::printf("[ grid %s %s ] max rel diff: losses %.3g, checkpoint tensors %.3g\n",
              c.grid.c_str(), c.dtype.c_str(), loss_diff, tensor_diff);
}

INSTANTIATE_TEST_SUITE_P(Grids, MultiRank,
                         ::testing::Values(GridCase{"2x1", "f32", 1e-5},
                                           GridCase{"1x2", "f32", 1e-5},
                                           GridCase{"2x2", "f32", 1e-5},
                                           GridCase{"4x1", "f32", 1e-5},
                                           GridCase{"1x4", "f32", 1e-5},
                                           GridCase{"2x2", "f64", 1e-12}),
                         [](const auto &info) {
                           return "dp" + info.param.grid.substr(0, 1) + "_tp" +
                                  info.param.grid.substr(2) + "_" + info.param.dtype;
                         });

// Checkpoints are grid-independent: 10 updates on 2 x 2 then 10 more on one
// rank, and 10 on one rank then 10 on 2 x 2, both equal 20 on one rank.
TEST(MultiRankCheckpoints, ARunMovesBetweenGrids) {
  TempDir tmp;
  const std::string data = llamart::testing::make_bigram_dataset(tmp / "data", kV, true);
  const std::vector<std::string> every = {"--checkpoint-every", "10"};
  train_single("f32", train_args(data, tmp / "straight", 20, every));

  auto with = [&](std::vector<std::string> a, std::vector<std::string> b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  Launch l = launch(tmp, 4, "2x2", "f32",
                    with(train_args(data, tmp / "grid_first", 20, every), {"--stop-at", "10"}));
  ASSERT_EQ(l.code, 0) << l.log;
  train_single("f32", with(train_args(data, tmp / "grid_first", 20, every), {"--resume"}));

  train_single("f32", with(train_args(data, tmp / "one_first", 20, every), {"--stop-at", "10"}));
  l = launch(tmp, 4, "2x2", "f32",
             with(train_args(data, tmp / "one_first", 20, every), {"--resume"}));
  ASSERT_EQ(l.code, 0) << l.log;

  for (const char *run : {"grid_first", "one_first"}) {
    SCOPED_TRACE(run);
    const double loss = expect_same_metrics(tmp / run + "/metrics.jsonl",
                                            tmp / "straight/metrics.jsonl", 1e-5, 10);
    double tensors = 0.0;
    for (const char *f : {"model.safetensors", "optimizer.safetensors"})
      tensors = std::max(tensors,
                         expect_same_tensors(checkpoint(tmp / run, 20) + "/" + f,
                                             checkpoint(tmp / "straight", 20) + "/" + f, 1e-5));
    std::printf("[ %s ] max rel diff: losses %.3g, checkpoint tensors %.3g\n", run, loss,
                tensors);
  }
}

// Skips and rollbacks are decided together: NaN gradients on attempts 3 and
// 12-14 (a burst that rolls back to the step-10 checkpoint) give the same
// records on 2 x 2 as on one rank, and the same result.
TEST(MultiRankReliability, SkipsAndRollbacksMatchTheSingleRankRun) {
  TempDir tmp;
  const std::string data = llamart::testing::make_bigram_dataset(tmp / "data", kV, true);
  const std::vector<std::string> extra = {"--checkpoint-every", "5", "--keep-last", "0",
                                          "--inject", "nan@3,nan@12,nan@13,nan@14"};
  train_single("f32", train_args(data, tmp / "one", 20, extra));
  const Launch l = launch(tmp, 4, "2x2", "f32", train_args(data, tmp / "grid", 20, extra));
  ASSERT_EQ(l.code, 0) << l.log;
  expect_same_metrics(tmp / "grid/metrics.jsonl", tmp / "one/metrics.jsonl", 1e-5);
  int skips = 0, rollbacks = 0;
  for (const json &r : read_jsonl(tmp / "grid/metrics.jsonl")) {
    skips += r.contains("skipped");
    rollbacks += r.contains("rollback_to");
  }
  EXPECT_EQ(skips, 4);
  EXPECT_EQ(rollbacks, 1);
  // One warning per event (rank 0's), not one per rank.
  size_t lines = 0;
  for (size_t pos = l.log.find("rolled back to"); pos != std::string::npos;
       pos = l.log.find("rolled back to", pos + 1))
    ++lines;
  EXPECT_EQ(lines, 1u) << l.log;
  expect_same_tensors(checkpoint(tmp / "grid", 20) + "/model.safetensors",
                      checkpoint(tmp / "one", 20) + "/model.safetensors", 1e-5);
}

// SIGTERM reaching one rank stops the whole job after the same update: every
// rank exits 128 + 15, one checkpoint is written, and resuming from it (on 2
// x 2) finishes as an uninterrupted single-rank run does.
TEST(MultiRankReliability, AStopSignalOnOneRankStopsEveryRankTogether) {
  TempDir tmp;
  const std::string data = llamart::testing::make_bigram_dataset(tmp / "data", kV, true);
  train_single("f32", train_args(data, tmp / "one", 10));
  Launch l = launch(tmp, 4, "2x2", "f32", train_args(data, tmp / "grid", 10),
                    "BIGRAM_SIGTERM_RANK=3 BIGRAM_SIGTERM_AT=4");
  EXPECT_EQ(l.code, 128 + SIGTERM) << l.log;
  EXPECT_EQ(read_text(tmp / "grid/checkpoints/LATEST"), "step_000004\n") << l.log;
  l = launch(tmp, 4, "2x2", "f32",
             [&] {
               auto a = train_args(data, tmp / "grid", 10);
               a.push_back("--resume");
               return a;
             }());
  ASSERT_EQ(l.code, 0) << l.log;
  expect_same_metrics(tmp / "grid/metrics.jsonl", tmp / "one/metrics.jsonl", 1e-5);
}

// An error on rank 0 alone (its run directory check) while the other ranks
// go on into the first step's collectives ends the job at once with rank 0's
// message, instead of leaving three ranks waiting.
TEST(MultiRankReliability, AnErrorOnOneRankEndsTheJob) {
  TempDir tmp;
  const std::string data = llamart::testing::make_bigram_dataset(tmp / "data", kV, true);
  train_single("f32", train_args(data, tmp / "run", 2));
  const Launch l = launch(tmp, 4, "2x2", "f32", train_args(data, tmp / "run", 4));
  EXPECT_NE(l.code, 0);
  EXPECT_NE(l.code, 124) << "timed out: " << l.log; // `timeout` gave up
  EXPECT_NE(l.log.find("rank 0: " + fs::read_symlink("/proc/self/exe").string() +
                       " train: error: --run-dir: "),
            std::string::npos)
      << l.log;
  EXPECT_NE(l.log.find("already holds checkpoints; pass --resume"), std::string::npos)
      << l.log;
}

// A 2 x 2 binary started as one process, or as a job of the wrong size, says
// how to start it, in one line per rank, and exits 1.
TEST(MultiRankReliability, TheWrongNumberOfRanksIsOneLine) {
  TempDir tmp;
  const std::string data = llamart::testing::make_bigram_dataset(tmp / "data", kV, true);
  Launch l = launch(tmp, 0, "2x2", "f32", train_args(data, tmp / "run", 2));
  EXPECT_EQ(l.code, 1) << l.log;
  EXPECT_EQ(l.log, std::string(fs::read_symlink("/proc/self/exe").string()) +
                       " train: error: this binary is partitioned for dp=2 x tp=2 = 4 "
                       "ranks but runs on 1; start it with llama-run -n 4\n");
  l = launch(tmp, 2, "2x2", "f32", train_args(data, tmp / "run", 2));
  EXPECT_NE(l.code, 0) << l.log;
  EXPECT_NE(l.log.find("partitioned for dp=2 x tp=2 = 4 ranks but runs on 2; start it "
                       "with llama-run -n 4"),
            std::string::npos)
      << l.log;
}

} // namespace

int main(int argc, char **argv) {
  if (argc > 1 && std::strcmp(argv[1], "bigram-grid") == 0)
    return rank_main(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
