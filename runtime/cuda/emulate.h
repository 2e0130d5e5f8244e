// Runs generated CUDA kernels on the CPU, for testing their logic where no
// GPU exists (CI, and every machine without one). Compile the generated
// source as C++ with -DLLAMA_CUDA_EMULATE: a launch runs the blocks one
// after another, and the threads of a block as fibers on the calling
// thread, so every thread executes the kernel's own code with its own
// threadIdx and stack. A fiber runs until it reaches a barrier:
//   __syncthreads()      -> waits until every live thread of the block is there
//   __shfl_xor_sync,     -> an exchange through a buffer between two barriers
//   __ballot_sync           of the calling warp only (every lane of the warp
//                           must call it, as full-mask shuffles require), so
//                           warps may take different paths (a causal
//                           attention row loops over as many keys as its
//                           position)
//   __shared__           -> `static` (one instance; blocks run one at a time)
//   __nv_bfloat16        -> a 16-bit struct with round-to-nearest-even
// Between barriers the threads run in a pseudo-random order (a fresh
// permutation per phase, the same on every run), so a thread that reads
// what another writes without the barrier in between reads it stale, and
// the tests see it, whichever thread wrote it. (Highest index first, the
// order used before, caught reads of lower threads' writes only: a tree
// reduction without its barriers passed.) A barrier that
// can never complete (some lanes of a warp at __syncthreads, others at a
// shuffle) throws instead of hanging.
// Fiber switches are the emulator's inner loop (a block of 256 threads
// switches 512 times per barrier), so on x86-64 they are a few instructions
// of our own: save the callee-saved registers and the SSE/x87 control words,
// swap stack pointers. glibc's swapcontext also saves and restores the signal
// mask with a system call each time: over 90% of an emulated training run
// went there (perf; micro, one update: 21.3 s, 0.8 s with the switch
// below). Other architectures use swapcontext.
// What this cannot show: performance, memory-model races beyond missing
// barriers, and the exact results of CUDA's math library (expf, sincos);
// tolerances cover the last.
#pragma once

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <cxxabi.h>
#include <dlfcn.h>
#include <exception>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using cudaStream_t = void *;
enum cudaError_t { cudaSuccess = 0 };

inline thread_local dim3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __constant__
#define __launch_bounds__(...)
#define __grid_constant__

namespace llama_emu {

enum class State {
  Ready,
  AtBlockBarrier,
  AtWarpBarrier,
  AtWarpgroupBarrier,
  AtMbarrier,
  AtNamedBarrier, // bar.sync with an id and a thread count
  AtRegisters,    // setmaxnreg.inc waiting for registers to be released
  Done
};

#if defined(__x86_64__)
// llama_emu_switch(&from_sp, to_sp): pushes the callee-saved registers and
// the MXCSR / x87 control words on the current stack, stores the stack
// pointer in *from_sp, loads to_sp and pops the same frame from there. The
// System V ABI lets a call clobber every other register, so this is a whole
// context switch for code that calls it as a function. Not global: each
// translation unit that includes this header has its own copy.
asm(R"(
  .pushsection .text
  .p2align 4
  .type llama_emu_switch, @function
llama_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size llama_emu_switch, .-llama_emu_switch
  .popsection
)");
extern "C" void llama_emu_switch(void **from_sp, void *to_sp);

struct Context {
  void *sp = nullptr;
};
#else
struct Context {
  ucontext_t uc;
};
#endif

struct Fiber {
  Context context;
  State state = State::Ready;
  uint32_t mbarrier = 0; // AtMbarrier: the barrier (shared offset) and the
  unsigned parity = 0;   // phase parity it waits to see completed
  unsigned named = 0;    // AtNamedBarrier: the barrier's id
  unsigned registers = 0; // AtRegisters: the count setmaxnreg.inc asked for
};

// The block being run on this thread.
struct Block {
  static constexpr size_t kStackBytes = size_t(128) << 10;
  std::vector<Fiber> fibers;
  // kStackBytes per fiber, for the largest block (1024 threads), left
  // uninitialized: the OS commits only the pages a fiber touches.
  std::unique_ptr<char[]> stacks{new char[1024 * kStackBytes]};
  Context scheduler;
  unsigned current = 0;
  std::vector<unsigned> order; // the running phase's thread order
  uint64_t launches = 0;       // blocks run on this thread: seeds the orders
  void (*body)(void *) = nullptr;
  void *arg = nullptr;
  std::exception_ptr error; // thrown by a thread of the block being run
  // With LLAMA_EMULATE_COUNT=1: each thread's global accesses through the
  // packed loads and stores of runtime/cuda/kernels, in program order.
  std::vector<std::vector<std::pair<uintptr_t, uint32_t>>> trace;
  // ... and its shared-memory accesses (the kernels' shared_ld/shared_st).
  std::vector<std::vector<std::pair<uintptr_t, uint32_t>>> shared_trace;
  // Each thread's cp.async copies: those issued since its last commit, and
  // its committed groups, oldest first (see cp_async below).
  struct Copy {
    void *dst;
    const void *src;
    uint32_t bytes, src_bytes;
  };
  struct AsyncCopies {
    std::vector<Copy> open;
    std::vector<std::vector<Copy>> groups;
  };
  std::vector<AsyncCopies> copies;
  // Each thread's share of its warpgroup's wgmma operations: those issued
  // since its last commit, and its committed groups, oldest first (see
  // wgmma below).
  struct Wgmma {
    uint64_t desc_a, desc_b;
    uint32_t a[4];     // this thread's A fragment when A is in registers
    bool a_in_regs, trans_a, trans_b, accumulate;
    unsigned n;
    float *d;          // this thread's N/2 accumulators
  };
  struct WgmmaQueue {
    std::vector<Wgmma> open;
    std::vector<std::vector<Wgmma>> groups;
  };
  std::vector<WgmmaQueue> wgmma;
  // mbarriers (sm_90), by offset in the dynamic shared memory: arrivals
  // still expected in the current phase, the transaction bytes it still
  // waits for, and the phase's parity.
  struct Mbarrier {
    uint32_t count = 0, pending = 0;
    int64_t tx = 0;
    unsigned phase = 0;
  };
  std::map<uint32_t, Mbarrier> mbarriers;
  // Asynchronous copies that complete on an mbarrier: a bulk copy
  // (complete_tx of its bytes) or the cp.async copies a thread handed to
  // cp.async.mbarrier.arrive.noinc (then one arrival). They land at the end
  // of the scheduling phase that issued them, so a thread that reads the
  // destination without waiting on the barrier reads what was there.
  struct BarrierCopies {
    std::vector<Copy> copies;
    uint32_t mbarrier;
    int64_t tx; // bytes to complete (bulk), or 0 for one arrival
    // A tensor copy's source, gathered when it was issued (the copies read
    // from here; moving the vector keeps its storage).
    std::vector<unsigned char> staged;
  };
  std::vector<BarrierCopies> barrier_copies;
  // Named barriers 1-15 (bar.sync / bar.arrive with a thread count; 0 is
  // __syncthreads'): the count of the generation in progress and the
  // threads arrived in it.
  struct Named {
    unsigned count = 0, arrived = 0;
  };
  Named named[16];
  // Registers per thread (setmaxnreg): each starts at the most a launch of
  // this many threads can have (65536 / threads rounded down to a multiple
  // of 8, at most 256: the most ptxas gives a kernel launched so), and a
  // warpgroup can move its count down, or up while the block's 65536
  // registers allow. A thread that exits keeps its count until the block
  // ends (stricter than a GPU may be: a kernel gives registers back by
  // setmaxnreg.dec, as FA3's producers do).
  static constexpr unsigned kRegisterFile = 65536;
  std::vector<unsigned> registers;
  // Dynamic shared memory (LLK_DYNAMIC_SHARED): the launch's size, 1024-byte
  // aligned (wgmma's 128-byte swizzle repeats every 1024 bytes of address),
  // refilled with a NaN pattern before every block.
  static constexpr size_t kMaxDynamicShared = 227 * 1024;
  alignas(1024) unsigned char dynamic_shared[kMaxDynamicShared];
  size_t dynamic_bytes = 0;
};

// Coalescing counters per kernel (LLAMA_EMULATE_COUNT=1). A warp request is
// the k-th traced access of every lane of a warp that made one (lanes of a
// warp run the same code, so their k-th accesses are one instruction on a
// GPU, up to divergence); it costs the distinct 32-byte sectors it touches,
// against the fewest sectors its distinct bytes could fit: 100% when the
// lanes read consecutive, aligned bytes.
struct Coalescing {
  uint64_t requests = 0, sectors = 0, ideal_sectors = 0;
};
inline std::map<const void *, Coalescing> &coalescing() {
  static std::map<const void *, Coalescing> counters;
  return counters;
}
// Bank-conflict counters per kernel (LLAMA_EMULATE_COUNT=1). A shared
// request is the k-th traced shared access of every lane of a warp; shared
// memory serves it in wavefronts, one per distinct 4-byte word of its most
// loaded bank of 32 (lanes reading the same word share it: a broadcast),
// against the fewest its distinct bytes need (128 bytes a wavefront).
struct Banks {
  uint64_t requests = 0, wavefronts = 0, ideal_wavefronts = 0;
};
inline std::map<const void *, Banks> &banks() {
  static std::map<const void *, Banks> counters;
  return counters;
}
inline bool &counting_flag() {
  static bool on = [] {
    const char *v = std::getenv("LLAMA_EMULATE_COUNT");
    return v && std::string(v) == "1";
  }();
  return on;
}
inline bool counting() { return counting_flag(); }
// Tests turn the counters on and off without the environment.
inline void set_counting(bool on) { counting_flag() = on; }
inline thread_local const void *current_kernel = nullptr;

// Folds a finished block's traces into its kernel's counters.
inline void count_block(Block &b, unsigned threads) {
  Coalescing &c = coalescing()[current_kernel];
  std::set<uintptr_t> sectors, bytes;
  for (unsigned w = 0; w < threads / 32; ++w) {
    size_t depth = 0;
    for (unsigned l = 32 * w; l < 32 * w + 32; ++l)
      depth = std::max(depth, b.trace[l].size());
    for (size_t k = 0; k < depth; ++k) {
      sectors.clear();
      bytes.clear();
      for (unsigned l = 32 * w; l < 32 * w + 32; ++l) {
        if (k >= b.trace[l].size())
          continue;
        const auto [addr, n] = b.trace[l][k];
        for (uintptr_t s = addr >> 5; s <= (addr + n - 1) >> 5; ++s)
          sectors.insert(s);
        for (uintptr_t a = addr; a < addr + n; ++a)
          bytes.insert(a);
      }
      ++c.requests;
      c.sectors += sectors.size();
      c.ideal_sectors += (bytes.size() + 31) / 32;
    }
  }
  for (unsigned t = 0; t < threads; ++t)
    b.trace[t].clear();
  Banks &k = banks()[current_kernel];
  std::set<uintptr_t> words[32];
  for (unsigned w = 0; w < threads / 32; ++w) {
    size_t depth = 0;
    for (unsigned l = 32 * w; l < 32 * w + 32; ++l)
      depth = std::max(depth, b.shared_trace[l].size());
    for (size_t d = 0; d < depth; ++d) {
      for (std::set<uintptr_t> &bank : words)
        bank.clear();
      bytes.clear();
      for (unsigned l = 32 * w; l < 32 * w + 32; ++l) {
        if (d >= b.shared_trace[l].size())
          continue;
        const auto [addr, n] = b.shared_trace[l][d];
        if (n == 0) // a lane that takes no part in a collective access
          continue;
        for (uintptr_t word = addr >> 2; word <= (addr + n - 1) >> 2; ++word)
          words[word % 32].insert(word);
        for (uintptr_t a = addr; a < addr + n; ++a)
          bytes.insert(a);
      }
      size_t most = 0;
      for (const std::set<uintptr_t> &bank : words)
        most = std::max(most, bank.size());
      ++k.requests;
      k.wavefronts += most;
      k.ideal_wavefronts += (bytes.size() + 127) / 128;
    }
  }
  for (unsigned t = 0; t < threads; ++t)
    b.shared_trace[t].clear();
}
inline thread_local Block *running = nullptr;

inline void switch_to(Context &from, Context &to) {
#if defined(__x86_64__)
  llama_emu_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

// A fiber's first frame: runs the kernel for this thread, then hands control
// back to the scheduler for good (a Done fiber is never resumed).
// An exception cannot unwind past this frame (the fiber's stack has no
// caller): it is kept for the scheduler, which rethrows it from the launch
// and abandons the block's other threads.
[[noreturn]] inline void fiber_main() {
  Block &b = *running;
  try {
    b.body(b.arg);
  } catch (...) {
    b.error = std::current_exception();
  }
  b.fibers[b.current].state = State::Done;
  switch_to(b.fibers[b.current].context, b.scheduler);
  std::abort();
}

// Prepares `c` to start fiber_main on the stack [stack, stack + bytes).
inline void make_context(Context &c, char *stack, size_t bytes) {
#if defined(__x86_64__)
  // The frame llama_emu_switch pops, under a return into fiber_main and a
  // null return address for it. After that ret, %rsp = 8 mod 16, as at
  // any function's entry.
  auto *top = reinterpret_cast<uint64_t *>(
      (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t(15));
  uint32_t control[2];
  asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(control[0]), "=m"(control[1]));
  control[1] &= 0xffff;
  uint64_t *sp = top - 9;
  std::memcpy(sp, control, 8);                    // MXCSR, x87 control word
  for (int r = 1; r <= 6; ++r)                    // r15 r14 r13 r12 rbx rbp
    sp[r] = 0;
  sp[7] = reinterpret_cast<uint64_t>(&fiber_main); // ret target
  sp[8] = 0;                                      // fiber_main's return address
  c.sp = sp;
#else
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, reinterpret_cast<void (*)()>(&fiber_main), 0);
#endif
}

inline void wait(State at) {
  if (!running)
    throw std::runtime_error("emulate: a barrier outside a kernel launch");
  Block &b = *running;
  b.fibers[b.current].state = at;
  switch_to(b.fibers[b.current].context, b.scheduler);
}
inline void warp_sync() { wait(State::AtWarpBarrier); }
// The four warps of the calling thread's warpgroup (threads 128k..128k+127)
// wait for each other (wgmma's warpgroup-collective operations).
inline void warpgroup_sync() { wait(State::AtWarpgroupBarrier); }

inline void mbarrier_arrive_at(Block &b, uint32_t offset, int64_t tx_done, bool arrival);

// Registers of the block's register file not held by any thread.
inline unsigned registers_free(const Block &b) {
  unsigned used = 0;
  for (unsigned r : b.registers)
    used += r;
  return used > Block::kRegisterFile ? 0 : Block::kRegisterFile - used;
}

// Lands the copies issued on mbarriers since the last call; true when any.
inline bool land_barrier_copies(Block &b) {
  if (b.barrier_copies.empty())
    return false;
  std::vector<Block::BarrierCopies> done;
  done.swap(b.barrier_copies);
  for (const Block::BarrierCopies &c : done) {
    for (const Block::Copy &copy : c.copies) {
      if (copy.src_bytes)
        std::memcpy(copy.dst, copy.src, copy.src_bytes);
      std::memset(static_cast<unsigned char *>(copy.dst) + copy.src_bytes, 0,
                  copy.bytes - copy.src_bytes);
    }
    mbarrier_arrive_at(b, c.mbarrier, c.tx, c.tx == 0);
  }
  return true;
}

// Runs every thread of one block to completion.
// `seed` picks the order the threads run in between barriers.
inline void run_block(Block &b, unsigned threads, uint64_t seed) {
  b.fibers.assign(threads, Fiber());
  if (counting() && b.trace.size() < threads) {
    b.trace.resize(threads);
    b.shared_trace.resize(threads);
  }
  for (unsigned t = 0; t < threads; ++t)
    make_context(b.fibers[t].context, b.stacks.get() + t * Block::kStackBytes,
                 Block::kStackBytes);
  b.copies.assign(threads, Block::AsyncCopies());
  b.wgmma.assign(threads, Block::WgmmaQueue());
  b.mbarriers.clear();
  b.barrier_copies.clear();
  for (Block::Named &n : b.named)
    n = Block::Named();
  b.registers.assign(threads, std::min(256u, Block::kRegisterFile / threads / 8 * 8));
  // 0xff bytes: a bf16 or fp32 NaN, so a read of shared memory that no
  // thread of this block wrote shows in the results.
  std::memset(b.dynamic_shared, 0xff, b.dynamic_bytes);
  std::vector<unsigned> &order = b.order;
  order.resize(threads);
  for (;;) {
    // A fresh permutation for each phase between barriers (Fisher-Yates,
    // splitmix64): any thread may run before any other, as on a GPU.
    for (unsigned t = 0; t < threads; ++t)
      order[t] = t;
    for (unsigned t = threads; t > 1; --t) {
      uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      z ^= z >> 31;
      std::swap(order[t - 1], order[size_t(z % t)]);
    }
    bool ran = false;
    for (unsigned t : order) {
      if (b.fibers[t].state != State::Ready)
        continue;
      b.current = t;
      threadIdx = dim3(t);
      switch_to(b.scheduler, b.fibers[t].context);
      if (b.error)
        std::rethrow_exception(std::exchange(b.error, nullptr));
      ran = true;
    }
    // The asynchronous copies issued in this phase land, and their barriers
    // count them; then the threads whose awaited phase completed go on.
    bool released = land_barrier_copies(b);
    for (Fiber &f : b.fibers)
      if (f.state == State::AtMbarrier && b.mbarriers[f.mbarrier].phase != f.parity) {
        f.state = State::Ready;
        released = true;
      }
    // setmaxnreg.inc: a thread goes on once the register file has room.
    for (unsigned t = 0; t < threads; ++t)
      if (b.fibers[t].state == State::AtRegisters &&
          registers_free(b) >= b.fibers[t].registers - b.registers[t]) {
        b.fibers[t].state = State::Ready;
        released = true;
      }
    // Release the barriers that every live participant has reached.
    bool live = false, all_at_block = true;
    for (unsigned w = 0; w < threads / 32; ++w) {
      bool warp_live = false, all_at_warp = true;
      for (unsigned l = 32 * w; l < 32 * w + 32; ++l) {
        const State s = b.fibers[l].state;
        if (s == State::Done)
          continue;
        warp_live = live = true;
        all_at_warp &= s == State::AtWarpBarrier;
        all_at_block &= s == State::AtBlockBarrier;
      }
      if (warp_live && all_at_warp) {
        for (unsigned l = 32 * w; l < 32 * w + 32; ++l)
          if (b.fibers[l].state == State::AtWarpBarrier)
            b.fibers[l].state = State::Ready;
        released = true;
      }
    }
    for (unsigned g = 0; g < threads / 128; ++g) {
      bool group_live = false, all_at_group = true;
      for (unsigned l = 128 * g; l < 128 * g + 128; ++l) {
        const State s = b.fibers[l].state;
        if (s == State::Done)
          continue;
        group_live = true;
        all_at_group &= s == State::AtWarpgroupBarrier;
      }
      if (group_live && all_at_group) {
        for (unsigned l = 128 * g; l < 128 * g + 128; ++l)
          if (b.fibers[l].state == State::AtWarpgroupBarrier)
            b.fibers[l].state = State::Ready;
        released = true;
      }
    }
    if (!live) {
      for (unsigned t = 0; t < threads; ++t) {
        if (!b.copies[t].open.empty() || !b.copies[t].groups.empty())
          throw std::runtime_error("emulate: thread " + std::to_string(t) +
                                   " exited with cp.async copies it never waited for");
        if (!b.wgmma[t].open.empty() || !b.wgmma[t].groups.empty())
          throw std::runtime_error("emulate: thread " + std::to_string(t) +
                                   " exited with wgmma operations it never waited for");
      }
      if (!b.barrier_copies.empty())
        throw std::runtime_error("emulate: the block exited with copies in flight");
      for (unsigned id = 1; id < 16; ++id)
        if (b.named[id].arrived)
          throw std::runtime_error("emulate: the block exited with named barrier " +
                                   std::to_string(id) + " part-way (" +
                                   std::to_string(b.named[id].arrived) + " of " +
                                   std::to_string(b.named[id].count) +
                                   " threads arrived): unbalanced bar.arrive / bar.sync");
      if (counting())
        count_block(b, threads);
      return;
    }
    if (all_at_block) {
      for (Fiber &f : b.fibers)
        if (f.state == State::AtBlockBarrier)
          f.state = State::Ready;
      released = true;
    }
    if (!ran && !released)
      throw std::runtime_error("emulate: block (" + std::to_string(blockIdx.x) + ", " +
                               std::to_string(blockIdx.y) + ", " +
                               std::to_string(blockIdx.z) +
                               ") cannot complete a barrier: its threads wait at "
                               "different ones (divergent __syncthreads or shuffle), on "
                               "an mbarrier phase or a named barrier that nothing will "
                               "complete, or in setmaxnreg.inc for registers no one "
                               "releases");
  }
}

// Runs `body` (the kernel call) for every block of `grid` with `block`
// threads each.
template <typename F>
void launch(dim3 grid, dim3 block, F body, const void *kernel = nullptr,
            size_t dynamic_shared = 0) {
  if (block.y != 1 || block.z != 1 || block.x > 1024 || block.x == 0)
    throw std::runtime_error("emulate: blocks are 1-D with 1..1024 threads, got " +
                             std::to_string(block.x) + "x" + std::to_string(block.y) +
                             "x" + std::to_string(block.z));
  if (block.x % 32 != 0)
    throw std::runtime_error("emulate: blocks are whole warps, got " +
                             std::to_string(block.x) + " threads");
  static thread_local std::unique_ptr<Block> owned{new Block};
  Block &b = *owned;
  if (running)
    throw std::runtime_error("emulate: a launch inside a kernel");
  if (dynamic_shared > Block::kMaxDynamicShared)
    throw std::runtime_error("emulate: " + std::to_string(dynamic_shared) +
                             " bytes of dynamic shared memory, over the 227 KiB a block "
                             "may have");
  b.dynamic_bytes = dynamic_shared;
  gridDim = grid;
  blockDim = block;
  b.body = [](void *f) { (*static_cast<F *>(f))(); };
  b.arg = &body;
  running = &b;
  current_kernel = kernel;
  try {
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          blockIdx = dim3(bx, by, bz);
          run_block(b, block.x, ++b.launches * 0x2545f4914f6cdd1dull);
        }
  } catch (...) {
    running = nullptr;
    throw;
  }
  running = nullptr;
}

// A global access of `bytes` at p by the running thread (the packed loads
// and stores of runtime/cuda/kernels/common.cuh call this).
inline void record_global(const void *p, size_t bytes) {
  if (running && counting())
    running->trace[threadIdx.x].push_back({reinterpret_cast<uintptr_t>(p), uint32_t(bytes)});
}
// A shared-memory access of `bytes` at p (common.cuh: shared_ld, shared_st).
inline void record_shared(const void *p, size_t bytes) {
  if (running && counting())
    running->shared_trace[threadIdx.x].push_back(
        {reinterpret_cast<uintptr_t>(p), uint32_t(bytes)});
}

// ---- tensor cores and asynchronous copies (sm_80 and later) --------------
// Warp-collective instructions, emulated as the PTX ISA defines them: every
// lane of the warp calls them together (a warp barrier before and after),
// each lane deposits its operands and takes its own part of the result. The
// kernels reach them through runtime/cuda/kernels/mma.cuh.

inline Block &running_block(const char *what) {
  if (!running)
    throw std::runtime_error(std::string("emulate: ") + what + " outside a kernel launch");
  return *running;
}

// The launch's dynamic shared memory (LLK_DYNAMIC_SHARED).
inline unsigned char *dynamic_shared() {
  return running_block("dynamic shared memory").dynamic_shared;
}

inline float bf16_bits_to_float(uint32_t bits) {
  const uint32_t u = (bits & 0xffffu) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: D = A B + C for the
// warp, A 16x16 (row-major), B 16x8 (column-major), C and D 16x8 fp32. With
// g = lane / 4 and t = lane % 4, and the lower 16 bits of a register holding
// the element of lower column (row for B) index:
//   a[0] = A[g][2t..2t+1]     a[1] = A[g+8][2t..2t+1]
//   a[2] = A[g][2t+8..2t+9]   a[3] = A[g+8][2t+8..2t+9]
//   b[0] = B[2t..2t+1][g]     b[1] = B[2t+8..2t+9][g]
//   c[0..1] = C[g][2t..2t+1]  c[2..3] = C[g+8][2t..2t+1]    (D likewise)
// The products of bf16 values are exact in fp32; here they are summed in
// double and added to C with one rounding, where the hardware's internal
// order and width are its own: results agree to fp32 rounding of the sum.
inline void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                              const float c[4]) {
  struct Operands {
    uint32_t a[4], b[2];
  };
  static Operands in[1024];
  const unsigned t = threadIdx.x, base = t & ~31u, lane = t & 31u;
  in[t] = {{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  const float c_in[4] = {c[0], c[1], c[2], c[3]};
  warp_sync();
  // Element (r, k) of A and (k, n) of B, from the lane and register that
  // hold it.
  auto A = [&](unsigned r, unsigned k) {
    const uint32_t w = in[base + (r & 7u) * 4 + ((k & 7u) >> 1)].a[(r >> 3) + 2 * (k >> 3)];
    return double(bf16_bits_to_float(k & 1u ? w >> 16 : w));
  };
  auto B = [&](unsigned k, unsigned n) {
    const uint32_t w = in[base + n * 4 + ((k & 7u) >> 1)].b[k >> 3];
    return double(bf16_bits_to_float(k & 1u ? w >> 16 : w));
  };
  for (unsigned i = 0; i < 4; ++i) {
    const unsigned row = lane / 4 + 8 * (i / 2), col = 2 * (lane % 4) + (i & 1u);
    double sum = c_in[i];
    for (unsigned k = 0; k < 16; ++k)
      sum += A(row, k) * B(k, col);
    d[i] = float(sum);
  }
  warp_sync();
}

// ldmatrix.sync.aligned.m8n8.x{N}[.trans].shared.b16: N 8x8 matrices of
// 16-bit elements; lane 8i + r gives the address of row r of matrix i (16
// aligned bytes; lanes past 8N give none). Register i of lane l holds
//   elements 2(l%4) and 2(l%4)+1 of row l/4 of matrix i, or with .trans,
//   element l/4 of rows 2(l%4) and 2(l%4)+1 (the matrix transposed),
// the first in the lower 16 bits. For the bank counters each matrix is
// one request, as a GPU serves them: 8 rows of 16 bytes, one wavefront when
// they fall in distinct banks (the lanes of the other matrices take no
// part in it).
template <int N> void ldmatrix(uint32_t (&r)[N], const void *row, bool trans) {
  static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
  static const unsigned char *rows[1024];
  const unsigned t = threadIdx.x, base = t & ~31u, lane = t & 31u;
  if (lane < 8u * N) {
    if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
      throw std::runtime_error("emulate: ldmatrix row address not 16-byte aligned");
    rows[t] = static_cast<const unsigned char *>(row);
  }
  for (unsigned i = 0; i < unsigned(N); ++i)
    record_shared(row, lane / 8 == i ? 16 : 0);
  warp_sync();
  auto element = [&](unsigned matrix, unsigned rr, unsigned cc) {
    uint16_t e;
    std::memcpy(&e, rows[base + 8 * matrix + rr] + 2 * cc, 2);
    return uint32_t(e);
  };
  for (unsigned i = 0; i < unsigned(N); ++i)
    r[i] = trans ? element(i, 2 * (lane % 4), lane / 4) |
                       element(i, 2 * (lane % 4) + 1, lane / 4) << 16
                 : element(i, lane / 4, 2 * (lane % 4)) |
                       element(i, lane / 4, 2 * (lane % 4) + 1) << 16;
  warp_sync();
}

// cp.async.cg.shared.global [dst], [src], 16, src_bytes: copies 16 bytes
// (src_bytes of them from src, zeros after: 0 fills the destination with
// zeros). The copy happens at the cp.async.wait_group that completes its
// group, not before: a kernel that reads the destination without waiting,
// or reads another thread's copy without a barrier after that thread's
// wait, reads what was there (the NaN pattern of fresh shared memory).
inline void cp_async(void *dst, const void *src, uint32_t bytes, uint32_t src_bytes) {
  Block &b = running_block("cp.async");
  if (reinterpret_cast<uintptr_t>(dst) % bytes || reinterpret_cast<uintptr_t>(src) % bytes)
    throw std::runtime_error("emulate: cp.async of " + std::to_string(bytes) +
                             " bytes at a misaligned address");
  if (src_bytes > bytes)
    throw std::runtime_error("emulate: cp.async source larger than the copy");
  if (src_bytes)
    record_global(src, src_bytes);
  record_shared(dst, bytes);
  b.copies[threadIdx.x].open.push_back({dst, src, bytes, src_bytes});
}
// cp.async.commit_group: the copies issued since the last commit form a
// group (possibly empty).
inline void cp_async_commit() {
  Block::AsyncCopies &c = running_block("cp.async.commit_group").copies[threadIdx.x];
  c.groups.push_back(std::move(c.open));
  c.open.clear();
}
// cp.async.wait_group n: completes every committed group but the newest n.
inline void cp_async_wait(unsigned pending) {
  Block::AsyncCopies &c = running_block("cp.async.wait_group").copies[threadIdx.x];
  while (c.groups.size() > pending) {
    for (const Block::Copy &copy : c.groups.front()) {
      if (copy.src_bytes)
        std::memcpy(copy.dst, copy.src, copy.src_bytes);
      std::memset(static_cast<unsigned char *>(copy.dst) + copy.src_bytes, 0,
                  copy.bytes - copy.src_bytes);
    }
    c.groups.erase(c.groups.begin());
  }
}


// ---- warpgroup MMA (sm_90a) -----------------------------------------------
// The byte offset of `p` in the launch's dynamic shared memory: what a shared
// memory descriptor holds (a GPU's shared-window address; the dynamic shared
// memory starts at 0 there when the kernel has no static shared memory, as
// the wgmma kernels have none).
inline uint32_t shared_offset(const void *p) {
  Block &b = running_block("a shared memory address");
  const auto *q = static_cast<const unsigned char *>(p);
  if (q < b.dynamic_shared || q >= b.dynamic_shared + b.dynamic_bytes)
    throw std::runtime_error("emulate: a shared memory descriptor for an address outside "
                             "the launch's dynamic shared memory");
  return uint32_t(q - b.dynamic_shared);
}

// The element (mn, k) of a 64-bit wgmma shared memory matrix descriptor's
// operand (bf16; mn a row of A or a column of B, k < 16), as the PTX ISA's
// canonical layouts place it ("Shared memory matrix layout"; the same as
// CUTLASS's GMMA::Layout_{K,MN}_{INTER,SW32,SW64,SW128}_Atom tiled by the
// descriptor's strides). Descriptor: bits 0-13 start address >> 4, 16-29
// leading dimension byte offset (LBO) >> 4, 32-45 stride dimension byte
// offset (SBO) >> 4, 49-51 base offset (0 here), 62-63 swizzle (0 none,
// 1 128-byte, 2 64-byte, 3 32-byte). In 16-byte chunks of 8 elements:
//   K-major (rows of mn, k contiguous): 8-row core matrices; row r of one
//     at r chunks (no swizzle) or r * W chunks (W = 8, 4, 2 chunks a row
//     for 128/64/32-byte swizzles) from its start; the next 8 rows at SBO;
//     the second 8 of k at LBO (no swizzle) or the next chunk;
//   MN-major (mn contiguous, "transposed"): chunk j of mn and k row kk at
//     j * SBO + kk + (k / 8) * LBO chunks (no swizzle), or, swizzled,
//     (j % W) + (j / W) * LBO + kk * W chunks + (k / 8) * SBO;
// then a swizzle XORs address bits [4, 4 + log2 W) with bits [7, 7 + log2 W)
// (the 16-byte chunk within a 128-byte line with the line within 1024
// bytes: Swizzle<3,4,3> for 128 bytes), on the shared address itself, so
// swizzled operands start 1024-byte aligned (or 512, 256).
inline uint32_t wgmma_element_offset(uint64_t desc, bool mn_major, unsigned mn, unsigned k) {
  const uint32_t start = uint32_t(desc & 0x3fff) << 4;
  const uint32_t lbo = uint32_t((desc >> 16) & 0x3fff) << 4;
  const uint32_t sbo = uint32_t((desc >> 32) & 0x3fff) << 4;
  if ((desc >> 49) & 7)
    throw std::runtime_error("emulate: wgmma descriptor with a nonzero base offset");
  const unsigned mode = unsigned(desc >> 62);
  const uint32_t w = mode == 0 ? 0 : mode == 1 ? 8 : mode == 2 ? 4 : 2;
  uint32_t off;
  if (!mn_major) {
    const uint32_t r = mn % 8, g = mn / 8, c = k / 8, e = k % 8;
    off = w == 0 ? start + r * 16 + g * sbo + c * lbo + e * 2
                 : start + r * w * 16 + g * sbo + c * 16 + e * 2;
  } else {
    const uint32_t e = mn % 8, j = mn / 8, kk = k % 8, c = k / 8;
    off = w == 0 ? start + j * sbo + kk * 16 + c * lbo + e * 2
                 : start + (j % w) * 16 + (j / w) * lbo + kk * w * 16 + c * sbo + e * 2;
  }
  if (w)
    off ^= ((off >> 7) & (w - 1)) << 4;
  return off;
}

// wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16: D (64 x N fp32) =
// A (64 x 16) B (16 x N) (+ D when `accumulate`), issued by the 128 threads
// of a warpgroup together. A comes from shared memory (desc_a; trans_a: the
// MN-major layout) or from registers (a_regs: warp w of the group holds rows
// 16w..16w+15 in mma.m16n8k16's A layout); B from shared memory (desc_b, an
// N x 16 K-major operand, or MN-major with trans_b). Thread (warp w, lane l;
// g = l / 4, t = l % 4) holds D[16w + g + 8 ((i / 2) % 2)][8 (i / 4) + 2t +
// i % 2] in d[i], i < N / 2.
// Asynchronous, as on a GPU: the operation is queued, and the shared memory
// operands are read and D written only at the wgmma.wait_group that completes
// its group, so a kernel that reads D before waiting sees what was there, and
// one that overwrites an operand tile before waiting multiplies the new data.
inline void wgmma_bf16(float *d, unsigned n, const uint32_t *a_regs, uint64_t desc_a,
                       uint64_t desc_b, bool trans_a, bool trans_b, bool accumulate) {
  Block &b = running_block("wgmma");
  if (blockDim.x % 128 != 0)
    throw std::runtime_error("emulate: wgmma in a block that is not whole warpgroups");
  if (n < 8 || n > 256 || n % 8 != 0)
    throw std::runtime_error("emulate: wgmma N must be a multiple of 8 in [8, 256]");
  Block::Wgmma op{};
  op.desc_a = desc_a;
  op.desc_b = desc_b;
  op.a_in_regs = a_regs != nullptr;
  if (a_regs)
    std::memcpy(op.a, a_regs, sizeof op.a);
  op.trans_a = trans_a;
  op.trans_b = trans_b;
  op.accumulate = accumulate;
  op.n = n;
  op.d = d;
  b.wgmma[threadIdx.x].open.push_back(op);
}
// wgmma.commit_group: the operations issued since the last commit form a
// group.
inline void wgmma_commit() {
  Block::WgmmaQueue &q = running_block("wgmma.commit_group").wgmma[threadIdx.x];
  q.groups.push_back(std::move(q.open));
  q.open.clear();
}
// wgmma.wait_group n: completes every committed group but the newest n, in
// issue order. Warpgroup-collective: every thread of the warpgroup must have
// issued the same operations (the same descriptors, N and flags).
inline void wgmma_wait(unsigned pending) {
  Block &b = running_block("wgmma.wait_group");
  const unsigned t = threadIdx.x, first = t & ~127u, w = (t & 127u) / 32,
                 lane = t & 31u;
  warpgroup_sync();
  Block::WgmmaQueue &q = b.wgmma[t];
  const Block::WgmmaQueue &q0 = b.wgmma[first];
  auto same = [](const Block::Wgmma &x, const Block::Wgmma &y) {
    return x.desc_a == y.desc_a && x.desc_b == y.desc_b && x.a_in_regs == y.a_in_regs &&
           x.trans_a == y.trans_a && x.trans_b == y.trans_b &&
           x.accumulate == y.accumulate && x.n == y.n;
  };
  bool agree = q.groups.size() == q0.groups.size();
  for (size_t gi = 0; agree && gi < q.groups.size(); ++gi) {
    agree = q.groups[gi].size() == q0.groups[gi].size();
    for (size_t j = 0; agree && j < q.groups[gi].size(); ++j)
      agree = same(q.groups[gi][j], q0.groups[gi][j]);
  }
  if (!agree)
    throw std::runtime_error("emulate: the threads of a warpgroup issued different wgmma "
                             "operations (wgmma is warpgroup-collective)");
  const size_t done = q.groups.size() > pending ? q.groups.size() - pending : 0;
  const unsigned char *smem = b.dynamic_shared;
  auto bf16_at = [&](uint32_t off) {
    if (off + 2 > b.dynamic_bytes)
      throw std::runtime_error("emulate: a wgmma operand reaches past the dynamic shared "
                               "memory");
    uint16_t e;
    std::memcpy(&e, smem + off, 2);
    return double(bf16_bits_to_float(e));
  };
  for (size_t gi = 0; gi < done; ++gi)
    for (size_t j = 0; j < q.groups[gi].size(); ++j) {
      const Block::Wgmma &op = q.groups[gi][j];
      // A[row][k] from the registers of the lane that holds it (the
      // mma.m16n8k16 A layout in each warp) or from shared memory.
      auto A = [&](unsigned row, unsigned k) {
        if (!op.a_in_regs)
          return bf16_at(wgmma_element_offset(op.desc_a, op.trans_a, row, k));
        const unsigned rr = row % 16;
        const uint32_t reg = b.wgmma[first + 32 * (row / 16) + (rr % 8) * 4 + (k % 8) / 2]
                                 .groups[gi][j]
                                 .a[rr / 8 + 2 * (k / 8)];
        return double(bf16_bits_to_float(k & 1u ? reg >> 16 : reg));
      };
      for (unsigned i = 0; i < op.n / 2; ++i) {
        const unsigned row = 16 * w + lane / 4 + 8 * ((i / 2) % 2);
        const unsigned col = 8 * (i / 4) + 2 * (lane % 4) + i % 2;
        double sum = op.accumulate ? double(op.d[i]) : 0.0;
        for (unsigned k = 0; k < 16; ++k)
          sum += A(row, k) * bf16_at(wgmma_element_offset(op.desc_b, op.trans_b, col, k));
        op.d[i] = float(sum);
      }
    }
  // No thread drops its operations before every thread has read them.
  warpgroup_sync();
  q.groups.erase(q.groups.begin(), q.groups.begin() + long(done));
}

// ---- mbarriers and bulk copies (sm_90) -------------------------------------
// An mbarrier (a 64-bit object in shared memory; here a side table keyed by
// its offset) completes a phase when the phase's expected arrivals have all
// arrived and the transaction bytes it was told to expect have all landed;
// then its phase parity flips and the arrival count resets. A thread waits
// for the completion of the phase of a given parity (try_wait.parity in a
// loop on a GPU); here it sleeps until then, and a block whose threads all
// sleep on phases nothing will complete throws.
inline Block::Mbarrier &mbarrier_at(Block &b, uint32_t offset, const char *what) {
  auto it = b.mbarriers.find(offset);
  if (it == b.mbarriers.end())
    throw std::runtime_error(std::string("emulate: ") + what +
                             " on an mbarrier that was never initialized");
  return it->second;
}
inline uint32_t mbarrier_offset(const void *bar) {
  const uint32_t offset = shared_offset(bar);
  if (offset % 8)
    throw std::runtime_error("emulate: an mbarrier that is not 8-byte aligned");
  return offset;
}
inline void mbarrier_arrive_at(Block &b, uint32_t offset, int64_t tx_done, bool arrival) {
  Block::Mbarrier &m = mbarrier_at(b, offset, "an arrival");
  if (arrival && m.pending == 0)
    throw std::runtime_error("emulate: more arrivals on an mbarrier than its count");
  m.pending -= arrival ? 1 : 0;
  m.tx -= tx_done;
  if (m.tx < 0)
    throw std::runtime_error("emulate: an mbarrier received more transaction bytes than "
                             "were expected");
  if (m.pending == 0 && m.tx == 0) {
    m.phase ^= 1;
    m.pending = m.count;
  }
}
// mbarrier.init.shared.b64 [bar], count.
inline void mbarrier_init(void *bar, unsigned count) {
  Block &b = running_block("mbarrier.init");
  if (count == 0)
    throw std::runtime_error("emulate: an mbarrier's count must be at least 1");
  Block::Mbarrier m;
  m.count = m.pending = count;
  b.mbarriers[mbarrier_offset(bar)] = m;
}
// mbarrier.expect_tx: the current phase also waits for `bytes` more bytes.
inline void mbarrier_expect_tx(void *bar, uint32_t bytes) {
  Block &b = running_block("mbarrier.expect_tx");
  mbarrier_at(b, mbarrier_offset(bar), "expect_tx").tx += bytes;
}
// mbarrier.arrive: one arrival; returns the phase parity it arrived in.
inline unsigned mbarrier_arrive(void *bar) {
  Block &b = running_block("mbarrier.arrive");
  const uint32_t offset = mbarrier_offset(bar);
  const unsigned phase = mbarrier_at(b, offset, "arrive").phase;
  mbarrier_arrive_at(b, offset, 0, true);
  return phase;
}
// Waits until the phase of parity `parity` has completed.
inline void mbarrier_wait(void *bar, unsigned parity) {
  Block &b = running_block("mbarrier.try_wait");
  const uint32_t offset = mbarrier_offset(bar);
  while (mbarrier_at(b, offset, "try_wait").phase == (parity & 1u)) {
    Fiber &f = b.fibers[threadIdx.x];
    f.mbarrier = offset;
    f.parity = parity & 1u;
    wait(State::AtMbarrier);
  }
}
// cp.async.mbarrier.arrive.noinc.shared.b64 [bar]: this thread's cp.async
// copies issued so far (committed or not) complete asynchronously and then
// count as one arrival on `bar` (whose count includes it: .noinc).
inline void cp_async_mbarrier_arrive(void *bar) {
  Block &b = running_block("cp.async.mbarrier.arrive");
  const uint32_t offset = mbarrier_offset(bar);
  mbarrier_at(b, offset, "cp.async.mbarrier.arrive");
  Block::AsyncCopies &c = b.copies[threadIdx.x];
  Block::BarrierCopies handed{std::move(c.open), offset, 0};
  for (std::vector<Block::Copy> &g : c.groups)
    handed.copies.insert(handed.copies.end(), g.begin(), g.end());
  c.open.clear();
  c.groups.clear();
  b.barrier_copies.push_back(std::move(handed));
}
// cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [dst],
// [src], bytes, [bar]: `bytes` (a multiple of 16, both addresses 16-byte
// aligned) from global to shared memory, completing that many transaction
// bytes on `bar` when they land.
inline void bulk_copy(void *dst, const void *src, uint32_t bytes, void *bar) {
  Block &b = running_block("cp.async.bulk");
  if (bytes == 0 || bytes % 16 || reinterpret_cast<uintptr_t>(dst) % 16 ||
      reinterpret_cast<uintptr_t>(src) % 16)
    throw std::runtime_error("emulate: cp.async.bulk needs 16-byte aligned addresses and a "
                             "size that is a positive multiple of 16");
  const uint32_t offset = mbarrier_offset(bar);
  mbarrier_at(b, offset, "cp.async.bulk");
  shared_offset(dst); // the destination is shared memory (the copy engine
                      // writes it: no bank or coalescing counts)
  b.barrier_copies.push_back({{Block::Copy{dst, src, bytes, bytes}}, offset, int64_t(bytes)});
}

// ---- tensor maps and bulk tensor copies (TMA, sm_90) ------------------------
// A tensor map: on a GPU the 128-byte CUtensorMap that cuTensorMapEncodeTiled
// writes on the host, here its fields. encode_tensor_map checks what the
// driver checks; tensor_copy is cp.async.bulk.tensor's tile mode.
struct TensorMap {
  static constexpr uint32_t kMagic = 0x544d4150; // "TMAP"
  uint32_t magic = 0, rank = 0, elem_bytes = 0, swizzle = 0; // swizzle: 0, 32, 64, 128 bytes
  const unsigned char *base = nullptr;
  uint64_t dims[5] = {};    // elements, innermost first
  uint64_t strides[4] = {}; // bytes between consecutive indices of dims 1..4
  uint32_t box[5] = {};     // elements a copy moves along each dim
};
static_assert(sizeof(TensorMap) <= 128, "a CUtensorMap is 128 bytes");

// cuTensorMapEncodeTiled's rules for a tiled map without interleave or
// element strides: rank 1-5, a 16-byte aligned base, dims in [1, 2^32],
// strides multiples of 16 below 2^40, box dims in [1, 256] with the inner
// one a multiple of 16 bytes, and under a swizzle no wider than it.
inline void encode_tensor_map(TensorMap *map, const void *base, unsigned rank,
                              unsigned elem_bytes, const uint64_t *dims,
                              const uint64_t *strides, const uint32_t *box, unsigned swizzle) {
  auto fail = [](const std::string &what) {
    throw std::runtime_error("emulate: cuTensorMapEncodeTiled: " + what);
  };
  if (rank < 1 || rank > 5)
    fail("rank " + std::to_string(rank) + " is not 1-5");
  if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4 && elem_bytes != 8)
    fail("elements of " + std::to_string(elem_bytes) + " bytes");
  if (reinterpret_cast<uintptr_t>(base) % 16)
    fail("the global address is not 16-byte aligned");
  if (swizzle != 0 && swizzle != 32 && swizzle != 64 && swizzle != 128)
    fail("swizzle " + std::to_string(swizzle));
  TensorMap m;
  m.magic = TensorMap::kMagic;
  m.rank = rank;
  m.elem_bytes = elem_bytes;
  m.swizzle = swizzle;
  m.base = static_cast<const unsigned char *>(base);
  for (unsigned d = 0; d < rank; ++d) {
    if (dims[d] == 0 || dims[d] > (uint64_t(1) << 32))
      fail("dim " + std::to_string(d) + " is " + std::to_string(dims[d]));
    if (box[d] == 0 || box[d] > 256)
      fail("box dim " + std::to_string(d) + " is " + std::to_string(box[d]));
    if (d > 0 && (strides[d - 1] % 16 || strides[d - 1] >= (uint64_t(1) << 40)))
      fail("stride " + std::to_string(d) + " is " + std::to_string(strides[d - 1]) +
           " bytes, not a multiple of 16 below 2^40");
    m.dims[d] = dims[d];
    m.box[d] = box[d];
    if (d > 0)
      m.strides[d - 1] = strides[d - 1];
  }
  const uint64_t inner = uint64_t(box[0]) * elem_bytes;
  if (inner % 16)
    fail("the inner box dim is " + std::to_string(inner) + " bytes, not a multiple of 16");
  if (swizzle && inner > swizzle)
    fail("the inner box dim (" + std::to_string(inner) + " bytes) is wider than the " +
         std::to_string(swizzle) + "-byte swizzle");
  *map = m;
}

// cp.async.bulk.tensor.Nd.shared::cluster.global.tile.mbarrier::complete_tx::bytes
// [dst], [map, {coords}], [bar]: the box of `map` whose first element is at
// `coords` (signed, innermost first) lands in shared memory at `dst`
// (128-byte aligned) with the box's elements packed innermost first, each
// 16-byte chunk at its swizzled address (bits [4, 4 + log2 W) of the shared
// address XORed with bits [7, 7 + log2 W), W = swizzle / 16: the layout
// wgmma_element_offset reads); elements outside the tensor are zeros. It
// completes the whole box's bytes on `bar`, out-of-bounds ones included.
inline void tensor_copy(void *dst, const TensorMap *map, const int32_t *coords, void *bar) {
  Block &b = running_block("cp.async.bulk.tensor");
  if (map->magic != TensorMap::kMagic)
    throw std::runtime_error("emulate: cp.async.bulk.tensor with a tensor map that "
                             "encode_tensor_map did not write");
  const uint32_t at = shared_offset(dst);
  if (at % 128)
    throw std::runtime_error("emulate: cp.async.bulk.tensor to shared memory that is not "
                             "128-byte aligned");
  const uint32_t offset = mbarrier_offset(bar);
  mbarrier_at(b, offset, "cp.async.bulk.tensor");
  const unsigned rank = map->rank, e = map->elem_bytes;
  uint64_t count = 1;
  for (unsigned d = 0; d < rank; ++d)
    count *= map->box[d];
  const uint64_t bytes = count * e;
  if (at + bytes > b.dynamic_bytes)
    throw std::runtime_error("emulate: cp.async.bulk.tensor past the end of the dynamic "
                             "shared memory");
  Block::BarrierCopies copy{{}, offset, int64_t(bytes), std::vector<unsigned char>(bytes, 0)};
  // Gather the box, element by element, innermost dim fastest.
  unsigned idx[5] = {0, 0, 0, 0, 0};
  for (uint64_t n = 0; n < count; ++n) {
    bool inside = true;
    uint64_t src = 0;
    for (unsigned d = 0; d < rank; ++d) {
      const int64_t c = int64_t(coords[d]) + idx[d];
      inside &= c >= 0 && uint64_t(c) < map->dims[d];
      src += uint64_t(c) * (d ? map->strides[d - 1] : e);
    }
    if (inside)
      std::memcpy(copy.staged.data() + n * e, map->base + src, e);
    for (unsigned d = 0; d < rank && ++idx[d] == map->box[d]; ++d)
      idx[d] = 0;
  }
  const uint32_t w = map->swizzle / 16; // chunks a swizzle row has (0: none)
  for (uint64_t o = 0; o < bytes; o += 16) {
    uint32_t a = uint32_t(at + o);
    if (w)
      a ^= ((a >> 7) & (w - 1)) << 4;
    copy.copies.push_back({b.dynamic_shared + a, copy.staged.data() + o, 16, 16});
  }
  b.barrier_copies.push_back(std::move(copy));
}

// ---- named barriers and register reallocation (sm_90) -----------------------
// bar.sync id, count / bar.arrive id, count: barrier `id` (1-15 here; 0 is
// __syncthreads') completes when `count` threads (a multiple of 32) have
// arrived at it, whoever they are; bar.sync waits for that, bar.arrive does
// not. Every arrival of a generation must name the same count.
inline void named_barrier(unsigned id, unsigned count, bool wait_for_it) {
  Block &b = running_block("bar.sync");
  if (id == 0 || id > 15)
    throw std::runtime_error("emulate: named barrier " + std::to_string(id) +
                             " (1-15; 0 is __syncthreads')");
  if (count == 0 || count % 32 || count > b.fibers.size())
    throw std::runtime_error("emulate: named barrier " + std::to_string(id) + " for " +
                             std::to_string(count) +
                             " threads (a multiple of 32, at most the block)");
  Block::Named &n = b.named[id];
  if (n.arrived && n.count != count)
    throw std::runtime_error("emulate: named barrier " + std::to_string(id) + " awaited by " +
                             std::to_string(count) + " and by " + std::to_string(n.count) +
                             " threads in one generation");
  n.count = count;
  if (++n.arrived == count) {
    n.arrived = 0;
    for (Fiber &f : b.fibers)
      if (f.state == State::AtNamedBarrier && f.named == id)
        f.state = State::Ready;
    return;
  }
  if (wait_for_it) {
    b.fibers[threadIdx.x].named = id;
    wait(State::AtNamedBarrier);
  }
}

// setmaxnreg.{inc,dec}.sync.aligned.u32 n: the calling warpgroup's threads
// hold n registers each from here (n a multiple of 8 in [24, 256]); .dec
// gives registers back to the block's file, .inc waits until the file has
// them. Warpgroup-collective.
inline void setmaxnreg(unsigned n, bool increase) {
  Block &b = running_block("setmaxnreg");
  if (n < 24 || n > 256 || n % 8)
    throw std::runtime_error("emulate: setmaxnreg " + std::to_string(n) +
                             " (a multiple of 8 in [24, 256])");
  warpgroup_sync();
  const unsigned t = threadIdx.x;
  if (increase ? n < b.registers[t] : n > b.registers[t])
    throw std::runtime_error("emulate: setmaxnreg." + std::string(increase ? "inc " : "dec ") +
                             std::to_string(n) + " from " + std::to_string(b.registers[t]) +
                             " registers");
  if (!increase) {
    b.registers[t] = n;
    return;
  }
  while (registers_free(b) < n - b.registers[t]) {
    b.fibers[t].registers = n;
    wait(State::AtRegisters);
  }
  b.registers[t] = n;
}

} // namespace llama_emu

namespace llama_emu {
// A kernel's name, demangled through the dynamic symbol table (the kernels
// of a shared library have one), or "?".
inline std::string kernel_name(const void *kernel) {
  std::string name = "?";
  Dl_info info;
  if (kernel && dladdr(kernel, &info) && info.dli_sname) {
    int status = 0;
    char *d = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    name = status == 0 && d ? d : info.dli_sname;
    std::free(d);
  }
  return name;
}
// Counters as text, one kernel a line: "name<TAB>a<TAB>b<TAB>c" for the
// fields `row` gives; writes at most `cap` bytes, returns the whole length.
template <typename Map, typename Row>
size_t counters_text(const Map &counters, Row row, char *buf, size_t cap) {
  std::string text;
  for (const auto &[kernel, c] : counters) {
    const auto [requests, cost, ideal] = row(c);
    if (!requests)
      continue;
    text += kernel_name(kernel) + "\t" + std::to_string(requests) + "\t" +
            std::to_string(cost) + "\t" + std::to_string(ideal) + "\n";
  }
  if (buf && cap)
    std::memcpy(buf, text.data(), std::min(cap, text.size()));
  return text.size();
}
} // namespace llama_emu

// The counters as text (extern "C" for the Python harnesses; weak: every
// translation unit may define them). Coalescing: "name<TAB>requests<TAB>
// sectors<TAB>ideal sectors"; banks: "name<TAB>requests<TAB>wavefronts<TAB>
// ideal wavefronts". Kernels without requests are left out.
extern "C" __attribute__((weak, used)) size_t llama_emu_coalescing_report(char *buf,
                                                                          size_t cap) {
  return llama_emu::counters_text(
      llama_emu::coalescing(),
      [](const llama_emu::Coalescing &c) {
        return std::make_tuple(c.requests, c.sectors, c.ideal_sectors);
      },
      buf, cap);
}
extern "C" __attribute__((weak, used)) size_t llama_emu_bank_report(char *buf, size_t cap) {
  return llama_emu::counters_text(
      llama_emu::banks(),
      [](const llama_emu::Banks &c) {
        return std::make_tuple(c.requests, c.wavefronts, c.ideal_wavefronts);
      },
      buf, cap);
}

inline void __syncthreads() { llama_emu::wait(llama_emu::State::AtBlockBarrier); }

namespace llama_emu {
// Every lane of the calling warp offers `value` and takes lane `src`'s.
template <typename T> T warp_exchange(T value, unsigned src) {
  static T exchange[1024];
  const unsigned t = threadIdx.x;
  exchange[t] = value;
  warp_sync();
  T other = exchange[(t & ~31u) + (src & 31u)];
  warp_sync();
  return other;
}
} // namespace llama_emu

template <typename T> T __shfl_xor_sync(unsigned, T value, int lane_mask, int = 32) {
  return llama_emu::warp_exchange(value, (threadIdx.x & 31u) ^ unsigned(lane_mask));
}

// The value of lane `src_lane` of the calling warp (every lane calls).
template <typename T> T __shfl_sync(unsigned, T value, int src_lane, int = 32) {
  return llama_emu::warp_exchange(value, unsigned(src_lane));
}

// The lanes of the calling warp wait for each other (shared-memory writes
// of one lane are visible to the others after it).
inline void __syncwarp(unsigned = 0xffffffffu) { llama_emu::warp_sync(); }

// Bit l of the result: lane l's predicate, for the lanes of the calling warp.
inline unsigned __ballot_sync(unsigned, int predicate) {
  static int votes[1024];
  const unsigned t = threadIdx.x, first = t & ~31u;
  votes[t] = predicate != 0;
  llama_emu::warp_sync();
  unsigned mask = 0;
  for (unsigned l = 0; l < 32; ++l)
    mask |= unsigned(votes[first + l]) << l;
  llama_emu::warp_sync();
  return mask;
}
inline int __ffs(unsigned x) { return __builtin_ffs(int(x)); }
// Fibers of a block run one at a time on one thread: plain arithmetic.
inline unsigned atomicAdd(unsigned *p, unsigned v) {
  const unsigned old = *p;
  *p = old + v;
  return old;
}

struct __nv_bfloat16 {
  uint16_t bits;
};
inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) // NaN stays a (quiet) NaN
    return {uint16_t((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return {uint16_t(u >> 16)};
}
inline float __bfloat162float(__nv_bfloat16 h) {
  uint32_t u = uint32_t(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.bits; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short bits) { return {bits}; }
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float __int_as_float(int bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
// sin(pi x) and cos(pi x), as CUDA's sincospif (exact range reduction, no
// slow path); here through double and rounded once.
inline void sincospif(float x, float *s, float *c) {
  const double a = 3.14159265358979323846 * double(x);
  *s = float(std::sin(a));
  *c = float(std::cos(a));
}

// CUDA's vector types that the packed accesses of runtime/cuda/kernels use.
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(8) int2 {
  int x, y;
};
struct alignas(8) float2 {
  float x, y;
};
// Stores with a cache hint (st.global.wb.v4 on a GPU): plain stores here.
inline void __stwb(int4 *p, int4 v) { *p = v; }
inline void __stwb(int2 *p, int2 v) { *p = v; }
inline void sincos(double x, double *s, double *c) {
  *s = std::sin(x);
  *c = std::cos(x);
}


// The runtime API calls of runtime/cuda/session.cu: device memory is host
// memory and every call completes before it returns.
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3
};
inline cudaError_t cudaMalloc(void **p, size_t bytes) {
  *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!*p)
    throw std::runtime_error("emulate: cudaMalloc of " + std::to_string(bytes) +
                             " bytes failed");
  return cudaSuccess;
}
inline cudaError_t cudaFree(void *p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemset(void *p, int value, size_t bytes) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes,
                                   cudaMemcpyKind, cudaStream_t) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

#define LLAMA_LAUNCH(kernel, grid, block, stream, ...)                          \
  ::llama_emu::launch((grid), (block), [&] { kernel(__VA_ARGS__); },             \
                      reinterpret_cast<const void *>(kernel))
// A launch with `smem` bytes of dynamic shared memory (LLK_DYNAMIC_SHARED).
#define LLAMA_LAUNCH_SMEM(kernel, grid, block, smem, stream, ...)               \
  ::llama_emu::launch((grid), (block), [&] { kernel(__VA_ARGS__); },             \
                      reinterpret_cast<const void *>(kernel), (smem))
