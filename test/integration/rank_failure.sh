# A rank dies mid-run (issue 7, rank failures): `micro` partitioned dp=2 x
# tp=2 on 4 local ranks under llama-run, checkpointing every 4 updates; the
# last rank is SIGKILLed after its gradients of update 10 (--inject kill@10).
#   - the job ends (mpirun takes the others down) instead of hanging,
#   - llama-run --max-restarts 1 restarts it with --resume from the
#     checkpoint of update 8,
#   - the restarted run's losses for updates 9..16 equal a clean run's bit for
#     bit (same data order, same arithmetic), and so do the final weights.
source "$(dirname "$0")/common.sh" "$@"
RUN="$BIN/llama-run"
write_shards data 64 40000 2000 5
compile --preset micro --batch 4 --seq-len 16 --dp 2 --tp 2 -o m4

start=$(date +%s)
"$RUN" -n 4 --timeout 60 -- ./m4 train --data data --steps 16 --lr 3e-3 --warmup 2 --seed 9 \
  --checkpoint-every 4 --keep-last 0 --run-dir clean --quiet > clean.out 2>&1 \
  || { cat clean.out; die "the clean 4-rank run failed"; }
"$RUN" -n 4 --timeout 60 --max-restarts 1 -- ./m4 train --data data --steps 16 --lr 3e-3 \
  --warmup 2 --seed 9 --checkpoint-every 4 --keep-last 0 --run-dir faulty --quiet \
  --inject kill@10 > faulty.out 2>&1 || { cat faulty.out; die "the restarted run failed"; }
took=$(($(date +%s) - start))
grep -q "rank 3 dies now" faulty.out || die "the kill was not injected: $(cat faulty.out)"
grep -q "restart 1 of 1 from the latest checkpoint" faulty.out || die "no restart: $(cat faulty.out)"
echo "clean run + killed-and-restarted run: ${took} s"

"$PY" - <<'PYEOF' || die "the restarted run differs from the clean run"
import json, struct
def losses(path):
    out = {}
    for line in open(path):
        r = json.loads(line)
        if "loss" in r and "step" in r:
            out[r["step"]] = r["loss"]   # a replayed step keeps its last value
    return out
clean, faulty = losses("clean/metrics.jsonl"), losses("faulty/metrics.jsonl")
assert sorted(clean) == list(range(1, 17)), sorted(clean)
bad = [s for s in range(9, 17) if faulty.get(s) != clean[s]]
if bad:
    raise SystemExit("steps %s: %s vs %s" % (bad, [faulty.get(s) for s in bad], [clean[s] for s in bad]))
def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    return {k: b[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]]
            for k, v in head.items() if k != "__metadata__"}
import glob, os
def final(run):
    d = sorted(glob.glob(run + "/checkpoints/step_*"), key=lambda p: int(p.rsplit("_", 1)[1]))[-1]
    return tensors(os.path.join(d, "model.safetensors"))
a, b = final("clean"), final("faulty")
assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), "final weights differ"
print("updates 9..16 and the final weights identical to the clean run")
PYEOF
