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
