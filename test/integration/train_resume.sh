# Exact resume: training 2K updates straight and training K updates, stopping,
# then resuming for the other K in a fresh process must give bit-identical
# metrics (step, loss, lr, grad_norm, val_loss) and bit-identical final model
# and optimizer checkpoints. Anything the checkpoint forgets (data position,
# RNG, AdamW moments, step counter, schedule) shows up as a difference.
source "$(dirname "$0")/common.sh" "$@"

compile --preset micro --batch 2 --seq-len 16 --dtype f32 -o micro
write_shards data 64 20000 2000 7
# ~24 training windows of 17 tokens: at batch 2 an epoch ends every ~12
# updates, so the split point and the resumed half cross epoch boundaries
# (the reshuffle must come from the checkpointed epoch, not the process).
write_shards small 64 400 200 8

# metrics_rows FILE: one line per metrics record with the fields that must be
# reproducible (tokens_per_s and elapsed_s are wall-clock, so left out).
# repr() of a double is its shortest exact round-trip form, so equal text means
# equal bits.
metrics_rows() {
  "$PY" - "$1" <<'PYEOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "val_loss" in r:
        print("val  step=%d val_loss=%r" % (r["step"], r["val_loss"]))
    else:
        print("train step=%d loss=%r lr=%r grad_norm=%r" % (r["step"], r["loss"], r["lr"], r["grad_norm"]))
PYEOF
}

# check_resume NAME K DATA TRAIN_ARGS...: run A straight for 2K updates, run B in
# two processes split at K, and compare.
check_resume() {
  local name=$1 k=$2 data=$3; shift 3
  local steps=$((2 * k)) a=$name-a b=$name-b
  ./micro train --data $data --steps $steps --checkpoint-every $k --quiet --run-dir $a "$@" > $a.out 2>&1 \
    || { cat $a.out; die "$name: straight run failed"; }
  ./micro train --data $data --steps $steps --checkpoint-every $k --quiet --run-dir $b --stop-at $k "$@" > $b.1.out 2>&1 \
    || { cat $b.1.out; die "$name: run stopped at $k failed"; }
  [ "$(cat $b/checkpoints/LATEST)" = "$(printf 'step_%06d' $k)" ] \
    || die "$name: after --stop-at $k LATEST is '$(cat $b/checkpoints/LATEST)'"
  local first_half
  first_half=$(metrics_rows $b/metrics.jsonl | grep -c '^train') || true
  [ "$first_half" -eq "$k" ] || die "$name: --stop-at $k logged $first_half updates"
  ./micro train --data $data --steps $steps --checkpoint-every $k --quiet --run-dir $b --resume "$@" > $b.2.out 2>&1 \
    || { cat $b.2.out; die "$name: resumed run failed"; }
  # Run B logs an end-of-run val loss at K even when K is not an eval step;
  # drop val rows that run A has no counterpart for only if they are at K.
  metrics_rows $a/metrics.jsonl > $a.rows
  metrics_rows $b/metrics.jsonl > $b.rows.all
  # When K is a scheduled eval step, B must log it exactly once, like A.
  if grep -q "^val  step=$k " $a.rows; then
    cp $b.rows.all $b.rows
  else
    grep -v "^val  step=$k " $b.rows.all > $b.rows
  fi
  # B's train rows equal to A's also proves the resumed process started at
  # K + 1: one that retrained from scratch would log steps 1..K twice.
  diff $a.rows $b.rows > $name.diff || { cat $name.diff; die "$name: metrics differ between straight and resumed runs"; }
  [ "$(grep -c '^train' $a.rows)" -eq "$steps" ] || die "$name: run A logged $(grep -c '^train' $a.rows) updates, want $steps"

  local ck
  ck=$(printf 'step_%06d' $steps)
  for f in model.safetensors optimizer.safetensors; do
    cmp $a/checkpoints/$ck/$f $b/checkpoints/$ck/$f || die "$name: $ck/$f differs between straight and resumed runs"
  done
  # The sidecar too (step, data position, RNG, tokens seen), less wall-clock.
  "$PY" - $a/checkpoints/$ck/state.json $b/checkpoints/$ck/state.json <<'PYEOF' || die "$name: $ck/state.json differs"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for s in (a, b):
    s.pop("elapsed_s", None)
if a != b:
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            print("  %s: straight %s, resumed %s" % (key, a.get(key), b.get(key)))
    sys.exit(1)
PYEOF
  echo "$name: $steps updates straight == $k + $k resumed (metrics, model, optimizer, state identical)"
  grep "step=$k \|step=$steps " $a.rows | sed "s/^/  $name: /"
  "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1]))["data"]; print("  %s: data position at step %s: epoch %d, index %d" % (sys.argv[2], sys.argv[3], d["epoch"], d["index"]))' \
    "$b/checkpoints/$(printf 'step_%06d' $k)/state.json" $name $k
}

check_resume plain 12 data --lr 3e-3 --warmup 4
check_resume accum-eval 10 data --lr 3e-3 --warmup 4 --grad-accum 2 --eval-every 5 --eval-batches 4
check_resume epochs 17 small --lr 3e-3 --warmup 4 --eval-every 5 --eval-batches 2
