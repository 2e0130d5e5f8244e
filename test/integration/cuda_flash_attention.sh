# The tensor-core flash attention, forward (runtime/cuda/kernels/
# flash_attention_sm90.cuh, TMA + wgmma, at these head dims 64 and 128) and
# backward (dQ and dK/dV there too), in whole emulated train steps:
# llama-compile picks them for bf16 storage and head dims that are multiples
# of 16 (backward: up to 128), and the emulated binary's `verify`
# step (loss and every gradient) must match the fp32 CPU binary's on the
# same weights and batch within bf16's tolerance (relative L2 3e-2, as
# cuda_train's micro bf16 check; measured 1.3e-2 and 1.5e-2, what the
# CUDA-core attention gives on these models too):
#   - head_dim 128, 4 query heads over 1 KV head (GQA 4), 2 sequences of 80
#     (128-row query tiles, 128-key tiles: partial tiles, a masked diagonal),
#     with Llama 3's RoPE scaling (theta 5e5, the llama3 bands);
#   - head_dim 64, 8 query heads over 1 KV head (GQA 8), one sequence of 136
#     (two 128-row query tiles, the second of 8 rows), with YaRN's RoPE
#     scaling (its ramp and its attention factor on cos and sin).
# fp32 storage keeps the CUDA-core kernel (checked by cuda_train and
# cuda_step_emulation); the generated source says which one each launcher uses.
source "$(dirname "$0")/common.sh" "$@"
export OMP_WAIT_POLICY=passive
REF="$PY $SRC/test/integration/llama_torch.py"

"$BIN/llama-compile" --preset micro --emit hf-config -o base.json
"$PY" - <<'PYEOF'
import json
c = json.load(open("base.json"))
json.dump(dict(c, _name_or_path="hd128", hidden_size=256, intermediate_size=384,
               num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=1, head_dim=128,
               max_position_embeddings=256, rope_theta=500000.0,
               rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
          open("hd128.json", "w"))
json.dump(dict(c, _name_or_path="hd64", hidden_size=128, intermediate_size=256,
               num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=1, head_dim=64,
               max_position_embeddings=256,
               rope_scaling={"rope_type": "yarn", "factor": 4.0,
                             "original_max_position_embeddings": 64}), open("hd64.json", "w"))
PYEOF

step() {  # NAME HEAD_DIM BATCH SEQ
  local name=$1 hd=$2 b=$3 s=$4
  local shape=(--config $name.json --batch $b --seq-len $s)
  compile "${shape[@]}" -o $name-cpu
  compile "${shape[@]}" --target cuda --emit kernels -o $name.cu
  grep -q "llk::flash_attention_forward_sm90<$hd>(" $name.cu &&
    grep -q "llk::flash_attention_backward_sm90<$hd>(" $name.cu ||
    die "$name: the bf16 source does not use the tensor-core attention"
  grep -q "scaled: the op's inv_freq" $name.cu ||
    die "$name: the CUDA RoPE does not use the IR's scaled frequencies"
  compile "${shape[@]}" --target cuda --cuda-activations f32 --emit kernels -o $name-f32.cu
  ! grep -q "flash_attention_forward" $name-f32.cu ||
    die "$name: fp32 storage must keep the CUDA-core attention"
  compile "${shape[@]}" --target cuda --cuda-emulate -o $name-emu
  ./$name-cpu info --config-json > $name-model.json
  $REF make-inputs --config $name-model.json --batch $b --seq $s --seed 5 --std 0.05 \
    --weights $name-w.safetensors --batch-file $name-i.safetensors --dtype f32 > /dev/null
  ./$name-cpu verify --weights $name-w.safetensors --batch-file $name-i.safetensors \
    --out $name-cpu.safetensors > /dev/null
  ./$name-emu verify --weights $name-w.safetensors --batch-file $name-i.safetensors \
    --out $name-emu.safetensors > /dev/null 2> $name-emu.err ||
    { cat $name-emu.err; die "$name: the emulated bf16 step failed"; }
  $REF compare --grads $name-emu.safetensors --reference $name-cpu.safetensors --rtol 3e-2 \
    --metric l2 --label "$name (GQA, bf16 flash attention) vs fp32 CPU step" ||
    die "$name: the emulated flash-attention step differs from the CPU step"
}

step hd128 128 2 80
step hd64 64 1 136
grep -q "static constexpr float kScale = 1.13862944f" hd64.cu ||
  die "hd64: YaRN's attention factor (0.1 ln 4 + 1) is not on the CUDA RoPE"

# Training through it: 12 updates of hd64 (seq 136) on patterned tokens, the
# emulated bf16 binary against the fp32 CPU binary: the loss falls and
# every update's loss is within 2% of the CPU's.
write_shards data 64 6000 1000 7
T=(--data data --steps 12 --lr 5e-3 --eval-every 0 --quiet)
./hd64-cpu train "${T[@]}" --run-dir run-cpu > /dev/null 2>&1 || die "hd64: CPU training failed"
./hd64-emu train "${T[@]}" --run-dir run-emu > emu-train.out 2>&1 ||
  { cat emu-train.out; die "hd64: emulated bf16 training failed"; }
"$PY" - <<'PYEOF' || die "hd64: the bf16 flash-attention run does not track the fp32 CPU run"
import json, sys
def losses(d):
    return [r["loss"] for r in map(json.loads, open(d + "/metrics.jsonl")) if "loss" in r]
a, b = losses("run-cpu"), losses("run-emu")
worst = max(abs(x - y) / x for x, y in zip(a, b))
print("hd64 training, bf16 flash attention vs fp32 CPU: loss %.4f -> %.4f (CPU %.4f -> %.4f), "
      "max per-update difference %.2e" % (b[0], b[-1], a[0], a[-1], worst))
sys.exit(0 if len(a) == len(b) == 12 and b[-1] < b[0] - 0.1 and worst < 2e-2 else 1)
PYEOF
echo "cuda_flash_attention: ok"
