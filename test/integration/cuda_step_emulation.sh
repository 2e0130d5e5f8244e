# The whole generated CUDA train step of micro (llama_cuda_train_step: every
# kernel launcher and GEMM in program order over one arena, in-place buffers
# as planned) run on the CPU through runtime/cuda/emulate.h, with the CPU
# runtime's BLAS matmul in place of cuBLASLt: loss and every gradient against
# the float64 PyTorch reference (rel. 1e-4, as the CPU target) and against
# the CPU binary's own `verify` (rel. 1e-5). fp32 storage (the only one the
# host step is generated for so far). Covers GQA (micro) and tied
# embeddings under remat none.
source "$(dirname "$0")/common.sh" "$@"
REF="$PY $SRC/test/integration/llama_torch.py"
RUNTIME="$BUILD/runtime/libllamart_nomain.a"
BLAS=$(ls /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so* | head -1)

"$BIN/llama-compile" --preset micro --emit hf-config -o base.json
"$PY" - <<'PYEOF'
import json
c = json.load(open("base.json"))
json.dump(dict(c, _name_or_path="tied", tie_word_embeddings=True), open("tied.json", "w"))
PYEOF

check() {  # NAME COMPILE_ARGS...
  local name=$1; shift
  compile "$@" --target cuda --emit kernels --cuda-activations f32 -o $name.cu
  compile "$@" -o $name-cpu
  cp $name.cu $name.cpp
  g++ -std=c++17 -O1 -fopenmp -fPIC -shared -DLLAMA_CUDA_EMULATE -I"$SRC" \
    $name.cpp "$RUNTIME" "$BLAS" -o $name.so
  ./$name-cpu info --config-json > $name.json
  local b s
  b=$("$PY" -c "import json,sys; print(json.load(sys.stdin)['batch'])" < <(./$name-cpu info --json))
  s=$("$PY" -c "import json,sys; print(json.load(sys.stdin)['seq_len'])" < <(./$name-cpu info --json))
  $REF make-inputs --config $name.json --batch $b --seq $s --seed 21 --std 0.05 \
    --weights w.safetensors --batch-file i.safetensors --dtype f32 >/dev/null
  OMP_WAIT_POLICY=passive "$PY" "$SRC/test/integration/cuda_step_emulation.py" \
    ./$name.so w.safetensors i.safetensors $name-gpu.safetensors
  $REF check --config $name.json --weights w.safetensors --batch-file i.safetensors \
    --grads $name-gpu.safetensors --rtol 1e-4 > $name-check.txt ||
    { cat $name-check.txt; die "$name: the generated CUDA step differs from PyTorch"; }
  echo "$name vs PyTorch: $(tail -1 $name-check.txt)"
  ./$name-cpu verify --weights w.safetensors --batch-file i.safetensors --out $name-cpu.safetensors >/dev/null
  "$PY" - $SRC/test/integration $name-gpu.safetensors $name-cpu.safetensors <<'PYEOF' || die "$name: CUDA step and CPU binary differ"
import sys
sys.path.insert(0, sys.argv[1])
from llama_torch import read_safetensors, relative_error
a, _ = read_safetensors(sys.argv[2])
b, _ = read_safetensors(sys.argv[3])
worst = max(relative_error(a[n], b[n].double()) for n in b)
print("vs the CPU binary: max relative difference %.3e over %d tensors" % (worst, len(b)))
sys.exit(0 if worst < 1e-5 else 1)
PYEOF
}

check micro --preset micro --batch 2 --seq-len 8
check tied --config tied.json --batch 2 --seq-len 8 --remat none
echo "cuda_step_emulation: ok"
