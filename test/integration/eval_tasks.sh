# Multiple-choice evaluation (`eval --tasks`) against an independent
# computation: a small model trained briefly on fortunes text is exported as
# an HF folder with its tokenizer; the PyTorch reference (llama_torch.py,
# float64) loads that folder's config.json and model.safetensors, tokenizes
# with the `spm_encode` tool on the exported tokenizer.model, applies
# lm-evaluation-harness's context/continuation split and left truncation to
# seq_len + 1 tokens, and scores every choice. Checked for --normalize none
# and length: the token ids of every context and continuation, every
# log-likelihood (relative 1e-5), the chosen answers and the accuracy line.
# Inputs/eval_tasks.jsonl holds 8 hand-written items; one has a context
# longer than seq_len, so truncation is exercised.
source "$(dirname "$0")/common.sh" "$@"
export PYTHONPATH=$SRC/test/integration
TASKS=$SRC/test/integration/Inputs/eval_tasks.jsonl

FORTUNES=/usr/share/games/fortunes
for f in wisdom platitudes fortunes tao education; do
  [ -f $FORTUNES/$f ] || die "$FORTUNES/$f missing: install the 'fortunes' package (tools/install-deps)"
  corpus+=($FORTUNES/$f)
done
"$BIN/llama-tokenize" train --input "${corpus[@]}" --separator % --vocab-size 512 -o tok.model > tok.out 2>&1 \
  || { cat tok.out; die "tokenizer training failed"; }
"$BIN/llama-tokenize" encode --tokenizer tok.model --input "${corpus[@]}" --separator % \
  --val-fraction 0.05 -o shards > enc.out 2>&1 || { cat enc.out; die "encoding failed"; }

compile --preset micro --emit hf-config -o micro.json
"$PY" -c "
import json
c = json.load(open('micro.json'))
c.update(_name_or_path='fortunes-eval', vocab_size=512, hidden_size=64, num_hidden_layers=2,
         num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=176,
         max_position_embeddings=64)
json.dump(c, open('model.json', 'w'))"
compile --config model.json --batch 8 --seq-len 32 --dtype f32 -o model
./model train --data shards --steps 150 --lr 2e-3 --warmup 15 --seed 1 --run-dir run --quiet \
  > train.out 2>&1 || { cat train.out; die "training failed"; }
./model export --checkpoint run --format hf --out hf --tokenizer tok.model > export.out || die "export failed"

for norm in none length; do
  ./model eval --checkpoint hf --tokenizer hf/tokenizer.model --tasks "$TASKS" --normalize $norm \
    --details details-$norm.jsonl > eval-$norm.out 2> eval-$norm.err \
    || { cat eval-$norm.err; die "eval --tasks --normalize $norm failed"; }
  echo "--normalize $norm: $(cat eval-$norm.out)"
done

"$PY" - "$TASKS" <<'PYEOF' || die "eval --tasks differs from the PyTorch reference"
import json, subprocess, sys, torch
from llama_torch import LlamaTorch, load_config, read_safetensors

tasks = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
config = load_config("hf/config.json")
model = LlamaTorch(config, torch.float64)
model.load_weights(read_safetensors("hf/model.safetensors")[0], "hf/model.safetensors")
seq_len = 32
bos = json.load(open("hf/config.json"))["bos_token_id"]

# lm-evaluation-harness: trailing whitespace of the context moves to the
# choice; continuation = encode(context + choice)[len(encode(context)):].
pairs = []
for t in tasks:
    ctx = t["context"].rstrip()
    spaces = t["context"][len(ctx):]
    for c in t["choices"]:
        pairs.append((ctx, ctx + spaces + c))
lines = [s for p in pairs for s in p]
assert not any("\n" in s for s in lines)
out = subprocess.run(["spm_encode", "--model=hf/tokenizer.model", "--output_format=id"],
                     input="\n".join(lines) + "\n", capture_output=True, text=True, check=True).stdout
ids = [[int(x) for x in l.split()] for l in out.split("\n")[:len(lines)]]

def score(context, cont):
    whole = (context + cont)[-(seq_len + 1):]
    inp = torch.tensor([whole[:-1]])
    with torch.no_grad():
        logp = torch.log_softmax(model.logits(inp)[0], dim=-1)
    n = len(whole)
    return sum(float(logp[j - 1, whole[j]]) for j in range(n - len(cont), n))

failures = []
truncated = 0
refs = []
k = 0
for t in tasks:
    item = []
    for c in t["choices"]:
        ctx_ids, whole_ids = ids[2 * k], ids[2 * k + 1]
        k += 1
        context = [bos] + ctx_ids
        cont = whole_ids[len(ctx_ids):]
        truncated += len(context) + len(cont) > seq_len + 1
        item.append((context, cont, score(context, cont)))
    refs.append(item)
assert truncated >= 1, "no item exceeds seq_len + 1 tokens: truncation is untested"

for norm in ("none", "length"):
    details = [json.loads(l) for l in open("details-%s.jsonl" % norm)]
    assert len(details) == len(tasks), (norm, len(details))
    correct = 0
    for i, (t, ref, got) in enumerate(zip(tasks, refs, details)):
        scores = []
        for j, ((context, cont, ll), g) in enumerate(zip(ref, got["choices"])):
            if g["context_tokens"] != context or g["continuation_tokens"] != cont:
                failures.append("item %d choice %d: tokens differ: ours %s | %s, reference %s | %s"
                                % (i, j, g["context_tokens"], g["continuation_tokens"], context, cont))
            if abs(g["loglik"] - ll) > 1e-5 * max(1.0, abs(ll)):
                failures.append("item %d choice %d: loglik ours %.9g reference %.9g" % (i, j, g["loglik"], ll))
            s = ll / len(cont) if norm == "length" else ll
            scores.append(s)
            if abs(g["score"] - s) > 1e-5 * max(1.0, abs(s)):
                failures.append("item %d choice %d: score ours %.9g reference %.9g" % (i, j, g["score"], s))
        best = max(range(len(scores)), key=lambda j: (scores[j], -j))
        runner_up = max((s for j, s in enumerate(scores) if j != best), default=float("-inf"))
        # A near tie could flip with rounding; the items are chosen to have none.
        if scores[best] - runner_up < 1e-4:
            failures.append("item %d: reference scores %s nearly tie" % (i, scores))
        if got["predicted"] != best:
            failures.append("item %d (--normalize %s): ours picks %d, reference %d (scores %s)"
                            % (i, norm, got["predicted"], best, scores))
        correct += best == t["label"]
    line = open("eval-%s.out" % norm).read().strip()
    want = "accuracy: %d/%d = %.4f" % (correct, len(tasks), correct / len(tasks))
    if line != want:
        failures.append("--normalize %s prints '%s', reference '%s'" % (norm, line, want))
    print("--normalize %s: reference %s" % (norm, want))
flips = sum(d1["predicted"] != d2["predicted"] for d1, d2 in
            zip(map(json.loads, open("details-none.jsonl")), map(json.loads, open("details-length.jsonl"))))
print("%d choices scored, %d truncated; length normalization changes %d answers" % (k, truncated, flips))
for f in failures:
    print("FAIL: " + f, file=sys.stderr)
sys.exit(1 if failures else 0)
PYEOF

# Bad task files are one-line errors naming the line.
printf '{"context": "a", "choices": ["b"], "label": 0}\n{"context": "a", "choices": ["b"], "label": 3}\n' > bad.jsonl
if ./model eval --checkpoint hf --tokenizer hf/tokenizer.model --tasks bad.jsonl > /dev/null 2> bad.err; then
  die "a task file with a bad label was accepted"
fi
[ "$(wc -l < bad.err)" -eq 1 ] && grep -q 'bad.jsonl:2: "label" 3 is not the index of one of the 1 choices' bad.err \
  || { cat bad.err; die "bad label error is wrong"; }
echo "eval_tasks: all checks passed"
