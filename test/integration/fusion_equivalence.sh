# llama-fuse changes how the step is computed (fewer passes over memory),
# never what: fused and unfused programs (--no-fuse) give the same loss and
# gradients for the same weights and batch, within float64 rounding
# (the norm backward reads the forward's rstd instead of recomputing it;
# everything else runs the same arithmetic). Covers GQA (micro), several
# MHA layers under remat full and tied embeddings (partitioned programs are
# fused too: shard_step.sh checks them against PyTorch). The fused step also
# calls fewer kernels and needs no more arena than the unfused one.
source "$(dirname "$0")/common.sh" "$@"
REF="$PY $SRC/test/integration/llama_torch.py"

"$BIN/llama-compile" --preset micro --emit hf-config -o base.json
"$PY" - <<'PYEOF'
import json
c = json.load(open("base.json"))
json.dump(dict(c, _name_or_path="mha", hidden_size=64, intermediate_size=160, num_hidden_layers=3,
               num_attention_heads=4, num_key_value_heads=4, head_dim=16, vocab_size=96),
          open("mha.json", "w"))
json.dump(dict(c, _name_or_path="tied", tie_word_embeddings=True), open("tied.json", "w"))
PYEOF

compare() {  # A.safetensors B.safetensors RTOL LABEL
  "$PY" - "$SRC/test/integration" "$@" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[1])
from llama_torch import read_safetensors, relative_error
a, _ = read_safetensors(sys.argv[2])
b, _ = read_safetensors(sys.argv[3])
rtol, label = float(sys.argv[4]), sys.argv[5]
if sorted(a) != sorted(b):
    sys.exit("%s: tensor names differ" % label)
worst = max(relative_error(a[n], b[n]) for n in a)
print("%s: %d tensors, max relative difference %.3e (limit %g)" % (label, len(a), worst, rtol))
sys.exit(0 if worst <= rtol else 1)
PYEOF
}

check() {  # NAME DTYPE RTOL COMPILE_ARGS...
  local name=$1 dtype=$2 rtol=$3; shift 3
  compile "$@" --dtype $dtype -o $name-fused
  compile "$@" --dtype $dtype --no-fuse -o $name-unfused
  ./$name-fused info --config-json > $name.json
  local b s
  b=$("$PY" -c "import json,sys; print(json.load(sys.stdin)['batch'])" < <(./$name-fused info --json))
  s=$("$PY" -c "import json,sys; print(json.load(sys.stdin)['seq_len'])" < <(./$name-fused info --json))
  $REF make-inputs --config $name.json --batch $b --seq $s --seed 3 --std 0.1 \
    --weights $name-w.safetensors --batch-file $name-i.safetensors --dtype $dtype >/dev/null
  for v in fused unfused; do
    ./$name-$v verify --weights $name-w.safetensors --batch-file $name-i.safetensors \
      --out $name-$v.safetensors >/dev/null
  done
  compare $name-fused.safetensors $name-unfused.safetensors $rtol "$name $dtype" ||
    die "$name: fused and unfused gradients differ"
}

check micro f64 1e-12 --preset micro --batch 2 --seq-len 8
check micro f32 1e-5 --preset micro --batch 2 --seq-len 8
check mha f64 1e-12 --config mha.json --batch 2 --seq-len 16 --remat full
check tied f64 1e-12 --config tied.json --batch 3 --seq-len 8 --remat none

# Fewer kernel calls in the step and no larger arena.
for v in fused unfused; do
  flag=$([ $v = unfused ] && echo --no-fuse || true)
  compile --preset tiny --batch 2 --seq-len 64 $flag --emit source -o tiny-$v.cpp
  compile --preset tiny --batch 2 --seq-len 64 $flag --report > tiny-$v.report
done
calls() { awk '/^void train_step/,/^}/' "$1" | grep -c "k::"; }
arena() { sed -n 's/^arena-peak-bytes: //p' "$1"; }
fused_calls=$(calls tiny-fused.cpp) unfused_calls=$(calls tiny-unfused.cpp)
echo "tiny train_step kernel calls: fused $fused_calls, unfused $unfused_calls;" \
  "arena fused $(arena tiny-fused.report), unfused $(arena tiny-unfused.report) bytes"
[ "$fused_calls" -lt "$unfused_calls" ] || die "fusion did not reduce the kernel calls"
[ "$(arena tiny-fused.report)" -le "$(arena tiny-unfused.report)" ] || die "fusion grew the arena"
for k in add_rms_norm_forward rms_norm_backward_rstd cross_entropy_fused; do
  grep -q "k::$k<T>" tiny-fused.cpp || die "tiny's fused step does not call $k"
done
echo "fusion_equivalence: ok"
