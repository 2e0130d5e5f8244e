# The metrics and final checkpoints of two training runs, compared: every
# loss, val loss and gradient norm in metrics.jsonl within a relative
# tolerance, and every tensor of the final model and AdamW checkpoints by
# its largest element difference (max) or its relative L2 distance (l2),
# both relative to the reference tensor. A run stopped at K and resumed logs
# a val loss at K that the straight run has not: `stopped_at` drops it.
# Used by multirank.sh and cuda_multirank.sh.
import json, math, struct, sys
import argparse
ap = argparse.ArgumentParser()
ap.add_argument("run")
ap.add_argument("ref")
ap.add_argument("tol", type=float)
ap.add_argument("kind", choices=["max", "l2"])
ap.add_argument("stopped_at", type=int, nargs="?", default=0)
ap.add_argument("--final-step", type=int, required=True)
ap.add_argument("--metrics-only", action="store_true")
ap.add_argument("--label", default="multirank")
args = ap.parse_args()
run, ref, tol, kind, stopped_at = args.run, args.ref, args.tol, args.kind, args.stopped_at

def fail(msg):
    print("FAIL: %s: %s vs %s: %s" % (args.label, run, ref, msg))
    sys.exit(1)

def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)

def metrics(d):
    rows = [json.loads(l) for l in open(d + "/metrics.jsonl")]
    return [r for r in rows if not ("val_loss" in r and r["step"] == stopped_at)]

a, b = metrics(run), metrics(ref)
if [sorted(r) for r in a] != [sorted(r) for r in b] or [r["step"] for r in a] != [r["step"] for r in b]:
    fail("different metrics records: %s vs %s" % ([r["step"] for r in a], [r["step"] for r in b]))
worst = {"loss": 0.0, "val_loss": 0.0, "grad_norm": 0.0}
for x, y in zip(a, b):
    if x.get("lr") != y.get("lr"):
        fail("step %d: lr %r vs %r" % (x["step"], x.get("lr"), y.get("lr")))
    for k in worst:
        if k in x:
            if x[k] is None or y[k] is None:  # non-finite (a skipped update): null in JSON
                if (x[k] is None) != (y[k] is None):
                    fail("step %d: %s %r vs %r" % (x["step"], k, x[k], y[k]))
                continue
            d = rel(x[k], y[k])
            worst[k] = max(worst[k], d)
            if d > tol:
                fail("step %d: %s %r vs %r (relative difference %.3g > %g)" % (x["step"], k, x[k], y[k], d, tol))

# safetensors by hand: u64 header size, JSON header, little-endian data.
def tensors(path):
    blob = open(path, "rb").read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        fmt = {"F32": "f", "F64": "d"}[t["dtype"]]
        lo, hi = t["data_offsets"]
        raw = blob[8 + n + lo:8 + n + hi]
        out[name] = (t["dtype"], t["shape"], struct.unpack("<%d%s" % (len(raw) // struct.calcsize(fmt), fmt), raw))
    return out

tensor_worst = {"max": 0.0, "l2": 0.0}
for f in () if args.metrics_only else ("model.safetensors", "optimizer.safetensors"):
    step = "/checkpoints/step_%06d/" % args.final_step
    ta = tensors(run + step + f)
    tb = tensors(ref + step + f)
    if sorted(ta) != sorted(tb):
        fail("%s: tensor names differ" % f)
    for name, (dt, shape, vb) in tb.items():
        da, sa, va = ta[name]
        if (da, sa) != (dt, shape):
            fail("%s: %s is %s %s, reference %s %s" % (f, name, da, sa, dt, shape))
        d = {"max": max(abs(p - q) for p, q in zip(va, vb)) / (max(abs(v) for v in vb) or 1.0),
             "l2": math.sqrt(sum((p - q) ** 2 for p, q in zip(va, vb))) /
                   (math.sqrt(sum(v * v for v in vb)) or 1.0)}
        for k in d:
            tensor_worst[k] = max(tensor_worst[k], d[k])
        if d[kind] > tol:
            fail("%s: %s differs by %.3g (%s, relative; tolerance %g)" % (f, name, d[kind], kind, tol))
print("%s: %-13s = %-9s max relative difference: loss %.2g, val loss %.2g, grad norm %.2g; "
      % (args.label, run, ref, worst["loss"], worst["val_loss"], worst["grad_norm"]) +
      ("metrics only (tolerance %g)" % tol if args.metrics_only else
       "checkpoint tensors: largest element %.2g, L2 %.2g (%s tolerance %g)"
       % (tensor_worst["max"], tensor_worst["l2"], kind, tol)))
