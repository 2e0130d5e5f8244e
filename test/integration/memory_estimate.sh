# Estimate = reality. For micro and tiny under every remat policy (and a
# budget plan): the training binary's measured arena high-water marks (the
# highest byte a step changes in an arena filled with marker bytes) are within
# 5% below the compiler's plan and nothing is written past an arena's end;
# the bytes it allocates equal `--report`'s total-train-bytes (plus the two
# token buffers); and for tiny, whose buffers dwarf the process's fixed
# overhead (libraries, thread stacks: ~13 MB), the measured peak RSS growth is
# within 5% of the compile-time total.
source "$(dirname "$0")/common.sh" "$@"
check() {  # NAME RSS(yes|no) COMPILE_ARGS...
  local name=$1 rss=$2; shift 2
  compile "$@" --report -o $name > $name.report
  ./$name memcheck > $name.mem
  "$PY" - $name $rss <<'PYEOF'
import sys
name, rss = sys.argv[1], sys.argv[2] == "yes"
def read(path):
    d = {}
    for line in open(path):
        k, _, v = line.partition(":")
        v = v.strip()
        if v.lstrip("-").isdigit():
            d[k.strip()] = int(v)
    return d
r, m = read(name + ".report"), read(name + ".mem")
ok = True
def expect(what, cond, detail):
    global ok
    ok &= cond
    print(f"{name:14} {what:34} {detail} {'ok' if cond else 'FAIL'}")
for arena, planned in (("train", r["arena-peak-bytes"]), ("eval", r["eval-arena-bytes"])):
    used = m[f"{arena}-arena-used-bytes"]
    expect(f"{arena} arena used / planned", planned * 0.95 <= used <= planned, f"{used} / {planned}")
tokens = m["allocated-bytes"] - r["total-train-bytes"]
expect("allocated - estimate (token buffers)", 0 <= tokens <= 1 << 20, f"{m['allocated-bytes']} - {r['total-train-bytes']}")
if rss:
    growth, total = m["rss-growth-bytes"], r["total-train-bytes"]
    expect("peak RSS growth / estimate", abs(growth - total) <= 0.05 * total, f"{growth} / {total} = {growth / total:.4f}")
sys.exit(0 if ok else 1)
PYEOF
}
for remat in none selective full; do
  check micro-$remat no --preset micro --batch 2 --seq-len 8 --remat $remat
  check tiny-$remat yes --preset tiny --batch 4 --seq-len 128 --remat $remat
done
budget=$("$BIN/llama-compile" --preset tiny --batch 4 --seq-len 128 --remat selective --report | sed -n 's/^arena-peak-bytes: //p')
check tiny-budget yes --preset tiny --batch 4 --seq-len 128 --remat budget=$((budget * 3 / 4))
