//===- RematBudget.cpp - remat under an activation-memory budget ---------===//
//
// The graph of the cut (one pair of nodes per forward op v):
//
//   source --lambda * cost(v)--> v_in --bytes(v)--> v_out
//   u_out --inf--> v_in           for every operand u of v
//   v_out --inf--> sink           when the backward reads v
//
// A minimum cut puts v_in on the sink side when v is recomputed (paying
// lambda * cost), cuts v_in -> v_out when v is saved (paying its bytes),
// and the infinite edges make every value the backward needs available:
// saved, or recomputed from values that are. Values that leave a
// transformer layer are never recomputed, so recomputation stays inside one
// layer's backward instead of rebuilding the network from the embedding.
// Sweeping lambda traces the convex hull of (saved bytes, recompute cost);
// each distinct plan is then compiled and measured, and the cheapest whose
// real arena fits wins.
//
//===----------------------------------------------------------------------===//
#include "passes/remat/RematBudget.h"

#include "dialects/llama/IR/LlamaOps.h"
#include "passes/autodiff/Autodiff.h"
#include "passes/fusion/Fuse.h"
#include "passes/lowering/PlanMemory.h"
#include "passes/remat/CostModel.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSwitch.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <deque>
#include <limits>
#include <set>

using namespace mlir;
using namespace mlir::llama;

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

/// Dinic's maximum flow on a small graph with real capacities.
class MaxFlow {
public:
  explicit MaxFlow(int n) : adj(n), level(n), next(n) {}

  void addEdge(int from, int to, double cap) {
    adj[from].push_back(edges.size());
    edges.push_back({to, cap});
    adj[to].push_back(edges.size());
    edges.push_back({from, 0});
  }

  void run(int s, int t) {
    while (bfs(s, t)) {
      std::fill(next.begin(), next.end(), 0);
      while (dfs(s, t, kInf) > 0) {
      }
    }
    bfs(s, t); // leaves `level` >= 0 exactly on the source side
  }

  bool onSourceSide(int v) const { return level[v] >= 0; }

private:
  struct Edge {
    int to;
    double cap;
  };
  static bool positive(double c) { return c > 1e-9; }

  bool bfs(int s, int t) {
    std::fill(level.begin(), level.end(), -1);
    std::deque<int> q{s};
    level[s] = 0;
    while (!q.empty()) {
      int v = q.front();
      q.pop_front();
      for (int e : adj[v])
        if (positive(edges[e].cap) && level[edges[e].to] < 0) {
          level[edges[e].to] = level[v] + 1;
          q.push_back(edges[e].to);
        }
    }
    return level[t] >= 0;
  }

  double dfs(int v, int t, double pushed) {
    if (v == t)
      return pushed;
    for (size_t &i = next[v]; i < adj[v].size(); ++i) {
      Edge &e = edges[adj[v][i]];
      if (!positive(e.cap) || level[e.to] != level[v] + 1)
        continue;
      double got = dfs(e.to, t, std::min(pushed, e.cap));
      if (got > 0) {
        e.cap -= got;
        edges[adj[v][i] ^ 1].cap += got;
        return got;
      }
    }
    return 0;
  }

  std::vector<Edge> edges;
  std::vector<std::vector<size_t>> adj;
  std::vector<int> level;
  std::vector<size_t> next;
};

double resultBytes(Operation *op) {
  double b = 0;
  for (Value v : op->getResults())
    if (auto t = dyn_cast<RankedTensorType>(v.getType()))
      b += double(t.getNumElements()) * (t.getElementTypeBitWidth() / 8);
  return b;
}

std::optional<int64_t> layerOf(Operation *op) {
  if (auto a = op->getAttrOfType<IntegerAttr>(kLayerAttr))
    return a.getInt();
  return std::nullopt;
}

/// Which ops of @forward the backward reads, found by deriving a backward
/// that saves everything (on a copy).
FailureOr<std::vector<bool>> neededByBackward(ModuleOp module, size_t numOps) {
  OwningOpRef<ModuleOp> copy = module.clone();
  auto forward = copy->lookupSymbol<func::FuncOp>("forward");
  applyRematMarks(forward, std::vector<bool>(numOps, true));
  if (failed(buildTrainStep(*copy, forward)))
    return failure();
  auto step = copy->lookupSymbol<func::FuncOp>("train_step");
  DenseMap<Operation *, size_t> index;
  size_t i = 0;
  for (Operation &op : step.getBody().front()) {
    if (op.hasAttr(kBackwardAttr))
      break;
    if (op.getDialect() && op.getDialect()->getNamespace() == "llama")
      index[&op] = i++;
  }
  std::vector<bool> needed(numOps, false);
  step.walk([&](Operation *op) {
    if (!op->hasAttr(kBackwardAttr))
      return;
    for (Value v : op->getOperands())
      if (Operation *def = v.getDefiningOp())
        if (auto it = index.find(def); it != index.end())
          needed[it->second] = true;
  });
  return needed;
}
} // namespace

std::vector<Operation *> mlir::llama::rematOps(func::FuncOp forward) {
  std::vector<Operation *> ops;
  // Our ops and the upstream collectives llama-shard inserts (they carry
  // VJPOpInterface as an external model).
  for (Operation &op : forward.getBody().front())
    if ((op.getDialect() && op.getDialect()->getNamespace() == "llama") ||
        isa<VJPOpInterface>(op))
      ops.push_back(&op);
  return ops;
}

void mlir::llama::applyRematMarks(func::FuncOp forward,
                                  const std::vector<bool> &save) {
  auto ops = rematOps(forward);
  MLIRContext *ctx = forward.getContext();
  for (size_t i = 0; i < ops.size(); ++i)
    ops[i]->setAttr(kRematAttr,
                    StringAttr::get(ctx, save[i] ? "save" : "recompute"));
}

FailureOr<RematCandidate>
mlir::llama::measureRematPlan(ModuleOp module, const std::vector<bool> &save,
                              double balance, bool fuse) {
  OwningOpRef<ModuleOp> copy = module.clone();
  auto forward = copy->lookupSymbol<func::FuncOp>("forward");
  applyRematMarks(forward, save);
  if (failed(buildTrainStep(*copy, forward)))
    return failure();
  auto step = copy->lookupSymbol<func::FuncOp>("train_step");
  RematCandidate c;
  c.save = save;
  std::set<Operation *> savedDefs;
  step.walk([&](Operation *op) {
    if (op->hasAttr(kRecomputedAttr))
      c.recomputeCost += costInFlops(op, balance);
    if (!op->hasAttr(kBackwardAttr))
      return;
    for (Value v : op->getOperands()) {
      while (v.getDefiningOp() && isViewOp(v.getDefiningOp()))
        v = v.getDefiningOp()->getOperand(0);
      if (Operation *def = v.getDefiningOp(); def && !def->hasAttr(kBackwardAttr))
        savedDefs.insert(def);
    }
  });
  for (Operation *def : savedDefs)
    c.savedBytes += static_cast<int64_t>(resultBytes(def));
  // The arena of the program as it will be built: fused when the pipeline
  // fuses (the costs above are counted on the unfused ops).
  if (fuse)
    fuseFunction(step);
  FailureOr<MemoryPlanStats> plan = planFunctionMemory(step, 64);
  if (failed(plan))
    return failure();
  c.arenaBytes = plan->arenaBytes;
  return c;
}

LogicalResult mlir::llama::planRematForBudget(
    ModuleOp module, func::FuncOp forward, int64_t budgetBytes, double balance,
    bool fuse, std::vector<RematCandidate> fixedPlans, RematCandidate *chosen) {
  std::vector<Operation *> ops = rematOps(forward);
  const size_t n = ops.size();
  FailureOr<std::vector<bool>> needed = neededByBackward(module, n);
  if (failed(needed))
    return failure();
  DenseMap<Operation *, size_t> index;
  for (size_t i = 0; i < n; ++i)
    index[ops[i]] = i;

  std::vector<double> cost(n), bytes(n);
  std::vector<bool> boundary(n, false);
  bool layered = false;
  for (size_t i = 0; i < n; ++i) {
    // Identical layers tie exactly, and a minimum cut then switches all of
    // them at once. A tiny per-layer tilt orders the ties, so the sweep also
    // finds the plans that treat the first k layers one way and the rest the
    // other: budgets between two policies get plans between them.
    double tilt = 1.0 + 1e-6 * static_cast<double>(layerOf(ops[i]).value_or(-1) + 1);
    cost[i] = costInFlops(ops[i], balance) * tilt;
    // Saving a view saves its input: a view is never a saved buffer itself.
    bytes[i] = isViewOp(ops[i]) ? kInf : resultBytes(ops[i]);
    layered |= layerOf(ops[i]).has_value();
  }
  if (layered)
    for (size_t i = 0; i < n; ++i)
      for (Value r : ops[i]->getResults())
        for (Operation *user : r.getUsers())
          if (layerOf(user) != layerOf(ops[i]) && !isViewOp(ops[i]))
            boundary[i] = true;

  auto cut = [&](double lambda) {
    MaxFlow flow(2 + 2 * static_cast<int>(n));
    auto in = [](size_t i) { return 2 + 2 * static_cast<int>(i); };
    auto out = [](size_t i) { return 3 + 2 * static_cast<int>(i); };
    for (size_t i = 0; i < n; ++i) {
      flow.addEdge(0, in(i), boundary[i] ? kInf : lambda * cost[i]);
      flow.addEdge(in(i), out(i), bytes[i]);
      for (Value operand : ops[i]->getOperands())
        if (Operation *def = operand.getDefiningOp())
          if (auto it = index.find(def); it != index.end())
            flow.addEdge(out(it->second), in(i), kInf);
      if ((*needed)[i])
        flow.addEdge(out(i), 1, kInf);
    }
    flow.run(0, 1);
    std::vector<bool> save(n);
    for (size_t i = 0; i < n; ++i)
      save[i] = flow.onSourceSide(in(i)); // sink side: recomputed
    return save;
  };

  // Lambda converts FLOP-equivalents to bytes: sweep it over many decades,
  // then bisect between neighbouring lambdas that give different plans to
  // find the plans in between.
  std::set<std::vector<bool>> seen;
  std::vector<RematCandidate> candidates;
  std::vector<std::pair<double, std::vector<bool>>> sweep;
  for (int k = -60; k <= 20; ++k) {
    double lambda = std::pow(10.0, k / 4.0);
    sweep.push_back({lambda, cut(lambda)});
  }
  std::vector<std::pair<double, std::vector<bool>>> plans(sweep);
  std::function<void(double, const std::vector<bool> &, double,
                     const std::vector<bool> &, int)>
      bisect = [&](double lo, const std::vector<bool> &a, double hi,
                   const std::vector<bool> &b, int depth) {
        if (a == b || depth == 0)
          return;
        double mid = std::sqrt(lo * hi);
        std::vector<bool> m = cut(mid);
        plans.push_back({mid, m});
        bisect(lo, a, mid, m, depth - 1);
        bisect(mid, m, hi, b, depth - 1);
      };
  for (size_t k = 0; k + 1 < sweep.size(); ++k)
    bisect(sweep[k].first, sweep[k].second, sweep[k + 1].first,
           sweep[k + 1].second, 24);
  for (auto &[lambda, save] : plans) {
    if (!seen.insert(save).second)
      continue;
    FailureOr<RematCandidate> c = measureRematPlan(module, save, balance, fuse);
    if (failed(c))
      return failure();
    char text[64];
    std::snprintf(text, sizeof(text), "min-cut (lambda %.3g)", lambda);
    c->origin = text;
    candidates.push_back(std::move(*c));
  }
  for (RematCandidate &fixed : fixedPlans)
    if (seen.insert(fixed.save).second)
      candidates.push_back(std::move(fixed));

  const RematCandidate *best = nullptr, *smallest = nullptr;
  for (const RematCandidate &c : candidates) {
    if (!smallest || c.arenaBytes < smallest->arenaBytes)
      smallest = &c;
    if (c.arenaBytes > budgetBytes)
      continue;
    if (!best || c.recomputeCost < best->recomputeCost ||
        (c.recomputeCost == best->recomputeCost && c.arenaBytes < best->arenaBytes))
      best = &c;
  }
  if (!best)
    return forward.emitError()
           << "llama-remat: no plan fits an activation budget of " << budgetBytes
           << " bytes; the smallest arena reached is " << smallest->arenaBytes
           << " bytes (" << smallest->origin << ")";
  applyRematMarks(forward, best->save);
  if (chosen)
    *chosen = *best;
  return success();
}

/// "123", "64MiB", "12GiB", "1.5GB": bytes, binary or decimal suffixes.
std::optional<int64_t> mlir::llama::parseByteSize(StringRef text) {
  text = text.trim();
  size_t digits = 0;
  while (digits < text.size() &&
         (llvm::isDigit(text[digits]) || text[digits] == '.'))
    ++digits;
  double value;
  if (digits == 0 || text.take_front(digits).getAsDouble(value))
    return std::nullopt;
  StringRef unit = text.drop_front(digits).trim();
  double scale = llvm::StringSwitch<double>(unit.lower())
                     .Cases({"", "b"}, 1.0)
                     .Case("k", 1024.0).Case("kib", 1024.0).Case("kb", 1e3)
                     .Case("m", 1048576.0).Case("mib", 1048576.0).Case("mb", 1e6)
                     .Case("g", 1073741824.0).Case("gib", 1073741824.0).Case("gb", 1e9)
                     .Case("t", 1099511627776.0).Case("tib", 1099511627776.0).Case("tb", 1e12)
                     .Default(-1.0);
  if (scale < 0)
    return std::nullopt;
  return static_cast<int64_t>(value * scale);
}
