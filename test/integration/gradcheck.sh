# Every parameter gradient of `micro` (GQA: 4 heads, 2 KV heads) in float64
# against central finite differences, under every remat policy, and of a
# tied-embedding config.
source "$(dirname "$0")/common.sh" "$@"

for remat in none selective full; do
  compile --preset micro --batch 2 --seq-len 8 --dtype f64 --remat $remat -o micro-$remat
  ./micro-$remat gradcheck --tolerance 1e-6 > gc-$remat.txt || { cat gc-$remat.txt; die "gradcheck failed for remat=$remat"; }
  tail -1 gc-$remat.txt
done

# Tied embeddings: the table gets the sum of the embedding's and the output
# projection's gradients.
"$BIN/llama-compile" --preset micro --emit hf-config -o micro.json
"$PY" - <<'PYEOF'
import json
c = json.load(open("micro.json"))
c["tie_word_embeddings"] = True
c["_name_or_path"] = "micro-tied"
json.dump(c, open("tied.json", "w"))
PYEOF
compile --config tied.json --batch 2 --seq-len 8 --dtype f64 -o tied
./tied gradcheck > gc-tied.txt || { cat gc-tied.txt; die "gradcheck failed for tied embeddings"; }
grep -q "lm_head" gc-tied.txt && die "tied model must not have lm_head.weight"
tail -1 gc-tied.txt
