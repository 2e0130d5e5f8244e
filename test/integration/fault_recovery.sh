# Non-finite gradients and loss spikes do not stop training; they are skipped,
# and a burst of them rolls the run back to a checkpoint while the data stream
# moves on past the offending batches (docs/reliability.md).
#
# A clean run and a faulty run of the same 300 updates; the faulty one gets,
# through --inject (numbers are update attempts):
#   nan@50            an isolated NaN gradient element
#   spike@120         an isolated loss/gradient spike (x1e4)
#   nan@140 spike@142 two skips close together: a burst, but shorter than R = 3
#   spike@200,201,202 three in a row: a burst of R, rollback
#   spike@260,262,264 three with one good update between each: a burst of R
#                     ("nearby" skips), rollback
# Checked: exactly those attempts are skipped, for the right reason, with their
# data positions; the skipped updates change nothing (AdamW's update count is
# 300 minus the 4 skips that stayed in the run's history); each rollback goes
# to the newest checkpoint before its burst and the data stream continues past
# the burst; the run finishes and its final val loss is within 3% of the clean
# run's. 3% is the seed-to-seed spread of this setup (clean runs with seeds
# 1-5 end between 1.446 and 1.486): the faults may cost no more than changing
# the random seed does. Measured: about 1% (the faulty run applies 296 of
# 300 updates and, after the rollbacks, sees different batches).
# Finally exact resume still holds with the detector in play: the faulty run
# stopped in the middle of the second burst and resumed gives the same bits.
source "$(dirname "$0")/common.sh" "$@"

compile --preset micro --batch 4 --seq-len 32 -o micro
write_shards data 64 20000 2000 7
FAULTS=nan@50,spike@120,nan@140,spike@142,spike@200,spike@201,spike@202,spike@260,spike@262,spike@264
TRAIN=(train --data data --steps 300 --lr 3e-3 --checkpoint-every 20 --quiet)

./micro "${TRAIN[@]}" --run-dir clean > clean.out 2> clean.err || { cat clean.err; die "clean run failed"; }
./micro "${TRAIN[@]}" --run-dir faulty --inject $FAULTS > faulty.out 2> faulty.err \
  || { cat faulty.err; die "faulty run failed (a fault stopped training)"; }
./micro "${TRAIN[@]}" --run-dir split --inject $FAULTS --stop-at 240 > split1.out 2> split1.err \
  || { cat split1.err; die "faulty run with --stop-at 240 failed"; }
./micro "${TRAIN[@]}" --run-dir split --inject $FAULTS --resume > split2.out 2> split2.err \
  || { cat split2.err; die "resumed faulty run failed"; }

"$PY" - "$FAULTS" <<'PYEOF' || die "fault_recovery: see above"
import json, re, sys

def fail(msg):
    print("FAIL: fault_recovery: " + msg)
    sys.exit(1)

def rows(run):
    return [json.loads(l) for l in open(run + "/metrics.jsonl")]

faults = {int(f.split("@")[1]): f.split("@")[0] for f in sys.argv[1].split(",")}
clean, faulty = rows("clean"), rows("faulty")

if any("skipped" in r or "rollback_to" in r for r in clean):
    fail("the clean run skipped updates or rolled back: the detector fires on clean training")
if [r["step"] for r in clean if "grad_norm" in r] != list(range(1, 301)):
    fail("the clean run did not log updates 1..300")

skips = [r for r in faulty if "skipped" in r]
rollbacks = [r for r in faulty if "rollback_to" in r]
if sorted(r["attempt"] for r in skips) != sorted(faults):
    fail("skipped attempts %s, injected %s" % ([r["attempt"] for r in skips], sorted(faults)))
for r in skips:
    want = "nonfinite" if faults[r["attempt"]] == "nan" else "spike"
    if r["skipped"] != want:
        fail("attempt %d (%s) skipped as %s" % (r["attempt"], faults[r["attempt"]], r["skipped"]))
    if want == "spike" and not (r["loss_z"] > 6 or r["grad_norm_z"] > 6):
        fail("attempt %d: a spike with z-scores %s / %s" % (r["attempt"], r["loss_z"], r["grad_norm_z"]))
# The skipped batches are consumed: three skips in a row read consecutive batches.
burst = [r for r in skips if r["attempt"] in (200, 201, 202)]
if [r["data_index"] - burst[0]["data_index"] for r in burst] != [0, 4, 8]:
    fail("consecutive skipped updates did not consume consecutive batches: %s" % burst)

if [(r["step"], r["rollback_to"]) for r in rollbacks] != [(202, 180), (242, 220)]:
    fail("rollbacks %s, want step 202 -> 180 and step 242 -> 220"
         % [(r["step"], r["rollback_to"]) for r in rollbacks])
for rb in rollbacks:
    last = max((r for r in skips if r["step"] == rb["step"]), key=lambda r: r["attempt"])
    if (rb["data_epoch"], rb["data_index"]) != (last["data_epoch"], last["data_index"] + 4):
        fail("rollback at step %d continues the data at %s, not after the last skipped batch %s"
             % (rb["step"], (rb["data_epoch"], rb["data_index"]), (last["data_epoch"], last["data_index"])))
    after = faulty[faulty.index(rb) + 1]
    if after.get("step") != rb["rollback_to"] + 1:
        fail("after the rollback to %d the next record is %s" % (rb["rollback_to"], after))

state = json.load(open("faulty/checkpoints/step_000300/state.json"))
rel = state["reliability"]
if (rel["skipped_nonfinite"], rel["skipped_spike"], rel["rollbacks"]) != (2, 8, 2):
    fail("state.json counts %s" % rel)
# Skips at 50, 120, 140, 142 stay in the run's history; the bursts were rolled back.
if state["optimizer"]["updates"] != 296:
    fail("AdamW applied %d updates, want 300 - 4 skipped = 296" % state["optimizer"]["updates"])

def val(out):
    return float(re.search(r"final val loss: (\S+)", open(out).read()).group(1))
vc, vf = val("clean.out"), val("faulty.out")
if abs(vf - vc) > 0.03 * vc:
    fail("final val loss %.4f, clean run %.4f: more than 3%% apart" % (vf, vc))
print("fault_recovery: %d faults injected (%d nan, %d spikes), %d skipped, %d rollbacks; final val loss "
      "%.4f vs clean %.4f (%+.2f%%, tolerance 3%%)"
      % (len(faults), sum(k == "nan" for k in faults.values()), sum(k == "spike" for k in faults.values()),
         len(skips), len(rollbacks), vf, vc, 100 * (vf - vc) / vc))
for r in skips:
    print("  step %3d (attempt %3d): %-9s loss %-10s grad norm %-10s batch at epoch %d index %d"
          % (r["step"], r["attempt"], r["skipped"], r["loss"] and "%.4g" % r["loss"],
             r["grad_norm"] and "%.4g" % r["grad_norm"], r["data_epoch"], r["data_index"]))
    for rb in rollbacks:
        if rb["step"] == r["step"] and r is max((s for s in skips if s["step"] == rb["step"]), key=lambda s: s["attempt"]):
            print("  -> rollback to step %d (data stays at epoch %d index %d; the checkpoint had %d, %d)"
                  % (rb["rollback_to"], rb["data_epoch"], rb["data_index"],
                     rb["checkpoint_data_epoch"], rb["checkpoint_data_index"]))

# Exact resume with faults: stopped at 240 (two skips into the second burst)
# and resumed, the run ends with the straight run's bits and records.
def replayable(run):
    out = []
    for r in rows(run):
        if "val_loss" in r:
            continue
        # (the rollback record names the checkpoint under its own run dir)
        r = {k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s", "checkpoint")}
        out.append(json.dumps(r, sort_keys=True))
    return out
if replayable("faulty") != replayable("split"):
    a, b = replayable("faulty"), replayable("split")
    i = next(i for i in range(min(len(a), len(b))) if a[i] != b[i]) if a[:len(b)] != b[:len(a)] else min(len(a), len(b))
    fail("straight and split faulty runs differ at record %d:\n  %s\n  %s" % (i, a[i:i+1], b[i:i+1]))
for f in ("model.safetensors", "optimizer.safetensors"):
    if open("faulty/checkpoints/step_000300/" + f, "rb").read() != open("split/checkpoints/step_000300/" + f, "rb").read():
        fail("step_000300/%s differs between the straight and the split faulty run" % f)
sa, sb = (json.load(open(r + "/checkpoints/step_000300/state.json")) for r in ("faulty", "split"))
for s in (sa, sb):
    s.pop("elapsed_s")
if sa != sb:
    fail("step_000300/state.json differs between the straight and the split faulty run")
if open("faulty.out").read() != open("split2.out").read():
    fail("final losses differ between the straight and the split faulty run")
print("fault_recovery: faulty run stopped at step 240 inside a burst and resumed == straight (records, model, optimizer, state)")
PYEOF
grep -q "rolled back to faulty/checkpoints/step_000180" faulty.err || { cat faulty.err; die "no rollback warning on stderr"; }
