# Generation with the KV cache (@prefill / @decode) against the full-window
# @logits path, which torch_reference.sh checks against PyTorch: a small
# model trained on fortunes for 150 updates, greedy decoding, must give the
# same tokens both ways:
#   - a prompt of several prefill chunks (the last one padded),
#   - a prompt whose last chunk would overrun the cache (decode steps
#     instead), continued until the cache is full,
#   - the generation-only binary (llama-compile --mode generate) on the same
#     checkpoint, which refuses to train with a one-line message.
# Sampling with temperature / top-k / top-p and a seed is reproducible.
source "$(dirname "$0")/common.sh" "$@"

fortunes_gqa fortunes-kv
# Cache of 60 positions (not a multiple of the 8-token prefill chunk).
compile --config model.json --batch 8 --seq-len 64 --gen-chunk 8 --kv-capacity 60 -o model
compile --config model.json --seq-len 64 --gen-chunk 8 --kv-capacity 60 --mode generate -o model-gen
./model train --data shards --steps 150 --lr 2e-3 --warmup 15 --seed 3 --run-dir run --quiet \
  > train.out 2>&1 || { cat train.out; die "training failed"; }

gen() {  # BINARY PROMPT MAX_TOKENS [FLAGS...]; greedy unless FLAGS set --temperature
  local bin=$1 prompt=$2 n=$3; shift 3
  local greedy=(--temperature 0)
  [[ " $* " == *" --temperature "* ]] && greedy=()
  ./$bin generate --checkpoint run --tokenizer tok.model --prompt "$prompt" \
    --max-tokens $n "${greedy[@]}" "$@"
}
prompt1="The trouble with the world is that the stupid are cocksure and the intelligent"
a=$(gen model "$prompt1" 24 2> cached.err) || { cat cached.err; die "cached generate failed"; }
b=$(gen model "$prompt1" 24 --no-kv-cache 2> window.err) || { cat window.err; die "window generate failed"; }
[ "$a" = "$b" ] || die "KV-cache and full-window greedy generations differ:
cached: $a
window: $b"
grep -q "KV cache" cached.err || die "the cached run does not say it used the KV cache: $(cat cached.err)"
echo "cached == window: $a"
echo "speed: $(grep tokens/s cached.err) | window: $(grep tokens/s window.err)"

# A prompt of 57..59 tokens: prefill chunks up to position 56, then decode
# steps (56 + 8 > 60), and the new tokens fill the cache. Words are added
# until the tokenizer makes it that long (the cached run reports the count).
prompt2=""
for w in $(seq 1 200); do
  prompt2="$prompt2 word$((w % 7))"
  p=$(gen model "$prompt2" 0 2>&1 >/dev/null | grep -o "prompt [0-9]* tokens" | grep -o "[0-9]*")
  [ "$p" -ge 57 ] && break
done
[ "$p" -ge 57 ] && [ "$p" -le 59 ] || die "could not build a 57..59-token prompt (got $p)"
a=$(gen model "$prompt2" 10 2> full.err) || { cat full.err; die "cached generate (full cache) failed"; }
grep -q "KV cache is full" full.err || die "expected the cache-full warning: $(cat full.err)"
new=$(grep -o "^[0-9]* tokens" full.err | grep -o "^[0-9]*")
b=$(gen model "$prompt2" "$new" --no-kv-cache 2> /dev/null)
[ "$a" = "$b" ] || die "at the cache's end, cached and window generations differ:
cached: $a
window: $b"
echo "cache-full case: $new new tokens, same as the window path"

# The generation-only binary: same tokens from the same checkpoint.
c=$(gen model-gen "$prompt1" 24 2> /dev/null) || die "model-gen generate failed"
[ "$c" = "$(gen model "$prompt1" 24 2>/dev/null)" ] || die "--mode generate binary differs: $c"
if ./model-gen train --data shards --steps 1 --run-dir run2 2> refuse.err; then
  die "a --mode generate binary trained"
fi
grep -q "mode generate" refuse.err || die "unclear refusal: $(cat refuse.err)"

# Sampling is reproducible with a seed and differs across seeds.
s1=$(gen model "$prompt1" 20 --temperature 0.9 --top-k 40 --top-p 0.9 --seed 7 2>/dev/null) \
  || die "sampling failed"
s2=$(gen model "$prompt1" 20 --temperature 0.9 --top-k 40 --top-p 0.9 --seed 7 2>/dev/null)
s3=$(gen model "$prompt1" 20 --temperature 0.9 --top-k 40 --top-p 0.9 --seed 7 --no-kv-cache 2>/dev/null)
[ "$s1" = "$s2" ] || die "same seed, different samples"
[ "$s1" = "$s3" ] || die "same seed, cached and window samples differ"
echo "kv_generate: ok"
