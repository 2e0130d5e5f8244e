# One train step of a partitioned program = the single-process step: the
# loss and every parameter gradient of `micro` (GQA), a tied-embedding
# variant with Llama 3's RoPE scaling and an MHA one with YaRN's, run through `verify` on 4 MPI ranks (full weights and the global
# batch in, full gradients out from rank 0), against
#   - the PyTorch float64 reference (llama_torch.py check): f64 programs
#     within 1e-10, f32 within 1e-4 (as torch_reference.sh),
#   - the one-rank program's own verify in f64: within 1e-12,
# for tp=2, tp=2 + sp, dp=2 and dp=2 x tp=2 (and tp=4 for MHA), with the
# batch holding ignored targets (-100) only in the first data-parallel
# rank's half, so the global count of scored tokens matters.
source "$(dirname "$0")/common.sh" "$@"
REF="$PY $SRC/test/integration/llama_torch.py"
RUN="$BIN/llama-run"

"$BIN/llama-compile" --preset micro --emit hf-config -o micro.json
"$PY" - <<'PYEOF'
import json
c = json.load(open("micro.json"))
# With RoPE scaling (issue 20): the partitioned rope ops keep the IR's
# frequencies (llama3 bands) and YaRN's cos/sin factor.
json.dump(dict(c, _name_or_path="tied", tie_word_embeddings=True,
               rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
          open("tied.json", "w"))
json.dump(dict(c, _name_or_path="mha", num_key_value_heads=4,
               rope_scaling={"rope_type": "yarn", "factor": 4.0}), open("mha.json", "w"))
PYEOF

check() {  # CONFIG DTYPE GRID_ARGS...
  local config=$1 dtype=$2; shift 2
  local tag; tag=$(basename $config .json)-$dtype$(echo "$@" | tr -d ' -')
  compile --config $config --batch 4 --seq-len 8 --dtype $dtype "$@" -o $tag
  if [ ! -f in-$config-$dtype.safetensors ]; then
    $REF make-inputs --config $config --batch 4 --seq 8 --seed 17 --std 0.08 \
      --weights w-$config-$dtype.safetensors --batch-file in-$config-$dtype.safetensors --dtype $dtype
    # Ignore targets unevenly over the dp ranks: the last target of the first
    # two sequences (input_ids' last column is a target only).
    "$PY" - in-$config-$dtype.safetensors <<'PYEOF'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])["input_ids"]
start, size = 8 + n + h["data_offsets"][0], {"I32": 4, "I64": 8}[h["dtype"]]
row = h["shape"][1]
for r, c in [(0, row - 1), (1, row - 1)]:
    off = start + (r * row + c) * size
    b[off:off + size] = (-100).to_bytes(size, "little", signed=True)
open(p, "wb").write(bytes(b))
PYEOF
    compile --config $config --batch 4 --seq-len 8 --dtype $dtype -o one-$config-$dtype
    ./one-$config-$dtype verify --weights w-$config-$dtype.safetensors \
      --batch-file in-$config-$dtype.safetensors --out g1-$config-$dtype.safetensors > /dev/null
  fi
  local ranks
  ranks=$(./$tag info --json | "$PY" -c "import json,sys; j=json.load(sys.stdin); print(j['grid_dp']*j['grid_tp'])")
  "$RUN" -n $ranks -- ./$tag verify --weights w-$config-$dtype.safetensors \
    --batch-file in-$config-$dtype.safetensors --out g-$tag.safetensors > $tag.out 2>&1 \
    || { cat $tag.out; die "$tag: partitioned verify failed"; }
  local rtol=1e-4; [ $dtype = f64 ] && rtol=1e-10
  $REF check --config $config --weights w-$config-$dtype.safetensors \
    --batch-file in-$config-$dtype.safetensors --grads g-$tag.safetensors --rtol $rtol > $tag-check.txt \
    || { cat $tag-check.txt; die "$tag differs from PyTorch"; }
  echo "$tag vs PyTorch: $(tail -1 $tag-check.txt)"
  if [ $dtype = f64 ]; then
    "$PY" - g1-$config-$dtype.safetensors g-$tag.safetensors <<'PYEOF' || die "$tag differs from the one-rank program"
import json, struct, sys
def read(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        raw = b[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]]
        out[k] = struct.unpack("<%dd" % (len(raw) // 8), raw)
    return out
a, b = read(sys.argv[1]), read(sys.argv[2])
assert a.keys() == b.keys(), (sorted(a), sorted(b))
worst = 0.0
for k in a:
    scale = max(max(abs(x) for x in a[k]), 1e-30)
    worst = max(worst, max(abs(x - y) for x, y in zip(a[k], b[k])) / scale)
print("  vs one rank: max relative difference %.2e over %d tensors" % (worst, len(a)))
sys.exit(0 if worst < 1e-12 else 1)
PYEOF
  fi
}

for dtype in f64 f32; do
  check micro.json $dtype --tp 2
  check micro.json $dtype --tp 2 --sp
  check micro.json $dtype --dp 2
  check micro.json $dtype --dp 2 --tp 2
done
check tied.json f64 --dp 2 --tp 2 --sp
check mha.json f64 --tp 4
