# tools/gpu-check, emulated (--emulate: micro shapes, kernels on the CPU
# through emulate.h, torch on the CPU), so that the command a GPU session
# runs first cannot rot where no GPU is: prepare + run end to end, the JSON's
# structure (every section present with a status, numbers that say how they
# were measured, "emulated": true), every emulated launcher of both kernel
# libraries checked against float64 PyTorch and passing, the training run
# and memcheck passing; then one launcher made a no-op must be reported as
# failing (unwritten outputs) while the others still pass.
source "$(dirname "$0")/common.sh" "$@"
export OMP_WAIT_POLICY=passive

"$SRC/tools/gpu-check" --emulate --build "$BUILD" gc > gc.out 2> gc.err ||
  { cat gc.out gc.err; die "tools/gpu-check --emulate failed"; }
cp gc/gpu-check.json first.json
"$PY" - first.json <<'PYEOF' || die "the emulated gpu-check JSON is wrong"
import json, sys
r = json.load(open(sys.argv[1]))
def need(cond, what):
    if not cond:
        sys.exit("gpu-check JSON: " + what)
need(r["schema"] == "llama-mlir/gpu-check/1", "schema")
need(r["emulated"] is True and "meaningless" in r["note"], "emulated flag and note")
need(r["finished_utc"] and r["run_s"] > 0, "finished_utc, run_s")
s = r["sections"]
names = ["device", "attention_sweep", "kernels_bf16", "train_ours", "train_hf", "attention_sdpa",
         "memcheck", "kernels_f32", "train_hf_compile"]
need(list(s) == names, "sections %s" % list(s))
for n in names:
    need(s[n]["status"] in ("ok", "skipped"), "%s: %s" % (n, s[n]))
    need(s[n]["status"] != "skipped" or s[n]["reason"].startswith("skipped: "), n + " skip reason")
cb = s["device"]["copy_bandwidth"]
need(cb["gbps_median"] > 0 and cb["copy_verified"] and "bytes moved" in cb["method"], "copy bandwidth")
prepared = r["prepared"]
for act in ("bf16", "f32"):
    k = s["kernels_" + act]
    launchers = k["launchers"]
    need(len(launchers) == k["launcher_count"] > 10, act + " launcher count")
    need(k["passed"] == len(launchers) and k["not_passed"] == 0, act + " not all passed")
    need(k["cuda_emulation_summary"] == "%d launchers, 0 failures (%s storage)" % (len(launchers), act),
         act + " summary line: %s" % k["cuda_emulation_summary"])
    need(k["max_relative_error_by_op"] and max(k["max_relative_error_by_op"].values()) <
         (1e-2 if act == "bf16" else 1e-5), act + " errors")
    ops = {l["op"] for l in launchers}
    need({"llama.attention", "llama.attention_grad", "llama.rms_norm_grad_rstd",
          "llama.cross_entropy_fused", "llama.embedding_grad", "llama.swiglu_grad"} <= ops, act + " ops")
    for l in launchers:
        need(l["correctness"] == "pass", "%s %s" % (act, l))
        t = l["timing"]
        need(t["n"] >= 3 and t["median_us"] > 0 and "meaningless" in t["method"], "%s timing" % l["name"])
        need(l["bytes"] > 0 and l["gbps"] is not None, "%s bytes" % l["name"])
        if l["op"] in ("llama.attention", "llama.attention_grad"):  # (cached: memory-bound)
            need(l["tflops"] is not None and l["meets_target"] is None, "%s TF/s" % l["name"])
        else:
            need(isinstance(l["meets_target"], bool), "%s target" % l["name"])
    need(sum(l["calls_per_train_step"] for l in launchers) > 10, act + " calls per train step")
t = s["train_ours"]
need(len(t["records"]) >= 4 and t["tokens_per_s"] > 0 and t["mfu"] is not None, "train_ours numbers")
need(t["flops_per_token"] == round(prepared["report"]["flops-per-token"]), "flops/token vs --report")
need("CUDA emulated" in " ".join(t["output_head"]), "train_ours device line")
w = s["attention_sweep"]  # the tensor-core forward through attention-bench.so vs float64
need(w["status"] == "ok" and len(w["results"]) == 2, "attention sweep: %s" % w)
for x in w["results"]:
    need(x["correct"] and x["o_rel_l2_vs_float64"] < 1e-2 and x["lse_rel_l2_vs_float64"] < 1e-5
         and x["mma_sync_o_rel_l2_vs_float64"] < 1e-2
         and len(x["grads_rel_l2_vs_float64"]) == 3 and max(x["grads_rel_l2_vs_float64"]) < 1e-2,
         "attention sweep numbers: %s" % x)
m = s["memcheck"]
need(m["checks"] and all(c["ok"] for c in m["checks"].values()), "memcheck checks")
for n in ("train_hf", "train_hf_compile"):
    try:
        import transformers  # noqa: F401
    except ImportError:
        need(s[n]["reason"] == "skipped: transformers not installed", n + " skip reason")
need(r["summary"]["sections"] == {n: s[n]["status"] for n in names}, "summary")
print("gpu-check --emulate: %s; train %s tok/s (meaningless); memcheck %s" % (
    r["summary"]["kernels_bf16"], t["tokens_per_s"], r["summary"]["memcheck"]))
PYEOF

# A launcher that returns at once (outputs left NaN) must fail, named, and
# the rest still pass: the harness is not vacuous.
victim=$(grep -o 'extern "C" void op_[0-9]*_swiglu(' gc/kernels-bf16.cu | head -1 | sed 's/extern "C" void //; s/($//')
[ -n "$victim" ] || die "no swiglu launcher in the emulated source"
sed "s/^extern \"C\" void $victim(void \*const \*b, void \*workspace, cudaStream_t stream) {/& return;/" \
  gc/kernels-bf16.cu > gc/kernels-bf16.cpp
grep -q "$victim(void \*const \*b, void \*workspace, cudaStream_t stream) { return;" gc/kernels-bf16.cpp ||
  die "could not make $victim a no-op"
BLAS=$(ls /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so* | head -1)
g++ -std=c++17 -O1 -fopenmp -fPIC -shared -DLLAMA_CUDA_EMULATE -I"$SRC" gc/kernels-bf16.cpp \
  "$BUILD/runtime/libllamart_nomain.a" "$BLAS" -o gc/kernels-bf16.so 2> /dev/null
"$SRC/tools/gpu-check" run --emulate gc --only kernels_bf16 > broken.out 2> broken.err || true
"$PY" - gc/gpu-check.json "$victim" <<'PYEOF' || die "a no-op launcher was not caught"
import json, sys
k = json.load(open(sys.argv[1]))["sections"]["kernels_bf16"]
victim = sys.argv[2]
bad = [l for l in k["launchers"] if l["correctness"] != "pass"]
if k["status"] != "failed" or [l["name"] for l in bad] != [victim]:
    sys.exit("expected %s alone to fail: %s" % (victim, [(l["name"], l["correctness"]) for l in bad]))
if not any("not finite" in f for f in bad[0]["failures"]):
    sys.exit("no 'not finite' failure: %s" % bad[0]["failures"])
print("no-op %s: caught (%s), %d others pass" % (victim, bad[0]["failures"][0], k["passed"]))
PYEOF
echo "gpu_check: ok"
