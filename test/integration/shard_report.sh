# `llama-compile --dp D --tp T [--sp] --report` against the closed-form
# Megatron-LM / ZeRO figures (fp32, 4 bytes; b = global batch / dp, s seq,
# h hidden, H heads, K KV heads, d head dim, f FFN width, V vocab, L layers).
#
# Per-rank parameters (tensor parallel: q/k/v/gate/up split on rows, o/down
# on columns, embedding and lm_head over the vocabulary, gains replicated):
#   P_t = (V h + L (2 h H d + 2 h K d + 3 h f) + V h) / t + (2 L + 1) h
# ZeRO-1 (Rajbhandari et al. 2020): AdamW moments for 1/dp of them:
#   adamw-state-bytes = 2 * ceil(P_t / dp) * 4
#   optimizer comm = reduce-scatter + all-gather of the padded P_t:
#   sent = 2 (dp - 1) / dp * ceil(P_t / dp) * dp * 4
# Tensor-parallel comm per step (Korthikanti et al. 2022): without sequence
# parallelism, 4 all-reduces of b s h per layer (2 forward, 2 backward),
# plus the embedding's and the final norm's, plus the cross-entropy's row
# max [b s] and (sum exp, target logit) [b s 2]:
#   payload = ((4 L + 2) b s h + 3 b s) * 4,  sent = 2 (t - 1) / t * payload
# With sequence parallelism each all-reduce becomes an all-gather plus a
# reduce-scatter (same volume); as in Megatron-LM the gathered inputs of the
# column-parallel GEMMs are not saved but gathered again in the backward
# (2 per layer and the one before lm_head, under selective remat), and the
# replicated gains' gradients are all-reduced:
#   payload = ((10 L + 5) b s h + (2 L + 1) h + 3 b s) * 4
#   sent = (t - 1) / t * (10 L + 5) b s h * 4 + 2 (t - 1) / t * ((2 L + 1) h + 3 b s) * 4
# Data-parallel comm in the step program: the scored-token count and the
# loss (two scalars).
source "$(dirname "$0")/common.sh" "$@"
"$PY" - "$BIN/llama-compile" <<'PYEOF'
import subprocess, sys
compiler = sys.argv[1]
def report(args):
    out = subprocess.run([compiler] + args + ["--report"], check=True, capture_output=True, text=True).stdout
    fields = {k.strip(): v.strip() for k, v in (l.split(":", 1) for l in out.splitlines() if ":" in l)}
    return {k: int(v) for k, v in fields.items() if v.lstrip("-").isdigit()}
models = [  # preset, global batch, s, h, H, K, d, f, V, L
    ("micro", 4, 8, 16, 4, 2, 4, 48, 64, 2),
    ("tiny", 4, 64, 384, 6, 6, 64, 1024, 8192, 5),
    ("llama-7b", 8, 2048, 4096, 32, 32, 128, 11008, 32000, 32),
]
grids = [(1, 2, False), (1, 2, True), (2, 1, False), (2, 2, False), (2, 2, True)]
failed = False
for name, B, s, h, H, K, d, f, V, L in models:
    for dp, t, sp in grids:
        if H % t or K % t:
            continue
        b = B // dp
        args = ["--preset", name, "--batch", str(B), "--seq-len", str(s), "--dp", str(dp), "--tp", str(t)]
        if sp:
            args.append("--sp")
        got = report(args)
        P = (V * h + L * (2 * h * H * d + 2 * h * K * d + 3 * h * f) + V * h) // t + (2 * L + 1) * h
        shard = -(-P // dp)
        want = {"params": P, "param-bytes": 4 * P, "adamw-state-bytes": 2 * shard * 4,
                "comm-dp-zero1-sent-bytes": round(2 * (dp - 1) / dp * shard * dp * 4),
                "comm-dp-collectives": 2 if dp > 1 else 0}
        if t > 1 and not sp:
            payload = ((4 * L + 2) * b * s * h + 3 * b * s) * 4
            want["comm-tp-payload-bytes"] = payload
            want["comm-tp-sent-bytes"] = round(2 * (t - 1) / t * payload)
            want["comm-tp-collectives"] = 4 * L + 2 + 2
        if t > 1 and sp:
            big, small = (10 * L + 5) * b * s * h * 4, ((2 * L + 1) * h + 3 * b * s) * 4
            want["comm-tp-payload-bytes"] = big + small
            want["comm-tp-sent-bytes"] = round((t - 1) / t * big + 2 * (t - 1) / t * small)
            want["comm-tp-collectives"] = 10 * L + 5 + 2 * L + 1 + 2
        if t == 1:
            want["comm-tp-collectives"] = 0
        bad = {k: (got.get(k), v) for k, v in want.items() if abs(got.get(k, -1) - v) > 1}
        tag = "%s dp=%d tp=%d%s" % (name, dp, t, " sp" if sp else "")
        if bad:
            failed = True
            print("MISMATCH %s: %s" % (tag, bad))
        else:
            print("ok %s: params/rank %d, tp comm %d B sent, zero1 %d B sent" % (
                tag, P, got.get("comm-tp-sent-bytes", 0), got["comm-dp-zero1-sent-bytes"]))
sys.exit(1 if failed else 0)
PYEOF
