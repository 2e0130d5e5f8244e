# The compiled fp32 program against an independent PyTorch implementation of
# Hugging Face LLaMA (llama_torch.py, run in float64): same weights, same
# batch through `OUT verify`; loss and every parameter gradient within a
# relative error of 1e-4. Covers GQA (micro), plain MHA with several layers,
# and tied embeddings.
source "$(dirname "$0")/common.sh" "$@"
REF="$PY $SRC/test/integration/llama_torch.py"

check_model() {  # NAME COMPILE_ARGS... ; batch 2, seq from the args
  local name=$1; shift
  compile "$@" -o $name
  ./$name info --config-json > $name.json
  local b s
  b=$("$PY" -c "import json,sys; print(json.load(sys.stdin)['batch'])" < <(./$name info --json))
  s=$("$PY" -c "import json,sys; print(json.load(sys.stdin)['seq_len'])" < <(./$name info --json))
  $REF make-inputs --config $name.json --batch $b --seq $s --seed 11 --std 0.05 \
    --weights $name-w.safetensors --batch-file $name-i.safetensors --dtype f32
  ./$name verify --weights $name-w.safetensors --batch-file $name-i.safetensors --out $name-g.safetensors
  $REF check --config $name.json --weights $name-w.safetensors --batch-file $name-i.safetensors \
    --grads $name-g.safetensors --rtol 1e-4 > $name-check.txt || { cat $name-check.txt; die "$name differs from PyTorch"; }
  echo "$name: $(tail -1 $name-check.txt)"
}

check_model micro --preset micro --batch 2 --seq-len 8

"$BIN/llama-compile" --preset micro --emit hf-config -o base.json
"$PY" - <<'PYEOF'
import json
c = json.load(open("base.json"))
mha = dict(c, _name_or_path="mha", hidden_size=64, intermediate_size=160, num_hidden_layers=3,
           num_attention_heads=4, num_key_value_heads=4, head_dim=16, vocab_size=96, rope_theta=500000.0)
json.dump(mha, open("mha.json", "w"))
tied = dict(c, _name_or_path="tied", tie_word_embeddings=True)
json.dump(tied, open("tied.json", "w"))
PYEOF
check_model mha --config mha.json --batch 2 --seq-len 24 --remat full
check_model tied --config tied.json --batch 3 --seq-len 8 --remat none

# RoPE scaling (Llama 3's bands, YaRN's ramp and attention factor): the IR's
# frequencies against the float64 transcription of the published formulas
# (every type), then a whole step's loss and gradients against PyTorch.
"$PY" - <<'PYEOF'
import json
c = json.load(open("base.json"))
shape = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, vocab_size=96, max_position_embeddings=128)
scalings = {
    "llama3": (500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "yarn": (10000.0, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}),
    "yarnm": (10000.0, {"type": "yarn", "factor": 8.0, "beta_fast": 16.0, "mscale": 0.707,
                        "mscale_all_dim": 1.0, "truncate": False}),
    "linear": (10000.0, {"type": "linear", "factor": 2.0}),
    "dynamic": (10000.0, {"rope_type": "dynamic", "factor": 4.0}),
}
for name, (theta, scaling) in scalings.items():
    json.dump(dict(c, _name_or_path=name, rope_theta=theta, rope_scaling=scaling, **shape),
              open(name + ".json", "w"))
PYEOF
for name in llama3 yarn yarnm linear dynamic; do
  "$BIN/llama-compile" --config $name.json --batch 2 --seq-len 24 --emit mlir -o $name.mlir
  $REF rope-freqs --config $name.json --mlir $name.mlir --seq 24 > $name-freqs.txt ||
    { cat $name-freqs.txt; die "$name: RoPE frequencies differ from the formulas"; }
  grep -q "inv_freq = array<f64" $name.mlir || die "$name: no inv_freq in the IR"
  echo "$(cat $name-freqs.txt)"
done
grep -q "attention_factor = 1.1386" yarn.mlir || die "yarn: no attention_factor 0.1 ln 4 + 1 in the IR"
check_model llama3 --config llama3.json --batch 2 --seq-len 24
check_model yarn --config yarn.json --batch 2 --seq-len 24 --remat none
