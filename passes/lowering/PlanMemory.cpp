//===- PlanMemory.cpp - llama-plan-memory: one arena, liveness offsets ----===//
//
// The whole step is one straight-line block with static shapes, so every
// buffer's lifetime is an exact interval of op indices and the arena can be
// planned offline once: no allocation at run time, and a peak that the
// compiler can report before anything runs.
//
//===----------------------------------------------------------------------===//
#include "dialects/llama/IR/LlamaOps.h"
#include "passes/Passes.h"
#include "passes/lowering/PlanMemory.h"
#include "passes/lowering/Collectives.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/DenseSet.h"

#include <cstdint>
#include <functional>

#define DEBUG_TYPE "llama-plan-memory"

namespace mlir::llama {
#define GEN_PASS_DEF_LLAMAPLANMEMORY
#include "passes/Passes.h.inc"
} // namespace mlir::llama

using namespace mlir;
using namespace mlir::llama;

namespace {
struct Buffer {
  Value value;
  int64_t bytes = 0;
  int64_t def = 0;
  int64_t lastUse = 0;
  int64_t offset = -1; // -1 while unplaced; stays -1 when bound to an output
  int64_t output = -1;
  bool merged = false;  // computed in place into another buffer
};

int64_t tensorBytes(Value v) {
  auto t = cast<RankedTensorType>(v.getType());
  return t.getNumElements() * (t.getElementTypeBitWidth() / 8);
}

int64_t alignUp(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

/// The value whose storage `v` uses, seen through views.
Value storageRoot(Value v) {
  while (Operation *def = v.getDefiningOp()) {
    if (!isViewOp(def))
      break;
    v = def->getOperand(0);
  }
  return v;
}

struct LlamaPlanMemoryPass : mlir::llama::impl::LlamaPlanMemoryBase<LlamaPlanMemoryPass> {
  using Base::Base;

  void runOnOperation() override {
    if (alignment < 1 || (alignment & (alignment - 1))) {
      getOperation().emitError("llama-plan-memory: alignment must be a power of two");
      return signalPassFailure();
    }
    if (storageBytes < 0) {
      getOperation().emitError("llama-plan-memory: storage-bytes must be >= 0");
      return signalPassFailure();
    }
    // With a storage size, a float buffer takes it unless its value (or the
    // value its view or collective passes through) is recorded as fp32.
    std::function<bool(Value)> keptFp32 = [&](Value v) {
      Operation *def = v.getDefiningOp();
      if (!def)
        return false;
      if (auto fp32 = def->getAttrOfType<DenseI64ArrayAttr>(kFp32Attr);
          fp32 && llvm::is_contained(fp32.asArrayRef(),
                                     int64_t(cast<OpResult>(v).getResultNumber())))
        return true;
      return (isViewOp(def) || isShardCollective(def)) && keptFp32(def->getOperand(0));
    };
    auto bytesOf = [&](Value v) -> int64_t {
      auto t = cast<RankedTensorType>(v.getType());
      if (!isa<FloatType>(t.getElementType()))
        return tensorBytes(v);
      return t.getNumElements() * (keptFp32(v) ? 4 : storageBytes);
    };
    for (auto fn : getOperation().getOps<func::FuncOp>()) {
      if (fn.isExternal())
        continue;
      if (failed(planFunctionMemory(
              fn, alignment, storageBytes > 0 ? function_ref<int64_t(Value)>(bytesOf) : nullptr,
              collectivesInFlight)))
        return signalPassFailure();
    }
  }

};
} // namespace

/// For each result that may be written over one of its op's operands, the
/// operands it may take (in order of preference). The kernels of these ops
/// read each element of the aliased operand before writing the same element
/// of the result (runtime/cpu/kernels.h says which).
static SmallVector<std::pair<unsigned, SmallVector<unsigned>>>
inPlaceOperands(Operation *op) {
  if (isa<AddOp>(op))
    return {{0u, {0u, 1u}}};
  if (auto sum = dyn_cast<SumOp>(op)) {
    SmallVector<unsigned> all;
    for (unsigned i = 0; i < sum->getNumOperands(); ++i)
      all.push_back(i);
    return {{0u, all}};
  }
  if (isa<AddRMSNormOp>(op))
    return {{0u, {0u, 1u}}};
  if (auto grad = dyn_cast<RMSNormGradRstdOp>(op); grad && grad.getAccumulate())
    return {{0u, {4u}}};
  if (isa<CrossEntropyFusedOp>(op))
    return {{1u, {0u}}};
  return {};
}

FailureOr<MemoryPlanStats>
mlir::llama::planFunctionMemory(func::FuncOp fn, int64_t alignment,
                                llvm::function_ref<int64_t(Value)> bytesOf,
                                bool collectivesInFlight) {
  if (!fn.getBody().hasOneBlock())
    {
    fn.emitError("llama-plan-memory: expected a single block");
    return failure();
  }
  Block &block = fn.getBody().front();
  auto ret = cast<func::ReturnOp>(block.getTerminator());

  // Number the ops; collect one buffer per non-view result.
  DenseMap<Operation *, int64_t> index;
  std::vector<Buffer> buffers;
  DenseMap<Value, size_t> bufferOf;
  int64_t i = 0;
  for (Operation &op : block) {
    index[&op] = i;
    if (!isViewOp(&op))
      for (Value r : op.getResults()) {
        bufferOf[r] = buffers.size();
        buffers.push_back(
            {r, alignUp(bytesOf ? bytesOf(r) : tensorBytes(r), alignment), i, i});
      }
    ++i;
  }
  // Last uses, seen through views.
  for (Operation &op : block)
    for (Value operand : op.getOperands()) {
      auto it = bufferOf.find(storageRoot(operand));
      if (it != bufferOf.end())
        buffers[it->second].lastUse =
            std::max(buffers[it->second].lastUse, index[&op]);
    }
  // Collectives in flight: the input and the output of a collective are
  // busy from the collective's op to the first op that reads the output
  // (directly or through a view).
  if (collectivesInFlight)
    for (Operation &op : block) {
      if (!isa<shard::AllReduceOp, shard::AllGatherOp, shard::ReduceScatterOp>(op))
        continue;
      int64_t firstUse = INT64_MAX;
      SmallVector<Value> work = {op.getResult(0)};
      while (!work.empty()) {
        Value v = work.pop_back_val();
        for (Operation *user : v.getUsers()) {
          if (isViewOp(user))
            llvm::append_range(work, user->getResults());
          else
            firstUse = std::min(firstUse, index[user]);
        }
      }
      if (firstUse == INT64_MAX)
        continue;
      for (Value v : {storageRoot(op.getOperand(0)), Value(op.getResult(0))})
        if (auto it = bufferOf.find(v); it != bufferOf.end())
          buffers[it->second].lastUse = std::max(buffers[it->second].lastUse, firstUse);
    }
  // In place: a result may take over the buffer of an operand that dies at
  // its op when the kernel allows the two to alias (inPlaceOperands). Residual
  // and gradient-accumulation adds, the residual stream of add_rms_norm and
  // the logits gradient of cross_entropy_fused stop costing a buffer each.
  // Returned results keep their own buffer so that they can go straight to
  // the caller.
  DenseSet<Value> returned(ret.getOperands().begin(), ret.getOperands().end());
  for (Operation &op : block) {
    for (auto [resultIndex, candidates] : inPlaceOperands(&op)) {
      Value result = op.getResult(resultIndex);
      if (returned.contains(result))
        continue;
      for (unsigned operandIndex : candidates) {
        auto it = bufferOf.find(storageRoot(op.getOperand(operandIndex)));
        if (it == bufferOf.end())
          continue; // a function argument: never written
        Buffer &victim = buffers[it->second];
        // The victim must die here, not be taken by another result of this
        // op already, and have the result's size (views keep the root's).
        if (victim.lastUse != index[&op] || returned.contains(victim.value) ||
            victim.bytes != buffers[bufferOf.lookup(result)].bytes ||
            llvm::any_of(op.getResults(), [&](Value r) {
              return r != result && bufferOf.lookup(r) == it->second;
            }))
          continue;
        size_t self = bufferOf.lookup(result);
        victim.lastUse = std::max(victim.lastUse, buffers[self].lastUse);
        buffers[self].merged = true;
        bufferOf[result] = it->second;
        break;
      }
    }
  }

  // Results returned as they were computed (not views, not returned twice,
  // not scalars, which the caller receives as a double) are written straight
  // into the caller's output buffer.
  DenseMap<Value, int> timesReturned;
  for (Value v : ret.getOperands())
    ++timesReturned[v];
  for (auto [r, v] : llvm::enumerate(ret.getOperands())) {
    auto it = bufferOf.find(v);
    if (it == bufferOf.end() || timesReturned[v] != 1 ||
        cast<RankedTensorType>(v.getType()).getRank() == 0)
      continue;
    buffers[it->second].output = r;
  }

  // First fit in decreasing size order against every placed buffer whose
  // lifetime overlaps.
  std::vector<size_t> order;
  for (size_t b = 0; b < buffers.size(); ++b)
    if (buffers[b].output < 0 && !buffers[b].merged)
      order.push_back(b);
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    return buffers[x].bytes > buffers[y].bytes;
  });
  std::vector<size_t> placed;
  int64_t arenaBytes = 0;
  for (size_t b : order) {
    Buffer &buf = buffers[b];
    std::vector<std::pair<int64_t, int64_t>> busy;
    for (size_t p : placed) {
      const Buffer &o = buffers[p];
      if (o.def <= buf.lastUse && buf.def <= o.lastUse)
        busy.push_back({o.offset, o.offset + o.bytes});
    }
    llvm::sort(busy);
    int64_t offset = 0;
    for (auto [begin, end] : busy) {
      if (offset + buf.bytes <= begin)
        break;
      offset = std::max(offset, end);
    }
    buf.offset = offset;
    arenaBytes = std::max(arenaBytes, offset + buf.bytes);
    placed.push_back(b);
  }

  // The peak of the sum of live arena buffers: no placement can do better.
  std::vector<int64_t> live(i + 1, 0);
  for (const Buffer &buf : buffers)
    if (buf.output < 0 && !buf.merged) {
      live[buf.def] += buf.bytes;
      live[buf.lastUse + 1] -= buf.bytes;
    }
  int64_t running = 0, lowerBound = 0;
  for (int64_t d : live) {
    running += d;
    lowerBound = std::max(lowerBound, running);
  }

  Builder b(fn.getContext());
  for (Operation &op : block) {
    if (op.getNumResults() == 0)
      continue;
    SmallVector<int64_t> offsets, outputs;
    bool anyOutput = false;
    for (Value r : op.getResults()) {
      auto it = bufferOf.find(r);
      const Buffer *buf = it == bufferOf.end() ? nullptr : &buffers[it->second];
      offsets.push_back(buf ? buf->offset : -1);
      outputs.push_back(buf ? buf->output : -1);
      anyOutput |= buf && buf->output >= 0;
    }
    op.setAttr(kOffsetAttr, b.getDenseI64ArrayAttr(offsets));
    if (anyOutput)
      op.setAttr(kOutputAttr, b.getDenseI64ArrayAttr(outputs));
  }
  fn->setAttr(kArenaBytesAttr, b.getI64IntegerAttr(arenaBytes));
  fn->setAttr(kLiveLowerBoundAttr, b.getI64IntegerAttr(lowerBound));
  return MemoryPlanStats{arenaBytes, lowerBound};
}
