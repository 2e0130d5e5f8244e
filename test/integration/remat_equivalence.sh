# Remat changes what is stored, never what is computed: `none`, `selective`
# and `full` give bit-identical loss and gradients for the same weights and
# batch (the recomputed values come from the same kernels on the same inputs).
source "$(dirname "$0")/common.sh" "$@"
REF="$PY $SRC/test/integration/llama_torch.py"

for remat in none selective full; do
  compile --preset micro --batch 2 --seq-len 8 --dtype f64 --remat $remat -o micro-$remat
done
./micro-none info --config-json > micro.json
$REF make-inputs --config micro.json --batch 2 --seq 8 --seed 5 --std 0.1 \
  --weights w.safetensors --batch-file i.safetensors --dtype f64
for remat in none selective full; do
  ./micro-$remat verify --weights w.safetensors --batch-file i.safetensors --out g-$remat.safetensors
done
cmp g-none.safetensors g-selective.safetensors || die "selective gradients differ from none"
cmp g-none.safetensors g-full.safetensors || die "full gradients differ from none"
echo "none, selective and full: identical loss and gradients ($(stat -c %s g-none.safetensors) bytes)"
