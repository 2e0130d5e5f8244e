# The CUDA training binary (llama-compile --target cuda -o BIN): the whole
# driver (data, gradient accumulation, clipping, AdamW, evaluation,
# checkpoints, fault skips) around the device session (runtime/cuda/
# session.cu) and the generated step.
#
# Without a GPU the binary is built with --cuda-emulate (every generated
# kernel and every session kernel run on the CPU through emulate.h, the CPU
# BLAS in place of cuBLASLt) and checked against the CPU binary of the same
# model, flags and data:
#  - losses and gradient norms of every update (rel. 1e-5), the skipped
#    update of an injected NaN at the same step, val losses;
#  - final parameters and AdamW moments;
#  - exact resume on the device: 2 updates + --resume + 2 equal 4 straight,
#    checkpoint files byte for byte;
#  - `verify` (the device step) against `verify --cpu` of the same binary;
#  - what the device path refuses, by flag.
# A bf16-storage binary (the default: fp32 master weights, bf16 copies and
# activations, fp32 weight gradients) is checked against the fp32 CPU run:
# loss curve, final losses, one step's gradients, exact resume.
# Where nvcc exists the real binaries are built too; they run the same
# checks on a GPU (fp32 tolerance 1e-4: cuBLASLt sums in another order), and
# without one they must stop with "no CUDA device" and the driver's reason.
source "$(dirname "$0")/common.sh" "$@"
export OMP_WAIT_POLICY=passive
write_shards data 64 4000 800 5
MODEL=(--preset micro --batch 2 --seq-len 8)
TRAIN=(--data data --steps 4 --grad-accum 2 --checkpoint-every 2 --eval-every 2
       --eval-batches 1 --inject nan@3)

compile "${MODEL[@]}" -o cpu
compile "${MODEL[@]}" --target cuda --cuda-activations f32 --cuda-emulate -o emu
./emu info --json | grep -q '"target": "cuda"' || die "info does not say target cuda"

# compare RUN_A RUN_B TOLERANCE: metrics and final checkpoint.
compare() {
  "$PY" - "$SRC/test/integration" "$1" "$2" "$3" <<'PYEOF'
import json, sys
sys.path.insert(0, sys.argv[1])
from llama_torch import read_safetensors
a_dir, b_dir, tol = sys.argv[2], sys.argv[3], float(sys.argv[4])
def records(d):
    return [json.loads(l) for l in open(d + "/metrics.jsonl")]
ra, rb = records(a_dir), records(b_dir)
if [sorted(r) for r in ra] != [sorted(r) for r in rb]:
    sys.exit("the runs logged different records:\n%s\n%s" % (ra, rb))
worst = 0.0
for x, y in zip(ra, rb):
    for key in ("loss", "grad_norm", "val_loss"):
        if key in x and (x[key] is None) != (y[key] is None):
            sys.exit("record differs in %s: %s vs %s" % (key, x, y))
        if key in x and x[key] is not None:
            worst = max(worst, abs(x[key] - y[key]) / max(abs(x[key]), 1e-30))
    for key in ("step", "skipped"):
        if x.get(key) != y.get(key):
            sys.exit("record differs in %s: %s vs %s" % (key, x, y))
skips = [r for r in ra if r.get("skipped")]
if len(skips) != 1 or skips[0]["skipped"] != "nonfinite":
    sys.exit("expected one non-finite skip (--inject nan@3), got %s" % skips)
ckpt = "/checkpoints/step_000004/"
pa, _ = read_safetensors(a_dir + ckpt + "model.safetensors")
pb, _ = read_safetensors(b_dir + ckpt + "model.safetensors")
dp = max(((pa[n].double() - pb[n].double()).abs().max() / pa[n].double().abs().max()).item() for n in pa)
ma, _ = read_safetensors(a_dir + ckpt + "optimizer.safetensors")
mb, _ = read_safetensors(b_dir + ckpt + "optimizer.safetensors")
dm = max(((ma[n].double() - mb[n].double()).abs().max() / ma[n].double().abs().max().clamp(min=1e-30)).item() for n in ma)
print("%d records, max rel. difference: losses/norms %.2e, params %.2e, moments %.2e"
      % (len(ra), worst, dp, dm))
if worst > tol or dp > tol or dm > 100 * tol:
    sys.exit("beyond tolerance %g" % tol)
PYEOF
}

./cpu train "${TRAIN[@]}" --run-dir run-cpu > cpu.out 2> cpu.err
./emu train "${TRAIN[@]}" --run-dir run-emu > emu.out 2> emu.err ||
  { cat emu.err; die "the emulated CUDA binary failed to train"; }
grep -q "device: CUDA emulated" emu.err || die "no device line in the progress output"
out=$(compare run-cpu run-emu 1e-5) || { echo "$out"; die "emulated CUDA and CPU runs differ"; }
echo "emulated CUDA vs CPU: $out"
# Without llama-fuse every op is its own kernel (rope, rope_grad, the norm
# gradient recomputing rstd, the cross-entropy gradient): the unfused binary
# trains like the fused one.
compile "${MODEL[@]}" --no-fuse --target cuda --cuda-activations f32 --cuda-emulate -o emu-unfused
./emu-unfused train "${TRAIN[@]}" --run-dir run-emu-unfused > /dev/null 2> emu-unfused.err ||
  { cat emu-unfused.err; die "the unfused emulated CUDA binary failed to train"; }
out=$(compare run-emu run-emu-unfused 1e-5) || { echo "$out"; die "unfused and fused CUDA runs differ"; }
echo "emulated CUDA unfused vs fused: $out"

# Exact resume: BIN trains to STOP, resumes to END in a new run dir, and its
# final checkpoint must equal the straight run's in STRAIGHT byte for byte.
resume_exact() {  # LABEL BIN STRAIGHT STOP END TRAIN_ARGS...
  local label=$1 bin=$2 straight=$3 stop=$4 end=$5; shift 5
  local dir=$straight-resumed ckpt
  ckpt=checkpoints/step_$(printf %06d "$end")
  "$bin" train "$@" --run-dir "$dir" --stop-at "$stop" > /dev/null 2>&1
  "$bin" train "$@" --run-dir "$dir" --resume > /dev/null 2>&1
  for f in model.safetensors optimizer.safetensors; do
    cmp "$straight/$ckpt/$f" "$dir/$ckpt/$f" || die "$label resume: $f differs from the straight run"
  done
  echo "$label resume: $stop + $((end - stop)) updates byte-identical to $end straight"
}
resume_exact device ./emu run-emu 2 4 "${TRAIN[@]}"

# verify: the device step against the CPU step of the same binary.
./cpu info --config-json > micro.json
"$PY" "$SRC/test/integration/llama_torch.py" make-inputs --config micro.json --batch 2 \
  --seq 8 --seed 3 --std 0.05 --weights w.safetensors --batch-file i.safetensors --dtype f32 >/dev/null
./emu verify --weights w.safetensors --batch-file i.safetensors --out g-dev.safetensors > /dev/null
./emu verify --cpu --weights w.safetensors --batch-file i.safetensors --out g-cpu.safetensors > /dev/null
"$PY" "$SRC/test/integration/llama_torch.py" compare --grads g-dev.safetensors \
  --reference g-cpu.safetensors --rtol 1e-5 --label "verify: device step vs CPU step" \
  || die "verify: device and CPU steps differ"

# bf16 storage (the default): fp32 master weights and moments, a bf16 copy
# the step reads, bf16 activations, fp32 weight gradients. Against the fp32
# CPU run at a learning rate where the loss falls: every update's loss within
# 2%, the final train and val loss within 1%; the device step's gradients
# within 3% (relative L2) of the CPU step's; resume exact.
compile "${MODEL[@]}" --target cuda --cuda-emulate -o emu16
BF=(--data data --steps 12 --lr 3e-3 --checkpoint-every 6 --eval-every 6
    --eval-batches 1)
./cpu train "${BF[@]}" --run-dir run16-cpu > /dev/null 2>&1
./emu16 train "${BF[@]}" --run-dir run16 > emu16.out 2> emu16.err ||
  { cat emu16.err; die "the bf16 binary failed to train"; }
grep -q "bf16 storage, fp32 master weights" emu16.err || die "no bf16 line in the progress output"
"$PY" - <<'PYEOF2' || die "bf16 run does not track the fp32 CPU run"
import json, sys
def records(d):
    return [json.loads(l) for l in open(d + "/metrics.jsonl")]
a, b = records("run16-cpu"), records("run16")
la = [r["loss"] for r in a if "loss" in r and "skipped" not in r]
lb = [r["loss"] for r in b if "loss" in r and "skipped" not in r]
va = [r["val_loss"] for r in a if "val_loss" in r]
vb = [r["val_loss"] for r in b if "val_loss" in r]
step = max(abs(x - y) / x for x, y in zip(la, lb))
final = max(abs(la[-1] - lb[-1]) / la[-1], abs(va[-1] - vb[-1]) / va[-1])
print("bf16 vs fp32 CPU: loss %.4f -> %.4f (CPU %.4f -> %.4f), val %.4f (CPU %.4f); "
      "max per-update difference %.2e, final %.2e" % (lb[0], lb[-1], la[0], la[-1], vb[-1], va[-1], step, final))
sys.exit(0 if len(la) == len(lb) == 12 and la[-1] < la[0] - 0.1 and step < 2e-2 and final < 1e-2 else 1)
PYEOF2
resume_exact "bf16 device" ./emu16 run16 6 12 "${BF[@]}"
./emu16 verify --weights w.safetensors --batch-file i.safetensors --out g16.safetensors > /dev/null
"$PY" "$SRC/test/integration/llama_torch.py" compare --grads g16.safetensors \
  --reference g-cpu.safetensors --rtol 3e-2 --metric l2 \
  --label "verify: bf16 device step vs fp32 CPU step" \
  || die "verify: bf16 device step and CPU step differ"

# memcheck on the device: the arenas' measured high-water marks against the
# plan (bf16 replanned at 2 bytes per element: about half of fp32's), and the
# bytes the session holds against `--report --target cuda`'s (equal: both
# come from runtime/cuda/layout.h; emulated binaries have no cuBLASLt
# workspace, so against the session part).
# With "device", also the device's used memory against what the session holds,
# within 5% (tiny on a GPU; micro's few hundred KB are dwarfed by the 2 MiB
# allocation granularity and cuBLASLt's own allocations).
memcheck_ok() {  # BIN REPORT [device]
  "$1" memcheck > "$1.mem" || die "$1 memcheck failed"
  "$PY" - "$1.mem" "$2" "${3:-}" <<'PYEOF2' || die "$1: device memory use and plan disagree"
import sys
def fields(path):
    m = {}
    for line in open(path):
        if ":" in line:
            k, v = line.split(":", 1)
            m[k.strip()] = v.strip()
    return m
m, r = fields(sys.argv[1]), fields(sys.argv[2])
name = sys.argv[1].split("/")[-1][:-4]
ok = True
for what in ("train", "eval"):
    plan, used = int(m["device-%s-arena-bytes" % what]), int(m["device-%s-arena-used-bytes" % what])
    ok &= plan == int(r["cuda-%s-arena-bytes" % what]) and 0.95 * plan <= used <= plan
    print("%s %s arena: %d of %d planned bytes used" % (name, what, used, plan))
emulated = m["device-used-bytes"].startswith("unknown")
estimate = int(r["cuda-session-bytes" if emulated else "cuda-device-bytes"])
held = int(m["device-held-bytes"])
ok &= held == estimate  # one layout function (runtime/cuda/layout.h) for both
print("%s: session holds %d bytes, --report says %d" % (name, held, estimate))
if sys.argv[3] == "device":
    used = int(m["device-used-bytes"])
    print("%s: device memory used %d, held %d" % (name, used, held))
    ok &= abs(used - held) <= 0.05 * held
sys.exit(0 if ok else 1)
PYEOF2
}
for remat in none selective full; do
  for act in f32 bf16; do
    compile "${MODEL[@]}" --remat $remat --target cuda --cuda-activations $act --report > rep-$remat-$act.txt
    if [ $remat = selective ]; then
      bin=$([ $act = f32 ] && echo ./emu || echo ./emu16)
    else
      bin=./emu-$remat-$act
      compile "${MODEL[@]}" --remat $remat --target cuda --cuda-activations $act --cuda-emulate -o $bin
    fi
    memcheck_ok $bin rep-$remat-$act.txt
  done
done

# ABFT on the device (runtime/cuda/gemm_check.inl): checks of clean GEMMs never
# fire and change nothing; a flipped bit injected into a GEMM output is caught
# and the update recomputed, ending byte-identical to the clean run; unchecked,
# the same flip changes the run. fp32 and bf16 storage (bf16 C rounding is in
# the bound).
ABFT=(--data data --steps 3 --eval-batches 1)
for bin in ./emu ./emu16; do
  n=$(basename $bin)
  $bin train "${ABFT[@]}" --run-dir ab-$n-clean > /dev/null 2>&1
  $bin train "${ABFT[@]}" --run-dir ab-$n-checked --verify-gemm-every 2 > /dev/null 2>&1
  $bin train "${ABFT[@]}" --run-dir ab-$n-caught --verify-gemm-every 3 --inject bitflip@2 \
    > /dev/null 2> ab-$n-caught.err
  $bin train "${ABFT[@]}" --run-dir ab-$n-silent --inject bitflip@2 > /dev/null 2>&1
  m=checkpoints/step_000003/model.safetensors
  cmp ab-$n-clean/$m ab-$n-checked/$m || die "$n: checking clean GEMMs changed the run"
  ! grep -q gemm_failures ab-$n-checked/metrics.jsonl || die "$n: a clean GEMM failed its check"
  grep -q '"gemm_failures":[1-9]' ab-$n-caught/metrics.jsonl ||
    { cat ab-$n-caught.err; die "$n: the injected bit flip was not caught"; }
  cmp ab-$n-clean/$m ab-$n-caught/$m || die "$n: the recomputed update differs from the clean one"
  ! cmp -s ab-$n-clean/$m ab-$n-silent/$m || die "$n: the unchecked bit flip changed nothing"
  echo "$n ABFT: clean checks silent, injected flip caught ($(grep -o '"gemm_failures":[0-9]*' ab-$n-caught/metrics.jsonl | head -1)) and recomputed to the clean bytes; unchecked it changes the run"
done

# Refusals, each naming the flag.
expect_fail() {  # PATTERN CMD...
  local pattern=$1; shift
  if "$@" > fail.out 2>&1; then die "accepted: $*"; fi
  grep -q -- "$pattern" fail.out || { cat fail.out; die "message lacks '$pattern': $*"; }
}
expect_fail "--dtype f64" compile "${MODEL[@]}" --target cuda --dtype f64 -o x4
expect_fail "--cuda-emulate needs --target cuda" compile "${MODEL[@]}" --cuda-emulate -o x5

# The real binaries (fp32 and bf16 storage), where this build has CUDA.
if compile "${MODEL[@]}" --target cuda --cuda-activations f32 -o gpu 2> gpu.err; then
  compile "${MODEL[@]}" --target cuda --arch sm_90a -o gpu16 || die "nvcc build of the bf16 binary failed"
  compile --preset tiny --target cuda -o tiny16 || die "nvcc build of tiny's binary failed"
  if ./gpu train "${TRAIN[@]}" --run-dir run-gpu > gpu.out 2> gpu.err; then
    out=$(compare run-cpu run-gpu 1e-4) || { echo "$out"; die "GPU and CPU runs differ"; }
    echo "GPU vs CPU: $out"
    memcheck_ok ./gpu rep-selective-f32.txt
    memcheck_ok ./gpu16 rep-selective-bf16.txt
    for remat in none selective full; do
      compile --preset tiny --remat $remat --target cuda --report > tiny-$remat.txt
      compile --preset tiny --remat $remat --target cuda -o tiny-$remat || die "nvcc: tiny $remat"
      memcheck_ok ./tiny-$remat tiny-$remat.txt device
    done
    ./gpu16 train "${BF[@]}" --run-dir run16-gpu > /dev/null 2>&1 || die "the bf16 GPU run failed"
    "$PY" - <<'PYEOF2' || die "the bf16 GPU run does not track the fp32 CPU run"
import json, sys
def losses(d, key):
    return [json.loads(l)[key] for l in open(d + "/metrics.jsonl") if key in l and "skipped" not in l]
la, lb = losses("run16-cpu", "loss"), losses("run16-gpu", "loss")
va, vb = losses("run16-cpu", "val_loss"), losses("run16-gpu", "val_loss")
step = max(abs(x - y) / x for x, y in zip(la, lb))
print("bf16 GPU vs fp32 CPU: final loss %.4f vs %.4f, val %.4f vs %.4f, max per-update %.2e"
      % (lb[-1], la[-1], vb[-1], va[-1], step))
sys.exit(0 if len(la) == len(lb) and step < 2e-2 and abs(vb[-1] - va[-1]) / va[-1] < 1e-2 else 1)
PYEOF2
    # Deterministic on the GPU too: exact resume across processes.
    resume_exact GPU ./gpu16 run16-gpu 6 12 "${BF[@]}"
  else
    grep -q "no CUDA device: " gpu.err || { cat gpu.err; die "the GPU binary failed"; }
    echo "nvcc builds ok (micro fp32 and bf16, tiny bf16); no GPU here: $(head -1 gpu.err)"
  fi
else
  grep -q "built without CUDA" gpu.err || { cat gpu.err; die "nvcc build failed"; }
  echo "no nvcc in this build: the real binaries are not built"
fi
echo "cuda_train: ok"
