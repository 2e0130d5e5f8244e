# The CUDA kernels llama-compile generates (--target cuda --emit kernels),
# run on the CPU through runtime/cuda/emulate.h and checked op by op against
# float64 PyTorch (cuda_emulation.py), in fp32 and bf16 storage: micro at
# 80 rows (the norm weight gradient's row chunks hold several rows) and a
# wider model (rows of 384 and 1000 elements: multi-warp reductions; head_dim
# 64 over two lane slots, GQA 6/2 heads, tied embeddings; in bf16 its
# attention is the tensor-core kernel). Where nvcc exists the same sources also
# compile for sm_90a. Proves the kernels' indexing, reductions, aliasing and
# numerics, not their speed on a GPU; the emulator's coalescing counters
# (LLAMA_EMULATE_COUNT=1) must show every kernel of runtime/cuda/kernels at
# 90% or more of the ideal 32-byte sectors per warp request, and its bank
# counters 90% of the ideal shared-memory wavefronts (cuda_emulation.py's
# BANK_MIN names the exceptions and why).
source "$(dirname "$0")/common.sh" "$@"

"$BIN/llama-compile" --preset micro --emit hf-config -o base.json
"$PY" - <<'PYEOF'
import json
c = json.load(open("base.json"))
json.dump(dict(c, _name_or_path="wide", hidden_size=384, intermediate_size=1024, num_hidden_layers=1,
               num_attention_heads=6, num_key_value_heads=2, head_dim=64, vocab_size=1000,
               tie_word_embeddings=True), open("wide.json", "w"))
PYEOF

NVCC=${CUDACXX:-/usr/local/cuda/bin/nvcc}
# The fp32 source also holds the host step, whose GEMMs run on the CPU
# runtime's matmul under emulation.
RUNTIME="$BUILD/runtime/libllamart_nomain.a"
BLAS=$(ls /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so* | head -1)
run() {  # NAME ACTIVATIONS SEED COMPILE_ARGS...
  local name=$1 act=$2 seed=$3; shift 3
  compile "$@" --target cuda --emit kernels --cuda-activations $act -o $name-$act.cu
  cp $name-$act.cu $name-$act.cpp
  g++ -std=c++17 -O1 -fopenmp -fPIC -shared -DLLAMA_CUDA_EMULATE -I"$SRC" \
    $name-$act.cpp "$RUNTIME" "$BLAS" -o $name-$act.so
  LLAMA_EMULATE_COUNT=1 OMP_WAIT_POLICY=passive "$PY" "$SRC/test/integration/cuda_emulation.py" \
    ./$name-$act.so $act $seed > $name-$act.txt || { cat $name-$act.txt; die "$name $act kernels differ"; }
  echo "$name $act: $(tail -1 $name-$act.txt)"
  [ "$name-$act" != wide-f32 ] || grep -E '^(coalescing|banks)' $name-$act.txt
  if [ -x "$NVCC" ]; then
    "$NVCC" -arch=sm_90a -std=c++17 -O3 -Werror all-warnings -I"$SRC" -c $name-$act.cu -o $name-$act.o ||
      die "nvcc rejects the generated $name $act kernels"
  fi
}

run micro f32 1 --preset micro --batch 5 --seq-len 16
run micro bf16 2 --preset micro --batch 2 --seq-len 8
run wide f32 3 --config wide.json --batch 1 --seq-len 8 --remat full
# bf16 with head_dim 64: the tensor-core flash attention forward
# (flash_attention.cuh; mma, ldmatrix and cp.async emulated), a query tile
# of 40 rows over one partial key tile.
run wide bf16 6 --config wide.json --batch 1 --seq-len 40 --remat full
# Without llama-fuse every op is its own kernel: rope, rope_grad, the norm
# gradient recomputing rstd, the cross-entropy gradient from a device dloss.
run unfused f32 4 --preset micro --batch 2 --seq-len 8 --no-fuse
run unfused bf16 5 --preset micro --batch 2 --seq-len 8 --no-fuse
if [ -x "$NVCC" ]; then
  # tiny (the quick-start model): its kernels and fp32 host step compile too.
  for act in bf16 f32; do
    compile --preset tiny --target cuda --emit kernels --cuda-activations $act -o tiny-$act.cu
    "$NVCC" -arch=sm_90a -std=c++17 -O3 -Werror all-warnings -I"$SRC" -c tiny-$act.cu -o tiny-$act.o ||
      die "nvcc rejects the generated tiny $act kernels"
  done
  echo "nvcc: all generated kernels (micro, wide, tiny) compile for sm_90a"
else
  echo "nvcc: not found, compile check skipped"
fi
echo "cuda_emulation: ok"
