# Seeing a run: metrics.png at the end of `train`, TensorBoard event files
# with --tensorboard, and `llama-run plot` / `<binary> plot` on demand. The
# PNG is decoded by an independent Python decoder (chunk CRCs, zlib) and the
# event file by an independent TFRecord + protobuf reader (CRC32C in Python);
# the events must give back exactly the values and steps of metrics.jsonl.
source "$(dirname "$0")/common.sh" "$@"

compile --preset micro --batch 2 --seq-len 16 --dtype f32 -o micro
write_shards data 64 20000 2000 7

# png_check FILE: prints "W H" and, per panel, the train-loss (blue) and
# grad-norm (purple) columns; exits non-zero on any PNG defect.
cat > png.py <<'PYEOF'
import struct, sys, zlib
def decode(path):
    b = open(path, "rb").read()
    assert b[:8] == b"\x89PNG\r\n\x1a\n", "bad signature"
    i, chunks = 8, []
    while i < len(b):
        (n,) = struct.unpack(">I", b[i:i+4]); t = b[i+4:i+8]; data = b[i+8:i+8+n]
        (crc,) = struct.unpack(">I", b[i+8+n:i+12+n])
        assert crc == zlib.crc32(t + data), "CRC of chunk %r" % t
        chunks.append((t, data)); i += 12 + n
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    w, h, depth, ctype, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, ctype) == (8, 3), "want 8-bit palette"
    plte = b"".join(d for t, d in chunks if t == b"PLTE")
    pal = [tuple(plte[k:k+3]) for k in range(0, len(plte), 3)]
    raw = zlib.decompress(b"".join(d for t, d in chunks if t == b"IDAT"))
    assert len(raw) == h * (w + 1)
    rows = []
    for y in range(h):
        assert raw[y * (w + 1)] == 0, "filter type"
        rows.append([pal[p] for p in raw[y * (w + 1) + 1:(y + 1) * (w + 1)]])
    return w, h, rows
BLUE, PURPLE, BLACK = (31, 119, 180), (148, 103, 189), (0, 0, 0)
def panels(w, h, rows):
    # The frames: runs of black down the first column that has long ones.
    for x in range(w):
        out, run = [], 0
        for y in range(h + 1):
            if y < h and rows[y][x] == BLACK:
                run += 1; continue
            if run > 100:
                bottom = y - 1
                while rows[bottom][x + 1] != BLACK or rows[bottom][x + 2] != BLACK:
                    bottom -= 1
                x1 = x
                while x1 + 1 < w and rows[bottom][x1 + 1] == BLACK:
                    x1 += 1
                out.append((x, x1, y - run, bottom))
            run = 0
        if out:
            return out
    return []
def tops(rows, panel, colour):
    # The topmost pixel of `colour` per column inside the frame (None: none).
    x0, x1, y0, y1 = panel
    res = []
    for x in range(x0 + 1, x1):
        ys = [y for y in range(y0 + 1, y1) if rows[y][x] == colour]
        res.append(min(ys) if ys else None)
    return res
PYEOF

# --- a real run: 40 updates, eval every 10, TensorBoard on ---
./micro train --data data --steps 40 --eval-every 10 --lr 3e-3 --tensorboard --quiet --run-dir run > train.out 2>&1 \
  || { cat train.out; die "train --tensorboard failed"; }
[ -s run/metrics.png ] || die "train did not write run/metrics.png"
ls run/tensorboard/events.out.tfevents.* > /dev/null 2>&1 || die "no event file in run/tensorboard"
ls run | grep -q '\.tmp\.' && die "a temp file was left in run/: $(ls run)"

"$PY" - run <<'PYEOF' || die "metrics.png of the run is wrong"
import sys; sys.path.insert(0, ".")
from png import *
w, h, rows = decode(sys.argv[1] + "/metrics.png")
assert (w, h) == (1000, 960), (w, h)
p = panels(w, h, rows)
assert len(p) == 3, p
blue = [t for t in tops(rows, p[0], BLUE) if t is not None]
assert len(blue) > 0.9 * (p[0][1] - p[0][0]), "train loss covers %d columns" % len(blue)
# Training at lr 3e-3 on a learnable sequence: the right end lower than the left.
assert blue[-1] > blue[0] + 20, (blue[0], blue[-1])
assert any(t is not None for t in tops(rows, p[2], PURPLE)), "no grad norm drawn"
PYEOF

# The event file against metrics.jsonl: same steps, the float32 of each value.
"$PY" - run <<'PYEOF' || die "event file does not match metrics.jsonl"
import glob, json, struct, sys
def crc32c(b):
    c = 0xffffffff
    for x in b:
        c ^= x
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xffffffff
assert crc32c(b"123456789") == 0xE3069283
def masked(b):
    c = crc32c(b)
    return (((c >> 15) | (c << 17)) + 0xa282ead8) & 0xffffffff
def varint(b, i):
    v = s = 0
    while True:
        x = b[i]; i += 1; v |= (x & 0x7f) << s; s += 7
        if x < 0x80: return v, i
def fields(b):
    i = 0
    while i < len(b):
        key, i = varint(b, i); f, w = key >> 3, key & 7
        if w == 0: v, i = varint(b, i)
        elif w == 1: v = b[i:i+8]; i += 8
        elif w == 5: v = b[i:i+4]; i += 4
        elif w == 2: n, i = varint(b, i); v = b[i:i+n]; i += n
        else: raise AssertionError("wire type %d" % w)
        yield f, v
run = sys.argv[1]
(path,) = glob.glob(run + "/tensorboard/events.out.tfevents.*")
b = open(path, "rb").read(); i = 0; events = []
while i < len(b):
    (n,) = struct.unpack("<Q", b[i:i+8])
    assert struct.unpack("<I", b[i+8:i+12])[0] == masked(b[i:i+8]), "length CRC at %d" % i
    data = b[i+12:i+12+n]
    assert len(data) == n, "truncated record"
    assert struct.unpack("<I", b[i+12+n:i+16+n])[0] == masked(data), "data CRC at %d" % i
    i += 16 + n
    events.append(dict((f, v) for f, v in fields(data)))
assert events[0].get(3) == b"brain.Event:2", events[0]
got = []
for e in events[1:]:
    (wall,) = struct.unpack("<d", e[1]); assert wall > 1.6e9
    for _, val in fields(e[5]):
        d = dict(fields(val))
        got.append((d[1].decode(), e.get(2, 0), d[2]))
f32 = lambda v: struct.pack("<f", v)
want = []
for line in open(run + "/metrics.jsonl"):
    r = json.loads(line)
    if "val_loss" in r:
        want.append(("val/loss", r["step"], f32(r["val_loss"])))
    elif "loss" in r and "skipped" not in r:
        for tag, key in (("train/loss", "loss"), ("train/lr", "lr"), ("train/grad_norm", "grad_norm"),
                         ("train/tokens_per_s", "tokens_per_s")):
            want.append((tag, r["step"], f32(r[key])))
assert got == want, "\n".join("%r != %r" % (g, w_) for g, w_ in zip(got, want) if g != w_) or "lengths %d %d" % (len(got), len(want))
assert sum(1 for t, _, _ in got if t == "val/loss") == 4, "want evals at 10, 20, 30, 40"
assert sum(1 for t, _, _ in got if t == "train/loss") == 40
PYEOF

# --- on demand, from llama-run and from the binary ---
"$BIN/llama-run" plot run -o again.png > plot.out || die "llama-run plot failed"
grep -q "wrote again.png (40 updates, 4 evals, 0 skipped" plot.out || die "llama-run plot said: $(cat plot.out)"
cmp run/metrics.png again.png || die "llama-run plot drew a different picture than train"
./micro plot run/metrics.jsonl -o bin.png > /dev/null || die "micro plot failed"
cmp run/metrics.png bin.png || die "micro plot drew a different picture"

# --- a synthetic run of known shape: 3000 updates, loss falling, one grad-norm
# spike at step 2000, a skipped update, a null loss ---
"$PY" - <<'PYEOF'
import json, math, os
os.makedirs("syn", exist_ok=True)
with open("syn/metrics.jsonl", "w") as f:
    for s in range(1, 3001):
        loss = None if s == 700 else 5 * math.exp(-s / 600) + 1
        gn = 50.0 if s == 2000 else 0.5 + 0.05 * math.sin(s / 40)
        f.write(json.dumps({"step": s, "loss": loss, "lr": 1e-3, "grad_norm": gn,
                            "tokens_per_s": 1, "elapsed_s": s}) + "\n")
    f.write(json.dumps({"step": 1500, "skipped": "spike", "loss": 9.0, "grad_norm": 1.0, "lr": 1e-3}) + "\n")
    f.write('{"step": 3001, "loss": 1.0, "lr"')  # a line being written
PYEOF
"$BIN/llama-run" plot syn > syn.out || die "llama-run plot syn failed"
grep -q "(3000 updates, 0 evals, 1 skipped, 1 non-finite" syn.out || die "syn: $(cat syn.out)"
"$PY" - <<'PYEOF' || die "synthetic plot has the wrong shape"
import sys; sys.path.insert(0, ".")
from png import *
w, h, rows = decode("syn/metrics.png")
p = panels(w, h, rows)
assert len(p) == 3, p
loss = tops(rows, p[0], BLUE)
drawn = [(x, t) for x, t in enumerate(loss) if t is not None]
# A falling loss is drawn lower (larger y) from left to right, never higher.
for (xa, a), (xb, b) in zip(drawn, drawn[1:]):
    assert b >= a, "loss line goes up at column %d: %d -> %d" % (xb, a, b)
assert drawn[-1][1] - drawn[0][1] > 150, "loss line spans %d px" % (drawn[-1][1] - drawn[0][1])
# The spike at step 2000 of 1..3000: a column near 2/3 of the way reaches the top.
x0, x1, y0, y1 = p[2]
gn = tops(rows, p[2], PURPLE)
spike_col = round(1999 / 2999 * (x1 - x0)) - 1
near = [t for t in gn[spike_col - 2:spike_col + 3] if t is not None]
assert near and min(near) < y0 + 0.1 * (y1 - y0), ("spike", near, y0, y1)
others = [t for k, t in enumerate(gn) if t is not None and abs(k - spike_col) > 5]
assert min(others) > y0 + 0.5 * (y1 - y0), "grad norm away from the spike reaches %d" % min(others)
# The skipped update at step 1500: a red tick at the foot of the loss panel.
skip_x = p[0][0] + round(1499 / 2999 * (p[0][1] - p[0][0]))
assert rows[p[0][3] - 3][skip_x] == (214, 39, 40), rows[p[0][3] - 3][skip_x - 2:skip_x + 3]
PYEOF

# --- errors: one line naming the file (and the line) ---
mkdir -p empty bad
: > empty/metrics.jsonl
set +e
"$BIN/llama-run" plot empty 2> err.txt; rc=$?
set -e
[ $rc = 1 ] || die "plot of an empty file exited $rc, want 1"
grep -q "^llama-run plot: error: empty/metrics.jsonl: no update, eval or skip record" err.txt || die "empty: $(cat err.txt)"
printf '{"step":1,"val_loss":2}\n{"step":2,oops}\n{"step":3,"val_loss":1}\n' > bad/metrics.jsonl
set +e
"$BIN/llama-run" plot bad 2> err.txt; rc=$?
set -e
[ $rc = 1 ] && [ "$(wc -l < err.txt)" = 1 ] || die "malformed: rc $rc, $(cat err.txt)"
grep -q "bad/metrics.jsonl:2: not a JSON record" err.txt || die "malformed: $(cat err.txt)"
set +e
"$BIN/llama-run" plot 2> err.txt; rc=$?
set -e
[ $rc = 2 ] || die "plot without RUN_DIR exited $rc, want 2"

# --- resume: a second event file, the plot redrawn over the whole run ---
./micro train --data data --steps 40 --eval-every 10 --tensorboard --quiet --run-dir res --stop-at 20 > r1.out 2>&1 \
  || { cat r1.out; die "first half failed"; }
sleep 1.1  # a new file name even when the clock second would match
./micro train --data data --steps 40 --eval-every 10 --tensorboard --quiet --run-dir res --resume > r2.out 2>&1 \
  || { cat r2.out; die "resume failed"; }
[ "$(ls res/tensorboard | wc -l)" = 2 ] || die "want 2 event files after a resume, got: $(ls res/tensorboard)"
"$BIN/llama-run" plot res -o res.png | grep -q "(40 updates" || die "resumed run not plotted whole"
cmp res/metrics.png res.png || die "the resumed run's metrics.png is not of the whole run"
echo "plot_tensorboard: OK"
