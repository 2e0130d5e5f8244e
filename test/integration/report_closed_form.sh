# `llama-compile --report` against closed-form counts of what each remat
# policy saves for the backward (fp32, 4 bytes; b batch, s seq, h hidden,
# H heads, K KV heads, d head dim, f FFN width, V vocab, L layers). Per layer:
#   none:      bs(6h + 2Kd + 3f) + bHs + 2bs  (x_norm1, q_rot, k_rot, v,
#              attn_out, h_mid, x_norm2, gate, up, swiglu_out, h_out +
#              logsumexp + the two norms' rstd that llama-fuse keeps)
#   selective: bs(4h + 2Kd + 2f) + bHs   (q, k, v, attn_out, h_mid, gate, up,
#              h_out + logsumexp; norms, RoPE, SwiGLU recomputed)
#   full:      bsh                       (the layer's output only)
# Whole model: L * per-layer + bsh (embedding output) + bsV (logits)
#              + bsh + bs under `none` (the final norm's output and rstd).
# With --no-fuse there is no rstd: the 2bs and bs terms go.
# (Korthikanti et al. count 34sbh bytes at 16 bit with selective for GPT;
# flash-style attention keeps no s x s matrix here, so no 5as/h term.)
source "$(dirname "$0")/common.sh" "$@"
"$PY" - "$BIN/llama-compile" <<'PYEOF'
import subprocess, sys
compiler = sys.argv[1]
def report(args):
    out = subprocess.run([compiler] + args + ["--report"], check=True, capture_output=True, text=True).stdout
    fields = {k.strip(): v.strip() for k, v in (l.split(":", 1) for l in out.splitlines())}
    return {k: int(v) for k, v in fields.items() if v.lstrip("-").isdigit()}
cases = [  # preset, b, s, h, H, K, d, f, V, L, params
    ("micro", 2, 8, 16, 4, 2, 4, 48, 64, 2, 8272),
    ("tiny", 4, 256, 384, 6, 6, 64, 1024, 8192, 5, 15143040),
    ("tinyllama-1.1b", 1, 512, 2048, 32, 4, 64, 5632, 32000, 22, 1100048384),
    ("llama-7b", 1, 2048, 4096, 32, 32, 128, 11008, 32000, 32, 6738415616),
]
failed = False
for name, b, s, h, H, K, d, f, V, L, params in cases:
    per_layer = {
        "none": 4 * (b * s * (6 * h + 2 * K * d + 3 * f) + b * H * s + 2 * b * s),
        "selective": 4 * (b * s * (4 * h + 2 * K * d + 2 * f) + b * H * s),
        "full": 4 * (b * s * h),
    }
    previous = None
    for policy in ("none", "selective", "full"):
        r = report(["--preset", name, "--batch", str(b), "--seq-len", str(s), "--remat", policy])
        total = L * per_layer[policy] + 4 * (b * s * h + b * s * V) + (4 * (b * s * h + b * s) if policy == "none" else 0)
        checks = [
            ("params", r["params"], params),
            ("layers", r["layers"], L),
            ("activation-bytes-per-layer", r["activation-bytes-per-layer"], per_layer[policy]),
            ("saved-activation-bytes", r["saved-activation-bytes"], total),
        ]
        for what, got, want in checks:
            ok = got == want
            failed |= not ok
            print(f"{name:16} {policy:9} {what:28} {got:>14} {'==' if ok else '!='} {want}")
        if previous is not None and not r["activation-bytes-per-layer"] < previous:
            failed = True
            print(f"{name} {policy}: saved bytes do not fall strictly")
        previous = r["activation-bytes-per-layer"]
        if not r["arena-live-lower-bound-bytes"] <= r["arena-peak-bytes"]:
            failed = True
            print(f"{name} {policy}: arena below its own lower bound")
        print(f"{name:16} {policy:9} arena {r['arena-peak-bytes']} (lower bound {r['arena-live-lower-bound-bytes']}, "
              f"{r['arena-peak-bytes'] / r['arena-live-lower-bound-bytes']:.3f}x)")
sys.exit(1 if failed else 0)
PYEOF
