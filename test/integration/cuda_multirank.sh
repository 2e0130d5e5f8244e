# Partitioned GPU training binaries (llama-compile --target cuda --dp/--tp/--sp)
# against the single-rank CPU run: micro at a global batch of 4 under
# tp=2, tp=2+sp, dp=2 and dp=2 x tp=2, built with --cuda-emulate (every
# generated kernel and the device session run on the CPU, runtime/cuda/
# emulate.h) and started as 2 or 4 MPI ranks. The collectives go through
# runtime/cuda/collectives.h; the emulated implementation
# (collectives_emulated.cpp) runs each collective
# only when the host step waits for it: the latest moment a GPU's
# communication stream could run it, so a wait the compiler placed too late
# (a kernel overwriting a collective's buffer, or reading its output too
# early) changes the numbers here; every fp32 grid (and the dp grids'
# gradient accumulation, and bf16 dp2tp2) also runs with
# LLAMA_EMULATE_COLLECTIVES=early, each collective run where it is started,
# which catches a start placed before its input is complete (a gradient
# bucket marked ready too early). ZeRO-1 runs on the device session
# (gradients reduce-scattered over dp, AdamW on the shard, parameters
# all-gathered); the dp grids are built with small gradient buckets
# (--grad-bucket 1000: 4-8 buckets), whose reduce-scatters the train step
# starts as the backward completes each one, and whose parameter
# all-gathers the next train step starts first and waits for just before
# the forward reads each bucket; dp2 also trains with gradient
# accumulation (the buckets of the last micro-batch add the earlier ones'
# sum before they are reduced) and with gradients replaced after the step
# (--inject nan@3: the session reduces them again).
#   fp32: every loss, val loss and gradient norm within 1e-5 relative of the
#         CPU run and every tensor of the final model and AdamW state within
#         1e-5 relative L2 (multirank.sh explains why L2, not per element).
#   bf16 storage (dp2tp2 and tp2sp): the losses track the single-device bf16
#         binary within 2e-3 relative (measured ~4e-4: bf16 activations are
#         all-reduced in bf16, as Megatron does).
#   bf16 resume: dp2tp2 2 + resume + 2 updates equal 4 straight exactly
#         (the fp32 master weights live in the ZeRO-1 shards only).
#   verify: the dp2tp2 binary's device step over its 4 ranks gives the
#         single-rank CPU step's loss and gradients within 1e-5.
#   re-sharding: 2 updates of the dp2tp2 GPU binary resumed on the CPU to 4
#         equal the straight CPU run (checkpoints are grid- and
#         target-independent).
# With nvcc, the partitioned bf16 source (sequence parallel: staged gathers
# and scatters) also compiles for sm_90a and links against NCCL.
source "$(dirname "$0")/common.sh" "$@"

export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive LLAMA_COMM_TIMEOUT_S=300
MODEL=(--preset micro --batch 4 --seq-len 16)
write_shards data 64 20000 2000 7
TRAIN=(train --data data --steps 4 --lr 3e-3 --warmup 2 --eval-every 2 --eval-batches 2
       --checkpoint-every 2 --quiet)
compare() { "$PY" "$SRC/test/integration/compare_runs.py" --label cuda_multirank --final-step 4 "$@"; }

compile "${MODEL[@]}" --dtype f32 -o one
./one "${TRAIN[@]}" --run-dir one-run > one.out 2>&1 || { cat one.out; die "single-rank CPU run failed"; }

BUCKETS=(--grad-bucket 1000)
for grid in "tp2 2 --tp 2" "tp2sp 2 --tp 2 --sp" "dp2 2 --dp 2 ${BUCKETS[*]}" \
            "dp2tp2 4 --dp 2 --tp 2 ${BUCKETS[*]}"; do
  set -- $grid
  name=$1 n=$2
  shift 2
  compile "${MODEL[@]}" "$@" --target cuda --cuda-activations f32 --cuda-emulate -o $name \
    || die "$name: llama-compile --target cuda failed"
  launch $n ./$name "${TRAIN[@]}" --run-dir $name-run > $name.out 2>&1 || { cat $name.out; die "$name on $n ranks failed"; }
  ./$name info --json | grep -q '"target": *"cuda"' || die "$name: not a CUDA training binary"
  compare $name-run one-run 1e-5 l2 || die "$name (emulated GPU) differs from the single-rank CPU run"
  # The other end of each collective's window: run where it is started.
  LLAMA_EMULATE_COLLECTIVES=early launch $n ./$name "${TRAIN[@]}" --run-dir $name-early \
    > $name-early.out 2>&1 || { cat $name-early.out; die "$name (collectives early) failed"; }
  compare $name-early one-run 1e-5 l2 || die "$name with collectives run early differs from the CPU run"
done

# Gradient accumulation on a dp grid, 2 updates (CI time) of 2 micro-batches:
# the second's backward adds each bucket to the first's sum and reduces it.
SHORT=(train --data data --steps 2 --lr 3e-3 --warmup 1 --eval-every 2 --eval-batches 2
       --checkpoint-every 2 --quiet)
./one "${SHORT[@]}" --grad-accum 2 --run-dir one-acc > one-acc.out 2>&1 \
  || { cat one-acc.out; die "single-rank CPU run with --grad-accum 2 failed"; }
for mode in late early; do
  LLAMA_EMULATE_COLLECTIVES=$mode launch 2 ./dp2 "${SHORT[@]}" --grad-accum 2 \
    --run-dir dp2acc-$mode > dp2acc.out 2>&1 || { cat dp2acc.out; die "dp2 with --grad-accum 2 failed"; }
  "$PY" "$SRC/test/integration/compare_runs.py" --label cuda_multirank --final-step 2 \
    dp2acc-$mode one-acc 1e-5 l2 || die "dp2 with --grad-accum 2 ($mode) differs from the CPU run"
done

# Gradients replaced after the step (--inject nan@3 writes a NaN into every
# rank's local gradients): the session reduces them again before the norm,
# so update 3 is skipped on the grid as on the CPU (a session that kept the
# step's reduced shard would apply it).
./one "${TRAIN[@]}" --inject nan@3 --run-dir one-nan > one-nan.out 2>&1 \
  || { cat one-nan.out; die "single-rank CPU run with --inject nan@3 failed"; }
launch 2 ./dp2 "${TRAIN[@]}" --inject nan@3 --run-dir dp2nan-run > dp2nan.out 2>&1 \
  || { cat dp2nan.out; die "dp2 with --inject nan@3 failed"; }
grep -q '"skipped"' dp2nan-run/metrics.jsonl || die "dp2 --inject nan@3: no skipped update"
compare dp2nan-run one-nan 1e-5 l2 || die "dp2 with --inject nan@3 differs from the CPU run"

# verify on the grid: the device steps of dp2tp2's four ranks (collectives
# included; gradients summed over dp and gathered over tp onto rank 0)
# against the single-rank CPU binary's step, on the same weights and batch.
./one info --config-json > micro.json
"$PY" "$SRC/test/integration/llama_torch.py" make-inputs --config micro.json --batch 4 \
  --seq 16 --seed 3 --std 0.05 --weights w.safetensors --batch-file i.safetensors --dtype f32 >/dev/null
./one verify --weights w.safetensors --batch-file i.safetensors --out g-one.safetensors > /dev/null
launch 4 ./dp2tp2 verify --weights w.safetensors --batch-file i.safetensors --out g-grid.safetensors > verify.out 2>&1 \
  || { cat verify.out; die "verify on dp2tp2 failed"; }
"$PY" "$SRC/test/integration/llama_torch.py" compare --grads g-grid.safetensors \
  --reference g-one.safetensors --rtol 1e-5 \
  --label "cuda_multirank: verify dp2tp2 device step vs single-rank CPU step" \
  || die "verify: the partitioned device step differs from the CPU step"

# bf16 storage: against the single-device bf16 binary.
compile "${MODEL[@]}" --target cuda --cuda-emulate -o oneb
./oneb "${TRAIN[@]}" --run-dir oneb-run > oneb.out 2>&1 || { cat oneb.out; die "single-device bf16 run failed"; }
for grid in "dp2tp2b 4 --dp 2 --tp 2 ${BUCKETS[*]}" "tp2spb 2 --tp 2 --sp"; do
  set -- $grid
  name=$1 n=$2
  shift 2
  compile "${MODEL[@]}" "$@" --target cuda --cuda-emulate -o $name || die "$name: llama-compile failed"
  launch $n ./$name "${TRAIN[@]}" --run-dir $name-run > $name.out 2>&1 || { cat $name.out; die "$name on $n ranks failed"; }
  compare --metrics-only $name-run oneb-run 2e-3 l2 || die "bf16 $name differs from the single-device bf16 run"
done
# The bf16 copy's gathers too, run where they start: the same run exactly.
LLAMA_EMULATE_COLLECTIVES=early launch 4 ./dp2tp2b "${TRAIN[@]}" --run-dir dp2tp2b-early \
  > b0.out 2>&1 || { cat b0.out; die "bf16 dp2tp2 (collectives early) failed"; }
compare dp2tp2b-early dp2tp2b-run 0 max || die "bf16 dp2tp2: collectives run early change the run"

# bf16 on a dp grid keeps the fp32 master weights of each rank's shard alone
# (the bf16 copy is all-gathered); a checkpoint gathers the weights from the
# shards like the moments: 2 updates + resume + 2 equal 4 straight exactly.
launch 4 ./dp2tp2b "${TRAIN[@]}" --run-dir b-resume --stop-at 2 > b1.out 2>&1 || { cat b1.out; die "bf16 dp2tp2 --stop-at 2 failed"; }
launch 4 ./dp2tp2b "${TRAIN[@]}" --run-dir b-resume --resume > b2.out 2>&1 || { cat b2.out; die "bf16 dp2tp2 resume failed"; }
compare b-resume dp2tp2b-run 0 max 2 || die "bf16 dp2tp2: 2 + resume + 2 differs from 4 straight"

# Re-sharding across targets: GPU dp2tp2 for 2 updates, then the CPU binary.
launch 4 ./dp2tp2 "${TRAIN[@]}" --run-dir mixed-run --stop-at 2 > mixed1.out 2>&1 || { cat mixed1.out; die "dp2tp2 --stop-at 2 failed"; }
./one "${TRAIN[@]}" --run-dir mixed-run --resume > mixed2.out 2>&1 || { cat mixed2.out; die "CPU resume of a GPU dp2tp2 checkpoint failed"; }
compare mixed-run one-run 1e-5 l2 2 || die "GPU dp2tp2 2 + CPU 2 differs from 4 CPU updates"

# The report counts the collectives and what runs under them.
compile "${MODEL[@]}" --tp 2 --sp --target cuda --report > report.txt
grep -q "^cuda-collectives: [1-9][0-9]* ([1-9][0-9]* overlapping [1-9][0-9]* kernels and GEMMs)" report.txt \
  || { cat report.txt; die "--report --target cuda: no overlapped collectives"; }
echo "cuda_multirank: $(grep '^cuda-coll' report.txt | tr '\n' ' ')"
compile "${MODEL[@]}" --dp 2 --tp 2 "${BUCKETS[@]}" --target cuda --report > report-dp.txt
grep -q "^cuda-grad-buckets: [2-9] (reduce-scatters overlap the last [1-9][0-9]* of [1-9][0-9]* " report-dp.txt \
  || { cat report-dp.txt; die "--report --target cuda: no overlapped gradient buckets"; }
grep -q "^cuda-param-gathers: [2-9] (all-gathers overlap the first [1-9][0-9]* of [1-9][0-9]* " report-dp.txt \
  || { cat report-dp.txt; die "--report --target cuda: no overlapped parameter gathers"; }
echo "cuda_multirank: $(grep '^cuda-grad-buckets\|^cuda-param-gathers' report-dp.txt | tr '\n' ' ')"

NVCC=${CUDACXX:-/usr/local/cuda/bin/nvcc}
if [ -x "$NVCC" ]; then
  compile "${MODEL[@]}" --dp 2 --tp 2 --sp --target cuda -o dp2tp2sp-gpu \
    || die "nvcc: the partitioned bf16 binary does not build"
  echo "cuda_multirank: nvcc built and linked dp2tp2sp-gpu (NCCL)"
  if nvidia-smi -L > /dev/null 2>&1 && [ "$(nvidia-smi -L | wc -l)" -ge 4 ]; then
    launch 4 ./dp2tp2sp-gpu "${TRAIN[@]}" --run-dir gpu-run > gpu.out 2>&1 || { cat gpu.out; die "dp2tp2sp on 4 GPUs failed"; }
    compare --metrics-only gpu-run oneb-run 2e-3 l2 || die "dp2tp2sp on 4 GPUs differs from the emulated bf16 run"
  else
    echo "cuda_multirank: fewer than 4 GPUs: the NCCL run is skipped"
  fi
else
  echo "cuda_multirank: nvcc not found, the GPU build is skipped"
fi
echo "cuda_multirank: PASS"
