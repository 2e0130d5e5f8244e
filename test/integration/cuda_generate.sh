# Generation on the GPU, emulated (--target cuda --cuda-emulate): @prefill
# writes the KV cache, @decode attends over it (runtime/cuda/kernels/
# attention_cached.cuh), rope_at reads the position from device memory, and
# the sampled tokens must be the CPU binary's. A small GQA model (4 heads
# over 2 KV heads, head_dim 16) trained on fortunes for 150 updates on the
# CPU, greedy decoding:
#   - fp32 storage: the same tokens as the CPU binary, for a prompt of
#     several prefill chunks (the last one padded) and for a prompt whose
#     last chunk would overrun the cache (decode steps), continued until the
#     cache is full; `generate --cpu` on the CUDA binary is the CPU path;
#   - sampling (temperature, top-k, seed): the same draws as the CPU;
#   - bf16 storage (bf16 weights and cache, fp32 logits): the continuation
#     agrees with the CPU's for its first characters (bf16 rounding may flip
#     a close argmax later on; the count is printed);
#   - the --target cuda training binary generates on the device too.
source "$(dirname "$0")/common.sh" "$@"

fortunes_gqa fortunes-gpu-gen
# Cache of 60 positions (not a multiple of the 8-token prefill chunk).
shape=(--config model.json --seq-len 64 --gen-chunk 8 --kv-capacity 60)
compile "${shape[@]}" --batch 8 -o model
compile "${shape[@]}" --mode generate -o cpu-gen
compile "${shape[@]}" --mode generate --target cuda --cuda-emulate --cuda-activations f32 -o gpu-gen
compile "${shape[@]}" --mode generate --target cuda --cuda-emulate --cuda-activations bf16 \
  -o gpu-gen-bf16
./model train --data shards --steps 150 --lr 2e-3 --warmup 15 --seed 3 --run-dir run --quiet \
  > train.out 2>&1 || { cat train.out; die "training failed"; }

gen() {  # BINARY PROMPT MAX_TOKENS [FLAGS...]: greedy unless FLAGS set --temperature
  local bin=$1 prompt=$2 n=$3; shift 3
  local greedy=(--temperature 0)
  [[ " $* " == *" --temperature "* ]] && greedy=()
  ./$bin generate --checkpoint run --tokenizer tok.model --prompt "$prompt" \
    --max-tokens $n "${greedy[@]}" "$@"
}
prompt1="The trouble with the world is that the stupid are cocksure and the intelligent"
want=$(gen cpu-gen "$prompt1" 24 2> cpu.err) || { cat cpu.err; die "CPU generate failed"; }
got=$(gen gpu-gen "$prompt1" 24 2> gpu.err) || { cat gpu.err; die "emulated GPU generate failed"; }
grep -q "generated on the device: CUDA emulated.*fp32 weights and KV cache" gpu.err ||
  die "the CUDA binary did not generate on the device: $(cat gpu.err)"
grep -q "KV cache: prompt" gpu.err || die "no KV-cache report: $(cat gpu.err)"
[ "$got" = "$want" ] || die "fp32 GPU and CPU greedy generations differ:
gpu: $got
cpu: $want"
echo "fp32 GPU == CPU: $got"
# --report prints the generator's device memory by the layout it allocates with.
compile "${shape[@]}" --mode generate --target cuda --cuda-activations f32 --report > report.txt
want_bytes=$(grep -o "^cuda-generator-bytes: [0-9]*" report.txt | grep -o "[0-9]*$")
held=$(grep -o "([0-9]* bytes)" gpu.err | grep -o "[0-9]*")
[ -n "$want_bytes" ] && [ "$held" = "$want_bytes" ] ||
  die "the generator holds '$held' bytes, --report says '$want_bytes'"
echo "generator device memory: $held bytes, as --report says"
host=$(gen gpu-gen "$prompt1" 24 --cpu 2> host.err) || { cat host.err; die "generate --cpu failed"; }
grep -q "generated on the" host.err && die "generate --cpu still ran on the device"
[ "$host" = "$want" ] || die "generate --cpu differs from the CPU binary: $host"

# A prompt of 57..59 tokens: prefill chunks up to position 56, then decode
# steps (56 + 8 > 60), and the new tokens fill the cache.
prompt2=""
for w in $(seq 1 200); do
  prompt2="$prompt2 word$((w % 7))"
  p=$(gen cpu-gen "$prompt2" 0 2>&1 >/dev/null | grep -o "prompt [0-9]* tokens" | grep -o "[0-9]*")
  [ "$p" -ge 57 ] && break
done
[ "$p" -ge 57 ] && [ "$p" -le 59 ] || die "could not build a 57..59-token prompt (got $p)"
want=$(gen cpu-gen "$prompt2" 10 2> /dev/null) || die "CPU generate (full cache) failed"
got=$(gen gpu-gen "$prompt2" 10 2> full.err) || { cat full.err; die "GPU generate (full cache) failed"; }
grep -q "KV cache is full" full.err || die "expected the cache-full warning: $(cat full.err)"
[ "$got" = "$want" ] || die "at the cache's end, GPU and CPU generations differ:
gpu: $got
cpu: $want"
echo "cache-full case: same tokens as the CPU"

# Sampling (temperature 0.9, top-k 40, seeded) draws the same tokens from
# the fp32 GPU logits as from the CPU's: a varied continuation, not only
# greedy's repetitions.
sample=(--temperature 0.9 --top-k 40 --seed 7)
want=$(gen cpu-gen "$prompt1" 32 "${sample[@]}" 2> /dev/null) || die "CPU sampling failed"
got=$(gen gpu-gen "$prompt1" 32 "${sample[@]}" 2> /dev/null) || die "GPU sampling failed"
[ "$got" = "$want" ] || die "fp32 GPU and CPU samples differ:
gpu: $got
cpu: $want"
echo "sampled, GPU == CPU: $got"

# bf16 storage: the greedy continuation against the CPU's, character by
# character; at least its first 10 characters (or all of it) agree.
got=$(gen gpu-gen-bf16 "$prompt1" 24 2> bf16.err) || { cat bf16.err; die "bf16 GPU generate failed"; }
grep -q "bf16 weights and KV cache" bf16.err || die "not a bf16 generator: $(cat bf16.err)"
want=$(gen cpu-gen "$prompt1" 24 2> /dev/null)
same=$("$PY" - "$got" "$want" "$prompt1" <<'PYEOF'
import sys
got, want, prompt = sys.argv[1:4]
assert got.startswith(prompt) and want.startswith(prompt)
g, w = got[len(prompt):], want[len(prompt):]
k = 0
while k < min(len(g), len(w)) and g[k] == w[k]:
    k += 1
print(k if k < max(len(g), len(w)) else "all")
PYEOF
)
echo "bf16 GPU: $got"
echo "bf16 GPU agrees with the CPU on $same characters of the continuation"
[ "$same" = all ] || [ "$same" -ge 10 ] || die "bf16 GPU generation diverges from the CPU after $same characters"

# The training binary carries the device generator too.
compile "${shape[@]}" --batch 8 --target cuda --cuda-emulate --cuda-activations f32 -o gpu-train
got=$(gen gpu-train "$prompt1" 12 2> train-gen.err) || { cat train-gen.err; die "generate with the CUDA training binary failed"; }
grep -q "generated on the device" train-gen.err || die "the training binary generated on the host"
[ "$got" = "$(gen cpu-gen "$prompt1" 12 2>/dev/null)" ] || die "the CUDA training binary's generation differs: $got"
echo "cuda_generate: ok"
