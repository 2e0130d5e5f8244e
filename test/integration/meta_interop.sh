# Meta checkpoint folders (params.json + consolidated.NN.pth) as weights for
# --init-from-checkpoint, eval / generate / export --checkpoint:
#   - a trained model exported as an HF folder is turned into Meta's layout
#     by PyTorch here (the inverse of transformers' permute, fairscale's
#     model-parallel splits, torch.save), over 2 files in f32, bf16 and f16;
#   - Meta -> ours -> HF: `export --checkpoint META` writes the HF folder's
#     model.safetensors byte for byte (f32), and for bf16 / f16 exactly
#     PyTorch's rounding of the weights, widened;
#   - eval --data and greedy generate from the Meta folder equal those from
#     the HF folder; a run initialized from it continues from those weights;
#   - multi-head attention over 4 files, one file, and Llama 3's
#     vocab-parallel embedding round-trip too;
#   - broken pickle / zip / params.json: one line naming the file.
source "$(dirname "$0")/common.sh" "$@"
export PYTHONPATH=$PWD   # to_meta.py, written below

compile --preset micro --batch 2 --seq-len 16 --dtype f32 -o micro   # GQA: 4 heads, 2 KV heads
write_shards data 64 6000 600 7
./micro train --data data --steps 6 --lr 1e-2 --warmup 1 --run-dir run --quiet > train.out 2>&1 \
  || { cat train.out; die "training micro failed"; }
./micro export --checkpoint run --format hf --out hf > /dev/null || die "export failed"

# HF folder -> Meta folder, the inverse of convert_llama_weights_to_hf.py.
cat > to_meta.py <<'PYEOF'
import json, os, struct, sys, torch

def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        assert h["dtype"] == "F32", h
        a, b = h["data_offsets"]
        out[name] = torch.frombuffer(bytearray(raw[8 + n + a:8 + n + b]), dtype=torch.float32).reshape(h["shape"])
    return out

def unpermute(w, n_heads, dim1, dim2):
    # transformers' permute is w.view(n, hd/2, 2, d2).transpose(1, 2).reshape;
    # this undoes it: HF halves back to Meta's interleaved pairs.
    return w.view(n_heads, 2, dim1 // n_heads // 2, dim2).transpose(1, 2).reshape(dim1, dim2)

def main(hf, out, n_shards, dtype, vocab_parallel):
    cfg = json.load(open(os.path.join(hf, "config.json")))
    w = read_safetensors(os.path.join(hf, "model.safetensors"))
    dim, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", heads)
    hd = dim // heads
    ffn = cfg["intermediate_size"]
    params = {"dim": dim, "n_layers": cfg["num_hidden_layers"], "n_heads": heads,
              "n_kv_heads": kv, "vocab_size": cfg["vocab_size"], "norm_eps": cfg["rms_norm_eps"],
              "rope_theta": cfg.get("rope_theta", 10000.0)}
    # Meta's FFN rule: some multiple_of that rounds int(8 * dim / 3) up to ffn.
    base = 2 * (4 * dim) // 3
    for m in range(1, ffn + 1):
        if ffn % m == 0 and (base + m - 1) // m * m == ffn:
            params["multiple_of"] = m
            break
    meta = {"tok_embeddings.weight": (w["model.embed_tokens.weight"], 0 if vocab_parallel else 1),
            "norm.weight": (w["model.norm.weight"], None),
            "output.weight": (w["lm_head.weight"], 0)}
    for l in range(cfg["num_hidden_layers"]):
        h, m = "model.layers.%d." % l, "layers.%d." % l
        meta[m + "attention.wq.weight"] = (unpermute(w[h + "self_attn.q_proj.weight"], heads, dim, dim), 0)
        meta[m + "attention.wk.weight"] = (unpermute(w[h + "self_attn.k_proj.weight"], kv, kv * hd, dim), 0)
        meta[m + "attention.wv.weight"] = (w[h + "self_attn.v_proj.weight"], 0)
        meta[m + "attention.wo.weight"] = (w[h + "self_attn.o_proj.weight"], 1)
        meta[m + "feed_forward.w1.weight"] = (w[h + "mlp.gate_proj.weight"], 0)
        meta[m + "feed_forward.w2.weight"] = (w[h + "mlp.down_proj.weight"], 1)
        meta[m + "feed_forward.w3.weight"] = (w[h + "mlp.up_proj.weight"], 0)
        meta[m + "attention_norm.weight"] = (w[h + "input_layernorm.weight"], None)
        meta[m + "ffn_norm.weight"] = (w[h + "post_attention_layernorm.weight"], None)
    os.makedirs(out)
    json.dump(params, open(os.path.join(out, "params.json"), "w"))
    for s in range(n_shards):
        sd = {k: (t if d is None else torch.chunk(t, n_shards, dim=d)[s]).to(dtype).clone()
              for k, (t, d) in meta.items()}
        torch.save(sd, os.path.join(out, "consolidated.%02d.pth" % s))

if __name__ == "__main__":  # to_meta.py HF_DIR OUT_DIR N_FILES f32|bf16|f16 [vocab-parallel]
    dtypes = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), dtypes[sys.argv[4]], len(sys.argv) > 5)
PYEOF
to_meta() { "$PY" to_meta.py "$@" || die "writing Meta folder $2 failed"; }
to_meta hf meta 2 f32
to_meta hf meta-bf16 2 bf16
to_meta hf meta-f16 2 f16

# --- Meta -> ours -> HF ----------------------------------------------------------
./micro export --checkpoint meta --format hf --out hf-from-meta > /dev/null || die "export --checkpoint META failed"
cmp hf/model.safetensors hf-from-meta/model.safetensors || die "Meta -> ours -> HF changed the weights"
echo "f32 Meta folder over 2 files -> HF: model.safetensors byte-identical"

./micro export --checkpoint meta-bf16 --format hf --out hf-bf16 > /dev/null || die "export from bf16 Meta failed"
./micro export --checkpoint meta-f16 --format hf --out hf-f16 > /dev/null || die "export from f16 Meta failed"
"$PY" - <<'PYEOF' || die "half-precision Meta weights do not widen to PyTorch's values"
import torch
from to_meta import read_safetensors
ref = read_safetensors("hf/model.safetensors")
for folder, dtype in (("hf-bf16", torch.bfloat16), ("hf-f16", torch.float16)):
    got = read_safetensors(folder + "/model.safetensors")
    assert set(got) == set(ref)
    changed = 0
    for n, t in ref.items():
        want = t.to(dtype).to(torch.float32)
        assert torch.equal(got[n], want), (folder, n)
        changed += int((want != t).sum())
    assert changed > 0, folder  # the rounding did happen
    print("%s Meta folder: PyTorch's rounding widened exactly (%d values rounded)" % (dtype, changed))
PYEOF

# --- the same model from both folders ----------------------------------------------
./micro eval --checkpoint hf --data data > eval-hf.out || die "eval from HF failed"
./micro eval --checkpoint meta --data data > eval-meta.out || die "eval --checkpoint META failed"
cmp eval-hf.out eval-meta.out || { cat eval-hf.out eval-meta.out; die "eval differs between the HF and Meta folders"; }
echo "eval --data: identical from both folders ($(grep loss eval-meta.out))"

"$PY" -c "
import random
r = random.Random(3)
w = ['ab', 'ba', 'abc', 'cab', 'bca', 'dab', 'bad']
open('corpus.txt', 'w').write('\n'.join(' '.join(r.choice(w) for _ in range(8)) for _ in range(300)) + '\n')"
spm_train --input=corpus.txt --model_prefix=tok --model_type=bpe --vocab_size=40 --hard_vocab_limit=false \
  --character_coverage=1.0 --minloglevel=2 > spm.out 2>&1 || { cat spm.out; die "spm_train failed"; }
./micro generate --checkpoint hf --tokenizer tok.model --prompt "abc dab" --max-tokens 12 --temperature 0 \
  > gen-hf.out 2> gen.err || { cat gen.err; die "generate from HF failed"; }
./micro generate --checkpoint meta --tokenizer tok.model --prompt "abc dab" --max-tokens 12 --temperature 0 \
  > gen-meta.out 2> gen.err || { cat gen.err; die "generate --checkpoint META failed"; }
cmp gen-hf.out gen-meta.out || die "greedy generate differs between the HF and Meta folders"
echo "greedy generate: identical from both folders: $(cat gen-meta.out)"

./micro train --data data --steps 1 --lr 0 --run-dir run-meta --init-from-checkpoint meta \
  > train-meta.out 2>&1 || { cat train-meta.out; die "train --init-from-checkpoint META failed"; }
grep -q "initialized weights from meta" train-meta.out || { cat train-meta.out; die "the run did not report its Meta init"; }
./micro export --checkpoint run-meta --format hf --out hf-run-meta > /dev/null || die "export of run-meta failed"
cmp hf/model.safetensors hf-run-meta/model.safetensors || die "a run initialized from Meta (lr 0) moved the weights"
echo "train --init-from-checkpoint META: starts from exactly those weights"

# --- multi-head attention over 4 files and 1 file; Llama 3's embedding split ------
compile --preset micro --emit hf-config -o micro.json
"$PY" -c "
import json
c = json.load(open('micro.json'))
c.update(_name_or_path='mha', num_key_value_heads=c['num_attention_heads'])
json.dump(c, open('mha.json', 'w'))"
compile --config mha.json --batch 2 --seq-len 16 --dtype f32 -o mha
./mha train --data data --steps 3 --run-dir mrun --quiet > mha.out 2>&1 || { cat mha.out; die "training mha failed"; }
./mha export --checkpoint mrun --format hf --out mhf > /dev/null || die "mha export failed"
to_meta mhf mmeta4 4 f32
to_meta mhf mmeta1 1 f32
to_meta mhf mmeta-vp 2 f32 vocab-parallel
for m in mmeta4 mmeta1 mmeta-vp; do
  ./mha export --checkpoint $m --format hf --out hf-$m > /dev/null || die "mha export from $m failed"
  cmp mhf/model.safetensors hf-$m/model.safetensors || die "$m -> ours -> HF changed the weights"
done
./mha eval --checkpoint mmeta4 --data data > e1.out && ./mha eval --checkpoint mhf --data data > e2.out \
  && cmp e1.out e2.out || die "mha eval differs between Meta and HF"
echo "multi-head attention: 4 files, 1 file, vocab-parallel embedding: byte-identical; eval identical"

# --- errors: one line naming the file ----------------------------------------------
expect_error() {  # EXPECTED_FRAGMENT COMMAND...
  local want=$1; shift
  if "$@" > err.out 2> err.txt; then die "'$*' succeeded, expected an error"; fi
  [ "$(wc -l < err.txt)" -eq 1 ] || { cat err.txt; die "'$*': error is not one line"; }
  grep -qF -- "$want" err.txt || { cat err.txt; die "'$*': error lacks '$want'"; }
  echo "  error: $(cat err.txt)"
}
# A pickle with a global torch.save never writes for a state dict.
cp -r meta bad-pickle
"$PY" - <<'PYEOF'
import zipfile
p = "bad-pickle/consolidated.01.pth"
z = zipfile.ZipFile(p)
recs = [(i.filename, z.read(i.filename)) for i in z.infolist()]
z.close()
recs = [(n, d.replace(b"collections\nOrderedDict", b"os\nsystem") if n.endswith("data.pkl") else d)
        for n, d in recs]
with zipfile.ZipFile(p, "w") as out:
    for n, d in recs:
        out.writestr(n, d)
PYEOF
expect_error "bad-pickle/consolidated.01.pth: data.pkl byte" \
  ./micro eval --checkpoint bad-pickle --data data
expect_error "unsupported global os.system" ./micro eval --checkpoint bad-pickle --data data
# A truncated archive.
cp -r meta bad-zip
head -c 3000 meta/consolidated.00.pth > bad-zip/consolidated.00.pth
expect_error "bad-zip/consolidated.00.pth: no zip end-of-central-directory record" \
  ./micro generate --checkpoint bad-zip --tokenizer tok.model --prompt x
# params.json: another model, and not JSON at all.
cp -r meta bad-params
"$PY" -c "
import json
p = json.load(open('bad-params/params.json')); p['n_heads'] = 2; p['n_kv_heads'] = 2
json.dump(p, open('bad-params/params.json', 'w'))"
expect_error "bad-params/params.json: n_heads is 2, but model micro was compiled with num_attention_heads 4" \
  ./micro train --data data --steps 1 --run-dir bad1 --init-from-checkpoint bad-params --quiet
cp -r meta bad-json
echo '{"dim": 16,' > bad-json/params.json
expect_error "bad-json/params.json: not valid JSON" \
  ./micro export --checkpoint bad-json --format hf --out never
# GQA weights for a multi-head model.
expect_error "meta/params.json: n_kv_heads is 2, but model mha was compiled with num_key_value_heads 4" \
  ./mha eval --checkpoint meta --data data
[ ! -e never ] || die "a failed export left its --out folder behind"
echo "meta_interop: all checks passed"
