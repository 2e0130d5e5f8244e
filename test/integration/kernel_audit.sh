# tools/bench/kernel_audit, the static audit of the generated CUDA kernels
# (PTX and ptxas -v for sm_90a, no GPU), checked against facts known without
# it: a hand-written source whose kernels have a known stack frame and known
# access widths (so --check and the width counts can be seen to fail), and
# the kernels of micro and tiny (bf16): one per __global__ of the source
# plus the instantiated kernel templates of the headers it includes, none
# spilling or with a stack frame, and tiny's entries, global loads/stores and
# 128-bit ones equal to what grep finds in its PTX. Skipped (exit 0) where
# nvcc is absent. Also sm_90a's wgmma wrappers, through a probe kernel.
source "$(dirname "$0")/common.sh" "$@"

NVCC=${CUDACXX:-/usr/local/cuda/bin/nvcc}
if [ ! -x "$NVCC" ]; then
  echo "kernel_audit: nvcc not found ($NVCC), skipped"
  exit 0
fi
AUDIT=$SRC/tools/bench/kernel_audit

# 1. Known kernels. `stacky` indexes a 1 KiB local array with loaded indices,
# which ptxas cannot keep in registers: a stack frame. `vec4` moves float4s
# (one 128-bit load, one 128-bit store); `narrow` moves bf16 (16-bit).
cat > bad.cu <<'EOF'
#include <cuda_bf16.h>
__global__ void __launch_bounds__(64) stacky(const float *__restrict__ in, float *out, const int *idx) {
  float buf[256];
  for (int i = 0; i < 256; ++i) buf[i] = in[threadIdx.x + i * 64];
  for (int j = 0; j < 4; ++j) buf[idx[j] & 255] += 1.0f;
  out[threadIdx.x] = buf[idx[threadIdx.x] & 255];
}
__global__ void __launch_bounds__(256) vec4(const float4 *in, float4 *out) {
  float4 v = in[blockIdx.x * 256 + threadIdx.x];
  v.x += 1.0f;
  out[blockIdx.x * 256 + threadIdx.x] = v;
}
__global__ void narrow(const __nv_bfloat16 *in, __nv_bfloat16 *out) {
  out[threadIdx.x] = __float2bfloat16(__bfloat162float(in[threadIdx.x]) * 2.0f);
}
EOF
"$AUDIT" --source bad.cu --json bad.json > bad.txt || { cat bad.txt; die "kernel_audit failed on bad.cu"; }
cat bad.txt
"$PY" - <<'PYEOF' || die "kernel_audit misread bad.cu"
import json
d = json.load(open("bad.json"))
k = {x["name"].split("(")[0]: x for x in d["kernels"]}
assert sorted(k) == ["narrow", "stacky", "vec4"], sorted(k)
assert k["stacky"]["stack_frame"] >= 1024, k["stacky"]           # the 256-float array
assert k["stacky"]["threads"] == 64 and k["vec4"]["threads"] == 256 and k["narrow"]["threads"] is None
assert k["vec4"]["stack_frame"] == 0 and k["narrow"]["stack_frame"] == 0
m = k["vec4"]["mix"]
assert m["global_loads"] == {"128": 1} and m["global_stores"] == {"128": 1}, m
m = k["narrow"]["mix"]
assert m["global_loads"] == {"16": 1} and m["global_stores"] == {"16": 1}, m
assert k["narrow"]["global_128bit"] == 0 and k["stacky"]["global_128bit"] == 0
# stacky: 64 threads = 2 warps, so the 32-block limit gives 64 warps: 100%.
assert k["stacky"]["occupancy"]["fraction"] == 1.0, k["stacky"]["occupancy"]
s = d["summary"]
assert s["kernels"] == 3 and s["kernels_with_stack_frame"] == ["stacky"] and s["kernels_with_spills"] == []
assert s["global_128bit"] == 2 and s["global_accesses"] == sum(x["global_accesses"] for x in d["kernels"])
PYEOF
[ "$(grep -c __global__ bad.cu)" = 3 ] || die "bad.cu should hold 3 kernels"

# --check: the stack frame fails and names the kernel; --allow-stack waives it.
if "$AUDIT" --source bad.cu --check > /dev/null 2> check.err; then
  die "--check passed a kernel with a stack frame"
fi
grep -q "kernel stacky: .* stack frame" check.err || { cat check.err; die "--check did not name stacky"; }
grep -q "kernel vec4\|kernel narrow" check.err && { cat check.err; die "--check blamed a clean kernel"; }
"$AUDIT" --source bad.cu --check --allow-stack stacky --require-v4 vec4 > /dev/null ||
  die "--check failed with stacky allowed and vec4's 128-bit accesses"
if "$AUDIT" --source bad.cu --check --allow-stack stacky --require-v4 narrow > /dev/null 2> check.err; then
  die "--require-v4 passed a kernel of 16-bit accesses"
fi
grep -q "kernel narrow: no 128-bit" check.err || { cat check.err; die "--require-v4 did not name narrow"; }
if "$AUDIT" --source bad.cu --check --allow-stack stacky --require-v4 no_such_kernel > /dev/null 2>&1; then
  die "--require-v4 passed a name that matches no kernel"
fi

# 2. The generated kernels: micro through the `--` route, tiny from a source.
# Every __global__ of the source must be one audited kernel with its
# __launch_bounds__ as threads; every other entry must be an instantiation of
# a __global__ template of the repo headers the source includes (recursively:
# runtime/cuda/kernels/*.cuh, the ABFT checks of gemm_check.inl). --check: no
# kernel may spill or have a stack frame.
"$AUDIT" --build "$BUILD" --json micro.json --check -- --preset micro > micro.txt ||
  { cat micro.txt; die "kernel_audit failed on micro"; }
compile --preset micro --target cuda --emit kernels -o micro.cu
compile --preset tiny --target cuda --emit kernels -o tiny.cu
"$AUDIT" --source tiny.cu --json tiny.json --check > tiny.txt || { cat tiny.txt; die "kernel_audit failed on tiny"; }
cat tiny.txt
"$PY" - "$SRC" micro "$(grep -c __global__ micro.cu)" tiny "$(grep -c __global__ tiny.cu)" <<'PYEOF' ||
import json, os, re, sys
repo = sys.argv[1]
# __global__ void [__launch_bounds__(...(...)...)] NAME(
GLOBAL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\((?:[^()]|\([^()]*\))*\)\s*)?(\w+)\s*\(")

def header_kernels(text, seen):
    names = set()
    for h in re.findall(r'#include "([^"]+)"', text):
        path = os.path.join(repo, h)
        if path in seen or not os.path.isfile(path):
            continue
        seen.add(path)
        body = open(path).read()
        names |= set(GLOBAL.findall(body)) | header_kernels(body, seen)
    return names

for name, n in zip(sys.argv[2::2], sys.argv[3::2]):
    src = open(name + ".cu").read()
    defs = dict((k, int(t)) for t, k in re.findall(r"__global__ void __launch_bounds__\((\d+)\) (\w+)\(", src))
    assert len(defs) == int(n), (name, len(defs), n)
    from_headers = header_kernels(src, set())
    d = json.load(open(name + ".json"))
    ks, s = d["kernels"], d["summary"]
    assert len({k["mangled"] for k in ks}) == len(ks) == s["kernels"], name
    bare = [re.sub(r"^void ", "", k["name"].split("(")[0]) for k in ks]
    for k, b in zip(ks, bare):
        assert k["registers"] > 0, k["name"]
        assert k["threads"] is None or 0 < k["occupancy"]["fraction"] <= 1, k
        if b in defs:
            assert k["threads"] == defs[b], (k["name"], k["threads"], defs[b])
        else:  # e.g. "llk::rope_kernel<__nv_bfloat16, 64l, rope_turns_0>"
            assert re.sub(r"<.*", "", b).split("::")[-1] in from_headers, (k["name"], sorted(from_headers))
    assert sorted(b for b in bare if b in defs) == sorted(defs), name
    print("%s: %d kernels = %d __global__ in the source + %d header instantiations; %d with a stack "
          "frame, %d spill; 128-bit global accesses: %s of %d" % (name, len(ks), len(defs), len(ks) - len(defs),
          len(s["kernels_with_stack_frame"]), len(s["kernels_with_spills"]), s["global_128bit"],
          s["global_accesses"]))
PYEOF
  die "kernel_audit's kernels disagree with the sources"

# The PTX's own counts, by grep over the .entry bodies (a .func such as the
# fp64 trig slow path is not attributed to kernels): entries, global
# loads/stores and the 128-bit ones (.v4 of 32-bit or .v2 of 64-bit elements).
"$NVCC" -arch=sm_90a -std=c++17 -O3 -I"$SRC" -ptx tiny.cu -o tiny.ptx
awk '/\.entry /{e=1} /^(\.visible |\.weak )?\.func/{e=0} e' tiny.ptx > entries.ptx
gl='^\s*(@!?%p[0-9]+\s+)?(ld|ldu|st)\.global'
wide='\.(v4\.[bsuf]32|v2\.[bsuf]64|b128)\s'
"$PY" - tiny.json "$(grep -c '\.entry ' tiny.ptx)" "$(grep -cE "$gl" entries.ptx)" \
  "$(grep -E "$gl" entries.ptx | grep -cE "$wide" || true)" <<'PYEOF' || die "kernel_audit's counts disagree with the PTX"
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
assert (s["kernels"], s["global_accesses"], s["global_128bit"]) == tuple(map(int, sys.argv[2:])), (s, sys.argv[2:])
print("tiny PTX: %s entries, %s global loads/stores, %s of them 128-bit: as audited" % tuple(sys.argv[2:]))
PYEOF
# 3. What the CUDA backend issue asks of the memory-bound kernels: every family
# moves 16-byte packs (tiny's widths are multiples of the pack), in bf16 and
# fp32 storage; nothing spills or has a stack frame. (Attention is the next
# issue's: its kernels are not required to here.)
V4=(--require-v4 rms_norm_forward --require-v4 rms_norm_backward --require-v4 column_sum
    --require-v4 rope_kernel --require-v4 swiglu_forward --require-v4 swiglu_backward
    --require-v4 sum_kernel --require-v4 ce_rows_kernel --require-v4 embedding_forward
    --require-v4 embedding_sum)
"$AUDIT" --source tiny.cu --check "${V4[@]}" > /dev/null || die "a tiny bf16 memory-bound kernel lacks 128-bit accesses"
compile --preset tiny --target cuda --cuda-activations f32 --emit kernels -o tiny-f32.cu
"$AUDIT" --source tiny-f32.cu --check "${V4[@]}" > /dev/null || die "a tiny fp32 memory-bound kernel lacks 128-bit accesses"
# Unfused programs use the same families (the norm gradient recomputing rstd).
compile --preset tiny --no-fuse --target cuda --emit kernels -o tiny-unfused.cu
"$AUDIT" --source tiny-unfused.cu --check --require-v4 rms_norm_backward --require-v4 rope_kernel \
  --require-v4 ce_rows_kernel > /dev/null || die "a tiny unfused memory-bound kernel lacks 128-bit accesses"
echo "memory-bound kernels: 128-bit accesses in every family (tiny bf16, fp32, unfused)"

# 4. sm_90a's warpgroup MMA (mma.cuh's wgmma wrappers, emulated in
# emulate_wgmma_test): the probe assembles for sm_90a with every wgmma it
# issues (4 m64n128k16 from shared memory, 8 m64n64k16 with A in registers
# and B transposed), its fences, commits and waits, and no spill or stack; the
# mbarrier probe beside it has every mbarrier and bulk-copy instruction, the
# TMA probe the tensor copy, setmaxnreg and the named barriers of warp
# specialization. And tiny's attention forward and the backward's dQ and dK/dV
# kernels (flash_attention_sm90.cuh) have all of it: wgmma, TMA copies, setmaxnreg
# 24 / 240, no spill.
"$AUDIT" --source "$SRC/test/integration/Inputs/wgmma_probe.cu" --json wgmma.json --check > wgmma.txt ||
  { cat wgmma.txt; die "kernel_audit failed on the wgmma probe"; }
"$NVCC" -arch=sm_90a -std=c++17 -O3 -I"$SRC" -ptx "$SRC/test/integration/Inputs/wgmma_probe.cu" -o wgmma.ptx
"$PY" - wgmma.json wgmma.ptx <<'PYEOF' || die "the wgmma probe's PTX is not what mma.cuh should emit"
import json, re, sys
ks = {x["name"].split("(")[0]: x for x in json.load(open(sys.argv[1]))["kernels"]}
assert sorted(ks) == ["mbarrier_probe", "tma_probe", "wgmma_probe"], sorted(ks)
k = [ks["wgmma_probe"]]
assert k[0]["mix"]["wgmma"] == 12 and k[0]["mix"]["mma_sync"] == 0, k
ptx = open(sys.argv[2]).read()
ss = re.findall(r"wgmma\.mma_async\.sync\.aligned\.m64n128k16\.f32\.bf16\.bf16\s+\{[^}]*\},\s*%rd\d+,\s*%rd\d+,\s*p,\s*1,\s*1,\s*0,\s*0;", ptx)
rs = re.findall(r"wgmma\.mma_async\.sync\.aligned\.m64n64k16\.f32\.bf16\.bf16\s+\{[^}]*\},\s*\{[^}]*\},\s*%rd\d+,\s*p,\s*1,\s*1,\s*1;", ptx)
assert (len(ss), len(rs)) == (4, 8), (len(ss), len(rs))
for op, n in (("wgmma.fence.sync.aligned", 2), ("wgmma.commit_group.sync.aligned", 2),
              ("wgmma.wait_group.sync.aligned 0", 2), ("fence.proxy.async.shared::cta", 1)):
    assert ptx.count(op) == n, (op, ptx.count(op))
for op in ("mbarrier.init.shared::cta.b64", "mbarrier.arrive.expect_tx.shared::cta.b64",
           "mbarrier.arrive.shared::cta.b64", "mbarrier.try_wait.parity.shared::cta.b64",
           "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes",
           "cp.async.mbarrier.arrive.noinc.shared::cta.b64",
           "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes",
           "setmaxnreg.dec.sync.aligned.u32 24", "setmaxnreg.inc.sync.aligned.u32 240",
           "fence.mbarrier_init.release.cluster", "bar.sync", "bar.arrive"):
    assert op in ptx, op
t = ks["tma_probe"]
assert t["threads"] == 384 and not t["spill_stores"] and not t["stack_frame"], t
print("wgmma probe: %d registers, 12 wgmma (4 m64n128k16 SS, 8 m64n64k16 RS transposed-B), no spill, "
      "no stack; TMA probe: tensor copies, setmaxnreg, named barriers" % k[0]["registers"])
PYEOF
"$PY" - tiny.json tiny.ptx <<'PYEOF' || die "tiny's attention forward is not the warp-specialized wgmma + TMA kernel"
import json, re, sys
kernels = json.load(open(sys.argv[1]))["kernels"]
ptx = open(sys.argv[2]).read()
for name, ops in (("flash_attention_forward_sm90_kernel", ("bar.arrive",)),
                  ("flash_attention_dq_sm90_kernel", ()), ("flash_attention_dkv_sm90_kernel", ())):
    ks = [k for k in kernels if name in k["name"]]
    assert len(ks) == 1, (name, [k["name"] for k in kernels])
    k = ks[0]
    assert k["threads"] == 384 and k["mix"]["wgmma"] > 0 and not k["spill_stores"] and not k["stack_frame"], k
    body = ptx[ptx.index(k["mangled"] + "("):]
    body = body[:body.find(".entry ") if ".entry " in body else len(body)]  # to the next entry
    for op in ("cp.async.bulk.tensor.4d", "setmaxnreg.dec.sync.aligned.u32 24",
               "setmaxnreg.inc.sync.aligned.u32 240", "bar.sync", "mbarrier.try_wait.parity") + ops:
        assert op in body, (name, op)
    print("tiny %s: %d registers at launch, %d wgmma, TMA, setmaxnreg 24/240, named barriers, "
          "no spill" % (name, k["registers"], k["mix"]["wgmma"]))
PYEOF
echo "kernel_audit: ok"
