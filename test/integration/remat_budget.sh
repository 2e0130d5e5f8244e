# llama-remat budget=BYTES: at the arena of each fixed policy it recomputes
# no more than that policy; budgets in between give plans in between (arena
# within budget, recompute non-increasing as the budget grows); a budget
# below anything reachable is an error naming the smallest arena; and a
# budget plan computes exactly the same gradients.
source "$(dirname "$0")/common.sh" "$@"
"$PY" - "$BIN/llama-compile" <<'PYEOF'
import subprocess, sys
compiler = sys.argv[1]
def report(args):
    out = subprocess.run([compiler] + args + ["--report"], check=True, capture_output=True, text=True).stdout
    return {k.strip(): v.strip() for k, v in (l.split(":", 1) for l in out.splitlines())}
failed = False
for name, extra in (("micro", ["--batch", "2", "--seq-len", "8"]), ("tiny", ["--batch", "4", "--seq-len", "256"]),
                    ("llama-7b", ["--batch", "1", "--seq-len", "2048"])):
    fixed = {p: report(["--preset", name, "--remat", p] + extra) for p in ("none", "selective", "full")}
    for p, r in fixed.items():
        b = report(["--preset", name, "--remat", "budget=" + r["arena-peak-bytes"]] + extra)
        ok = int(b["arena-peak-bytes"]) <= int(r["arena-peak-bytes"]) and \
             float(b["recompute-flops"]) <= float(r["recompute-flops"]) * (1 + 1e-9)
        failed |= not ok
        print(f"{name:9} budget = {p:9} arena {r['arena-peak-bytes']:>12}: plan arena {b['arena-peak-bytes']:>12}, "
              f"recompute {float(b['recompute-flops']):.4e} vs {float(r['recompute-flops']):.4e} ({b['remat-plan']}) "
              f"{'ok' if ok else 'WORSE'}")
    lo, hi = int(fixed["full"]["arena-peak-bytes"]), int(fixed["none"]["arena-peak-bytes"])
    previous = None
    for i in range(9):
        budget = lo + (hi - lo) * i // 8
        b = report(["--preset", name, "--remat", f"budget={budget}"] + extra)
        arena, rc = int(b["arena-peak-bytes"]), float(b["recompute-flops"])
        ok = arena <= budget and (previous is None or rc <= previous * (1 + 1e-9))
        failed |= not ok
        previous = rc
        print(f"{name:9} budget {budget:>12}: arena {arena:>12} recompute {rc:.4e} {'ok' if ok else 'FAIL'}")
    r = subprocess.run([compiler, "--preset", name, "--remat", f"budget={lo // 2}", "--report"] + extra,
                       capture_output=True, text=True)
    ok = r.returncode != 0 and "smallest arena reached is" in r.stderr
    failed |= not ok
    print(f"{name:9} budget {lo // 2}: {'rejected' if ok else 'NOT REJECTED'}: {r.stderr.strip().splitlines()[0] if r.stderr else ''}")
sys.exit(1 if failed else 0)
PYEOF

# Same gradients as `none` for a plan between full and selective.
REF="$PY $SRC/test/integration/llama_torch.py"
compile --preset micro --batch 2 --seq-len 8 --dtype f64 --remat none -o micro-none
lo=$("$BIN/llama-compile" --preset micro --batch 2 --seq-len 8 --dtype f64 --remat full --report | sed -n 's/^arena-peak-bytes: //p')
hi=$("$BIN/llama-compile" --preset micro --batch 2 --seq-len 8 --dtype f64 --remat selective --report | sed -n 's/^arena-peak-bytes: //p')
mid=$(( (lo + hi) / 2 ))
compile --preset micro --batch 2 --seq-len 8 --dtype f64 --remat budget=$mid -o micro-budget
./micro-none info --config-json > micro.json
$REF make-inputs --config micro.json --batch 2 --seq 8 --seed 3 --std 0.1 --weights w.safetensors --batch-file i.safetensors --dtype f64
./micro-none verify --weights w.safetensors --batch-file i.safetensors --out g-none.safetensors > /dev/null
./micro-budget verify --weights w.safetensors --batch-file i.safetensors --out g-budget.safetensors > /dev/null
cmp g-none.safetensors g-budget.safetensors || die "budget=$mid gradients differ from none"
./micro-budget gradcheck > gc.txt || { cat gc.txt; die "gradcheck failed for budget=$mid"; }
echo "budget=$mid (between full $lo and selective $hi): gradients identical to none; $(tail -1 gc.txt)"
