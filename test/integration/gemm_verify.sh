# ABFT GEMM verification (--verify-gemm-every, runtime/cpu/gemm_check.h)
# against silent data corruption injected with --inject bitflip@N (one high
# exponent bit of one GEMM output element, inside the step).
#
# Four runs of the same 30 updates of micro:
#   clean     no fault, checks on every update (they must never fire)
#   caught    bitflip@12 with --verify-gemm-every 1
#   caught10  bitflip@12 with --verify-gemm-every 10 (12 is not a multiple of
#             10: an injected update is checked whenever checks are on)
#   silent    bitflip@12 with checks off
#   unchecked no fault, checks off
# Checked: the clean run logs no skip; the caught runs log exactly one
# {"skipped": "gemm_checksum", "gemm_failures": 1, "recomputed": true} line at
# step 12, then apply the recomputed update, and end with the clean run's
# weights and optimizer state bit for bit (the retry redoes the same batch
# deterministically); a run without checks at all (--verify-gemm-every 0, no
# fault) has those same bits too, so checking changes nothing; the silent run
# ends with different weights, so the fault is real.
source "$(dirname "$0")/common.sh" "$@"

compile --preset micro --batch 4 --seq-len 32 -o micro
write_shards data 64 20000 2000 7
TRAIN=(train --data data --steps 30 --lr 3e-3 --quiet)

run() { # NAME FLAGS...
  local name=$1; shift
  ./micro "${TRAIN[@]}" --run-dir $name "$@" > $name.out 2> $name.err \
    || { cat $name.err; die "gemm_verify: run '$name' failed"; }
}
run unchecked
run clean --verify-gemm-every 1
run caught --verify-gemm-every 1 --inject bitflip@12
run caught10 --verify-gemm-every 10 --inject bitflip@12
run silent --inject bitflip@12

"$PY" - <<'PYEOF' || die "gemm_verify: see above"
import json, sys

def fail(msg):
    print("FAIL: gemm_verify: " + msg)
    sys.exit(1)

def rows(run):
    return [json.loads(l) for l in open(run + "/metrics.jsonl")]

for run in ("unchecked", "clean"):
    skips = [r for r in rows(run) if "skipped" in r]
    if skips:
        fail("run %s logged skips %s" % (run, skips))
# Unchecked, the flip is silent or, when it overflows into the loss or the
# gradients, caught late by the non-finite / spike detector: never by a checksum.
if any(r.get("skipped") == "gemm_checksum" for r in rows("silent")):
    fail("run silent (checks off) logged a gemm_checksum skip")
for run in ("caught", "caught10"):
    rs = rows(run)
    skips = [r for r in rs if "skipped" in r]
    if len(skips) != 1:
        fail("run %s: want one gemm_checksum line, got %s" % (run, skips))
    s = skips[0]
    if (s["step"], s["skipped"], s["gemm_failures"], s.get("recomputed"), s["attempt"]) != \
            (12, "gemm_checksum", 1, True, 12):
        fail("run %s: unexpected skip line %s" % (run, s))
    steps = [r["step"] for r in rs if "grad_norm" in r and "skipped" not in r]
    if steps != list(range(1, 31)):
        fail("run %s: applied updates %s, want 1..30" % (run, steps))
PYEOF

if grep -q "GEMMs failed their checksum" unchecked.err clean.err silent.err; then
  die "gemm_verify: a run without an injected and checked fault reported a checksum failure"
fi
for run in caught caught10 unchecked; do
  for f in model.safetensors optimizer.safetensors; do
    cmp clean/checkpoints/step_000030/$f $run/checkpoints/step_000030/$f \
      || die "gemm_verify: $run: step_000030/$f differs from the clean run"
  done
done
grep -q "GEMMs failed their checksum; recomputing" caught.err \
  || die "gemm_verify: the caught run did not warn about the checksum failure"
cmp -s clean/checkpoints/step_000030/model.safetensors silent/checkpoints/step_000030/model.safetensors \
  && die "gemm_verify: the unchecked bitflip left the weights unchanged (the fault is not real)"
echo "gemm_verify: bitflip caught and recomputed bit-exactly; without checks it changes the weights"
