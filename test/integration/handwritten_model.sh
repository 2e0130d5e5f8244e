# The IR is the real interface: a model written by hand (parallel attention +
# SwiGLU block, tied embeddings, GQA, float64) compiles like a preset, passes
# the finite-difference gradient check under every remat policy, and trains.
source "$(dirname "$0")/common.sh" "$@"
MODEL=$SRC/test/integration/Inputs/parallel_block_tied.mlir

"$BIN/llama-compile" "$MODEL" --print-params | grep -qx "params: 848" ||
  die "parameter count of the hand-written model (expected 32*8 + 8 + 64 + 32 + 32 + 64 + 3*128 + 8 = 848)"
for remat in none selective full; do
  compile "$MODEL" --remat $remat -o model-$remat
  ./model-$remat gradcheck > gc-$remat.txt || { cat gc-$remat.txt; die "gradcheck failed (remat=$remat)"; }
  tail -1 gc-$remat.txt
done

write_shards data 32 4000 400 7
./model-selective train --data data --steps 150 --lr 1e-2 --warmup 10 --eval-every 150 --run-dir run --quiet > train.txt
first=$("$PY" -c 'import json; print(json.loads(open("run/metrics.jsonl").readline())["loss"])')
val=$("$PY" -c 'import json; print([json.loads(l) for l in open("run/metrics.jsonl") if "val_loss" in l][-1]["val_loss"])')
echo "hand-written model: first loss $first, final val loss $val"
"$PY" -c "import sys; sys.exit(0 if $val < $first - 1.0 else 1)" || die "training did not lower the loss ($first -> $val)"
