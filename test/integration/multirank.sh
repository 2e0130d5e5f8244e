# Partitioned training (llama-compile --dp/--tp/--sp) against the single-rank
# run of the same model: the micro preset at a global batch of 4, compiled
# 1 x 1, tp=2, tp=2 with sequence parallelism, dp=2 and dp=2 x tp=2, trains
# 20 updates on the same data. A grid reads the single-rank run's batches
# (each dp rank its part), starts from the slices of the single-rank init and
# reduces what the single rank computes whole, so every loss, val loss and
# gradient norm in metrics.jsonl, and every tensor of the final model and
# AdamW checkpoints, must equal the single-rank run's up to the order of
# float sums:
#   f64: every element of every tensor within 1e-10 of the tensor's largest
#        magnitude (measured: 1e-14), losses within 1e-10 relative. This is
#        the proof that the grid computes the same function.
#   f32: losses within 1e-5 relative (measured: 1e-7), and each tensor within
#        1e-5 in relative L2 norm (measured: 4e-6 for weights, 6e-6 for
#        exp_avg_sq). Not element by element: a gradient element that is
#        nearly zero by cancellation (about -9e-9 for one gate_proj element of
#        micro at step 1) keeps only a couple of correct digits in f32 in any
#        summation order, and AdamW's first step, lr g / (|g| + eps) with eps
#        1e-8, turns that into a 1e-6 difference of the weight: 3e-5 of the
#        tensor's largest magnitude, for any grid, dp=2 alone included.
# Checkpoints are grid-independent: 10 updates at dp=2 x tp=2 resumed on one
# rank to 20, and 10 on one rank resumed at dp=2 x tp=2, both equal the
# straight single-rank run. Finally the one-line refusals: a 4-rank binary
# started as one process, and a single-rank subcommand (generate) on a
# partitioned binary.
source "$(dirname "$0")/common.sh" "$@"

# One OpenMP thread per rank: up to 4 ranks share this machine's cores.
export OMP_NUM_THREADS=1 LLAMA_COMM_TIMEOUT_S=300
MODEL=(--preset micro --batch 4 --seq-len 16)
compile "${MODEL[@]}" --dtype f32 -o one
compile "${MODEL[@]}" --dtype f32 --tp 2 -o tp2
compile "${MODEL[@]}" --dtype f32 --tp 2 --sp -o tp2sp
compile "${MODEL[@]}" --dtype f32 --dp 2 -o dp2
compile "${MODEL[@]}" --dtype f32 --dp 2 --tp 2 -o dp2tp2
compile "${MODEL[@]}" --dtype f64 -o one64
compile "${MODEL[@]}" --dtype f64 --dp 2 --tp 2 -o dp2tp2_64
write_shards data 64 20000 2000 7

TRAIN=(train --data data --steps 20 --lr 3e-3 --warmup 4 --eval-every 10 --eval-batches 2
       --checkpoint-every 10 --quiet)

# compare RUN REFERENCE TOLERANCE max|l2 [STOPPED_AT]: metrics and final
# checkpoint of RUN against REFERENCE, tensors by their largest element
# difference or their relative L2 distance (see above). A run stopped at K and
# resumed logs a val loss at K that the straight run has not; STOPPED_AT
# drops it.
compare() {
  "$PY" "$SRC/test/integration/compare_runs.py" --final-step 20 "$@"
}

./one "${TRAIN[@]}" --run-dir one-run > one.out 2>&1 || { cat one.out; die "single-rank run failed"; }
for grid in "tp2 2" "tp2sp 2" "dp2 2" "dp2tp2 4"; do
  set -- $grid
  launch $2 ./$1 "${TRAIN[@]}" --run-dir $1-run > $1.out 2>&1 || { cat $1.out; die "$1 on $2 ranks failed"; }
  # Rank 0 alone prints the final losses.
  [ "$(grep -c '^final train loss' $1.out)" -eq 1 ] || { cat $1.out; die "$1: not exactly one 'final train loss' line"; }
  compare $1-run one-run 1e-5 l2 || die "$1 differs from the single-rank run"
done

./one64 "${TRAIN[@]}" --run-dir one64-run > one64.out 2>&1 || { cat one64.out; die "f64 single-rank run failed"; }
launch 4 ./dp2tp2_64 "${TRAIN[@]}" --run-dir dp2tp2_64-run > dp2tp2_64.out 2>&1 \
  || { cat dp2tp2_64.out; die "f64 dp2tp2 failed"; }
compare dp2tp2_64-run one64-run 1e-10 max || die "f64 dp2tp2 differs from the single-rank run"

# Re-sharding: 4 ranks -> 1 and 1 -> 4 through the same checkpoint format.
launch 4 ./dp2tp2 "${TRAIN[@]}" --run-dir down-run --stop-at 10 > down1.out 2>&1 || { cat down1.out; die "dp2tp2 --stop-at 10 failed"; }
./one "${TRAIN[@]}" --run-dir down-run --resume > down2.out 2>&1 || { cat down2.out; die "single-rank resume of a dp2tp2 checkpoint failed"; }
compare down-run one-run 1e-5 l2 10 || die "dp2tp2 10 + single-rank 10 differs from 20 single-rank updates"
./one "${TRAIN[@]}" --run-dir up-run --stop-at 10 > up1.out 2>&1 || { cat up1.out; die "single-rank --stop-at 10 failed"; }
launch 4 ./dp2tp2 "${TRAIN[@]}" --run-dir up-run --resume > up2.out 2>&1 || { cat up2.out; die "dp2tp2 resume of a single-rank checkpoint failed"; }
compare up-run one-run 1e-5 l2 10 || die "single-rank 10 + dp2tp2 10 differs from 20 single-rank updates"

# A 4-rank binary as one process: one line that says how to start it.
set +e
./dp2tp2 "${TRAIN[@]}" --run-dir bad-run > bad.out 2> bad.err
code=$?
set -e
[ $code -eq 1 ] || { cat bad.out bad.err; die "dp2tp2 on one process exited $code, want 1"; }
[ "$(wc -l < bad.err)" -eq 1 ] && grep -q "partitioned for dp=2 x tp=2 = 4 ranks but runs on 1; start it with llama-run -n 4" bad.err \
  || { cat bad.err; die "dp2tp2 on one process: want one line naming llama-run -n 4"; }
echo "multirank: one process: $(cat bad.err)"

# generate on a partitioned binary points at the single-rank one.
set +e
./dp2tp2 generate --checkpoint one-run --tokenizer none --prompt hi > gen.out 2> gen.err
code=$?
set -e
[ $code -eq 2 ] && [ "$(wc -l < gen.err)" -eq 1 ] && grep -q "is partitioned for dp=2 x tp=2; run generate with a single-rank binary" gen.err \
  || { cat gen.err; die "generate on dp2tp2: exit $code, want 2 and one line pointing at the single-rank binary"; }
# info works anywhere and shows the grid.
./dp2tp2 info --json > info.json
"$PY" -c 'import json,sys; j=json.load(open("info.json")); sys.exit(0 if (j["grid_dp"], j["grid_tp"], j["global_batch"], j["batch"]) == (2, 2, 4, 2) else 1)' \
  || { cat info.json; die "dp2tp2 info: wrong grid"; }
echo "multirank: PASS"
