# Hugging Face folders in and out (export --format hf, --init-from-checkpoint /
# generate --checkpoint / export --checkpoint on an HF folder):
#   - HF -> ours -> HF: an f32 export, imported into a new run that cannot
#     move the weights (lr 0) and exported again, is byte-identical; so is a
#     sharded export read back; the exported tensors are the checkpoint's;
#   - the sharded folder is what transformers expects (checked here in
#     Python, not with our reader): index total_size and weight_map, every
#     shard holding exactly its tensors, {"format": "pt"} metadata;
#   - bf16 / f16 exports equal PyTorch's rounding of the f32 weights, and
#     import back as exactly those values widened;
#   - the exported config.json + weights in the PyTorch reference
#     (llama_torch.py) give our `verify` loss and gradients (rtol 1e-4), and
#     our `eval --data` loss over the val split (the reference reads the
#     shards itself);
#   - a tied model exports without lm_head.weight and round-trips;
#   - greedy `generate` from the HF folder equals generate from the run;
#   - tokenizer files: tokenizer.model copied, LlamaTokenizer config;
#   - errors (config mismatch, missing/unexpected tensor, broken index,
#     tokenizer/model BOS mismatch) are one line naming the field or tensor.
source "$(dirname "$0")/common.sh" "$@"
REF="$PY $SRC/test/integration/llama_torch.py"
export PYTHONPATH=$SRC/test/integration

compile --preset micro --batch 2 --seq-len 16 --dtype f32 -o micro
write_shards data 64 6000 600 7
./micro train --data data --steps 6 --lr 1e-2 --warmup 1 --run-dir run --quiet > train.out 2>&1 \
  || { cat train.out; die "training micro failed"; }

# --- HF -> ours -> HF -------------------------------------------------------
./micro export --checkpoint run --format hf --out hf1 > export.out || die "export failed"
for f in config.json generation_config.json model.safetensors; do
  [ -f hf1/$f ] || die "export wrote no $f"
done
ls -d hf1.tmp.* > /dev/null 2>&1 && die "export left a temporary folder"
./micro train --data data --steps 1 --lr 0 --run-dir run2 --init-from-checkpoint hf1 \
  > train2.out 2>&1 || { cat train2.out; die "train --init-from-checkpoint HF folder failed"; }
grep -q "initialized weights from hf1" train2.out || { cat train2.out; die "run2 did not report its HF init"; }
./micro export --checkpoint run2 --format hf --out hf2 > /dev/null || die "second export failed"
cmp hf1/model.safetensors hf2/model.safetensors || die "HF -> ours -> HF changed model.safetensors"
echo "f32 round trip through a new run: model.safetensors byte-identical"

./micro export --checkpoint run --format hf --out hfs --shard-size 5000 > /dev/null || die "sharded export failed"
./micro export --checkpoint hfs --format hf --out hf3 > /dev/null || die "export from a sharded HF folder failed"
cmp hf1/model.safetensors hf3/model.safetensors || die "sharded HF -> ours -> HF changed the weights"
echo "sharded round trip: byte-identical ($(ls hfs/model-*.safetensors | wc -l) shards)"

"$PY" - <<'PYEOF' || die "exported folders are not what transformers expects"
import glob, json, os, torch
from llama_torch import read_safetensors
ckpt, _ = read_safetensors(sorted(glob.glob("run/checkpoints/step_*/model.safetensors"))[-1])
single, meta = read_safetensors("hf1/model.safetensors")
assert meta == {"format": "pt"}, meta
assert set(single) == set(ckpt), sorted(set(single) ^ set(ckpt))
for n in ckpt:
    assert single[n].dtype == torch.float32 and torch.equal(single[n], ckpt[n]), n
index = json.load(open("hfs/model.safetensors.index.json"))
wm = index["weight_map"]
assert set(wm) == set(ckpt), sorted(set(wm) ^ set(ckpt))
files = sorted(set(wm.values()))
n = len(files)
assert n >= 3 and files == ["model-%05d-of-%05d.safetensors" % (i + 1, n) for i in range(n)], files
assert sorted(os.path.basename(p) for p in glob.glob("hfs/model-*.safetensors")) == files
total = 0
for f in files:
    tensors, meta = read_safetensors(os.path.join("hfs", f))
    assert meta == {"format": "pt"}, (f, meta)
    assert set(tensors) == {k for k, v in wm.items() if v == f}, f
    shard_bytes = 0
    for k, t in tensors.items():
        assert torch.equal(t, ckpt[k]), k
        shard_bytes += t.numel() * 4
        total += t.numel() * 4
    # transformers' rule: a shard over the limit holds one tensor.
    assert shard_bytes <= 5000 or len(tensors) == 1, (f, shard_bytes)
assert index["metadata"]["total_size"] == total, (index["metadata"], total)
cfg = json.load(open("hf1/config.json"))
assert cfg["torch_dtype"] == "float32" and cfg["model_type"] == "llama", cfg
gen = json.load(open("hf1/generation_config.json"))
assert gen["bos_token_id"] == cfg["bos_token_id"] and gen["eos_token_id"] == cfg["eos_token_id"], gen
print("folder layout checked: %d shards, total_size %d" % (n, total))
PYEOF

# --- bf16 / f16 ------------------------------------------------------------
./micro export --checkpoint run --format hf --out hfbf --dtype bf16 > /dev/null || die "bf16 export failed"
./micro export --checkpoint hfbf --format hf --out hfbf32 > /dev/null || die "importing the bf16 folder failed"
./micro export --checkpoint run --format hf --out hfh --dtype f16 > /dev/null || die "f16 export failed"
./micro export --checkpoint hfh --format hf --out hfh32 > /dev/null || die "importing the f16 folder failed"
"$PY" - <<'PYEOF' || die "half-precision exports differ from PyTorch's rounding"
import json, torch
from llama_torch import read_safetensors
ref, _ = read_safetensors("hf1/model.safetensors")
for folder, dtype, name in (("hfbf", torch.bfloat16, "bfloat16"), ("hfh", torch.float16, "float16")):
    half, _ = read_safetensors(folder + "/model.safetensors")
    back, _ = read_safetensors(folder + "32/model.safetensors")
    assert json.load(open(folder + "/config.json"))["torch_dtype"] == name
    for n, t in ref.items():
        want = t.to(dtype)  # round to nearest even
        assert half[n].dtype == dtype and torch.equal(half[n].view(torch.int16), want.view(torch.int16)), n
        assert torch.equal(back[n], want.to(torch.float32)), n
    changed = sum(int((half[n].float() != ref[n]).sum()) for n in ref)
    print("%s export: PyTorch's rounding bit for bit (%d of %d values rounded); import widens exactly"
          % (name, changed, sum(t.numel() for t in ref.values())))
PYEOF

# --- the PyTorch reference on the exported folder -----------------------------
"$PY" - <<'PYEOF'
import torch
from llama_torch import write_safetensors
g = torch.Generator().manual_seed(5)
write_safetensors("batch.safetensors", {"input_ids": torch.randint(0, 64, (2, 17), generator=g, dtype=torch.int32)})
PYEOF
./micro verify --weights hf1/model.safetensors --batch-file batch.safetensors --out grads.safetensors > verify.out \
  || die "verify on the exported weights failed"
$REF check --config hf1/config.json --weights hf1/model.safetensors --batch-file batch.safetensors \
  --grads grads.safetensors --rtol 1e-4 > check.out || { cat check.out; die "exported model differs from PyTorch"; }
echo "PyTorch on the exported folder: $(tail -1 check.out)"

./micro eval --checkpoint hfs --data data > eval.out || die "eval --data on the sharded folder failed"
"$PY" - <<'PYEOF' || die "eval --data differs from PyTorch"
import array, json, torch
from llama_torch import LlamaTorch, load_config, read_safetensors
model = LlamaTorch(load_config("hfs/config.json"), torch.float64)
index = json.load(open("hfs/model.safetensors.index.json"))
weights = {}
for f in sorted(set(index["weight_map"].values())):
    weights.update(read_safetensors("hfs/" + f)[0])
model.load_weights(weights, "hfs")
toks = array.array("H")
toks.frombytes(open("data/val_00000.tok", "rb").read()[64:])
seq = 16
n = (len(toks) - 1) // seq   # windows of seq + 1 tokens, stride seq
ids = torch.tensor([toks[w * seq: w * seq + seq + 1] for w in range(n)], dtype=torch.long)
with torch.no_grad():
    ref = float(model(ids[:, :-1], ids[:, 1:]))
out = dict(l.split(": ") for l in open("eval.out").read().split("\n") if l)
ours = float(out["loss"])
print("eval --data: %s windows, loss ours %.7f PyTorch %.7f, perplexity %s" % (out["windows"], ours, ref, out["perplexity"]))
assert int(out["windows"]) == n and int(out["tokens"]) == n * seq, out
assert abs(ours - ref) < 1e-5 * ref, (ours, ref)
assert abs(float(out["perplexity"]) - torch.tensor(ours, dtype=torch.float64).exp().item()) < 1e-6 * float(out["perplexity"])
PYEOF

# --- tokenizer files and generate from the HF folder -----------------------
"$PY" -c "
import random
r = random.Random(3)
w = ['ab', 'ba', 'abc', 'cab', 'bca', 'dab', 'bad']
open('corpus.txt', 'w').write('\n'.join(' '.join(r.choice(w) for _ in range(8)) for _ in range(300)) + '\n')"
spm_train --input=corpus.txt --model_prefix=tok --model_type=bpe --vocab_size=40 --hard_vocab_limit=false \
  --character_coverage=1.0 --minloglevel=2 > spm.out 2>&1 || { cat spm.out; die "spm_train failed"; }
./micro export --checkpoint run --format hf --out hftok --tokenizer tok.model > /dev/null || die "export --tokenizer failed"
cmp tok.model hftok/tokenizer.model || die "tokenizer.model was not copied verbatim"
"$PY" - <<'PYEOF' || die "tokenizer files are wrong"
import json
tc = json.load(open("hftok/tokenizer_config.json"))
sm = json.load(open("hftok/special_tokens_map.json"))
assert tc["tokenizer_class"] == "LlamaTokenizer" and tc["add_bos_token"] is True and tc["add_eos_token"] is False, tc
assert (tc["bos_token"], tc["eos_token"], tc["unk_token"]) == ("<s>", "</s>", "<unk>"), tc
assert tc["model_max_length"] == json.load(open("hftok/config.json"))["max_position_embeddings"]
assert {k: v["content"] for k, v in sm.items()} == {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, sm
print("tokenizer files: LlamaTokenizer, <s> </s> <unk>, add_bos_token")
PYEOF
./micro generate --checkpoint run --tokenizer tok.model --prompt "abc dab" --max-tokens 12 --temperature 0 \
  > gen-run.out 2> gen.err || { cat gen.err; die "generate from the run failed"; }
./micro generate --checkpoint hfs --tokenizer hftok/tokenizer.model --prompt "abc dab" --max-tokens 12 \
  --temperature 0 > gen-hf.out 2> gen.err || { cat gen.err; die "generate --checkpoint HF folder failed"; }
cmp gen-run.out gen-hf.out || die "generate from the HF folder differs from generate from the run"
echo "generate from the sharded HF folder equals the run: $(cat gen-hf.out)"

# --- a tied model -----------------------------------------------------------
compile --preset micro --emit hf-config -o micro.json
"$PY" -c "
import json
c = json.load(open('micro.json'))
c.update(_name_or_path='tied', tie_word_embeddings=True, bos_token_id=3)
json.dump(c, open('tied.json', 'w'))"
compile --config tied.json --batch 2 --seq-len 16 --dtype f32 -o tied
./tied train --data data --steps 3 --run-dir trun --quiet > tied.out 2>&1 || { cat tied.out; die "training the tied model failed"; }
./tied export --checkpoint trun --format hf --out thf1 > /dev/null || die "tied export failed"
./tied train --data data --steps 1 --lr 0 --run-dir trun2 --init-from-checkpoint thf1 --quiet > tied2.out 2>&1 \
  || { cat tied2.out; die "tied import failed"; }
./tied export --checkpoint trun2 --format hf --out thf2 > /dev/null || die "tied re-export failed"
cmp thf1/model.safetensors thf2/model.safetensors || die "tied HF -> ours -> HF changed the weights"
"$PY" -c "
from llama_torch import read_safetensors
t, _ = read_safetensors('thf1/model.safetensors')
assert 'lm_head.weight' not in t and 'model.embed_tokens.weight' in t, sorted(t)" || die "tied export holds lm_head.weight"
echo "tied model: exported without lm_head.weight, round trip byte-identical"

# --- errors: one line, naming the field / tensor / file ---------------------
expect_error() {  # EXPECTED_FRAGMENT COMMAND...
  local want=$1; shift
  if "$@" > err.out 2> err.txt; then die "'$*' succeeded, expected an error"; fi
  [ "$(wc -l < err.txt)" -eq 1 ] || { cat err.txt; die "'$*': error is not one line"; }
  grep -qF -- "$want" err.txt || { cat err.txt; die "'$*': error lacks '$want'"; }
  echo "  error: $(cat err.txt)"
}
cp -r hf1 bad-config
"$PY" -c "
import json
c = json.load(open('bad-config/config.json')); c['hidden_size'] = 32
json.dump(c, open('bad-config/config.json', 'w'))"
expect_error "bad-config/config.json: hidden_size is 32, but model micro was compiled with 16" \
  ./micro train --data data --steps 1 --run-dir bad1 --init-from-checkpoint bad-config --quiet
cp -r hf1 bad-missing
"$PY" -c "
from llama_torch import read_safetensors, write_safetensors
t, m = read_safetensors('bad-missing/model.safetensors'); del t['model.layers.1.mlp.up_proj.weight']
write_safetensors('bad-missing/model.safetensors', t, m)"
expect_error "bad-missing/model.safetensors: missing tensor model.layers.1.mlp.up_proj.weight" \
  ./micro generate --checkpoint bad-missing --tokenizer tok.model --prompt x
cp -r hf1 bad-extra
"$PY" -c "
import torch
from llama_torch import read_safetensors, write_safetensors
t, m = read_safetensors('bad-extra/model.safetensors'); t['model.layers.2.mlp.up_proj.weight'] = torch.zeros(3)
write_safetensors('bad-extra/model.safetensors', t, m)"
expect_error "bad-extra/model.safetensors: unexpected tensor model.layers.2.mlp.up_proj.weight" \
  ./micro export --checkpoint bad-extra --format hf --out never
cp -r hfs bad-index
rm bad-index/model-00002-of-*.safetensors
expect_error "model.safetensors.index.json: weight_map names model-00002-of-" \
  ./micro eval --checkpoint bad-index --data data
expect_error "tok.model: bos_token_id is 1, but model tied has 3" \
  ./tied export --checkpoint trun --format hf --out never --tokenizer tok.model
compile "$SRC/test/integration/Inputs/parallel_block_tied.mlir" -o handwritten
expect_error "carries no Hugging Face config.json" \
  ./handwritten export --checkpoint hf1 --format hf --out never
[ ! -e never ] || die "a failed export left its --out folder behind"
ls -d never.tmp.* > /dev/null 2>&1 && die "a failed export left a temporary folder behind"
echo "hf_interop: all checks passed"
