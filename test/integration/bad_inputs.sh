# Every bad input is a one-line error that names the offending file or flag:
# a non-zero exit below 128 (a signal is a crash), nothing but that one line on
# stderr, no crash or abort text, no hang. Each case has a good twin that
# succeeds, so the error is known to come from the one thing that was broken.
source "$(dirname "$0")/common.sh" "$@"

# expect_error LABEL NEEDLES CMD...: CMD fails cleanly with exactly one stderr
# line containing every '|'-separated fixed string of NEEDLES.
expect_error() {
  local label=$1 needles=$2; shift 2
  local rc=0
  timeout -k 5 60 "$@" > err.out 2> err.txt || rc=$?
  [ $rc -ne 124 ] || die "$label: hung (killed after 60 s): $*"
  [ $rc -ne 0 ] || die "$label: exited 0: $*"
  [ $rc -lt 128 ] || { cat err.txt; die "$label: killed by signal $((rc - 128)): $*"; }
  ! grep -q -e 'Segmentation' -e 'terminate called' -e 'Assertion' -e 'Aborted' -e 'Stack dump' err.txt \
    || { cat err.txt; die "$label: crash text on stderr: $*"; }
  local lines
  lines=$(wc -l < err.txt)
  [ "$lines" -eq 1 ] || { cat err.txt; die "$label: want exactly one stderr line, got $lines: $*"; }
  local n list
  IFS='|' read -r -a list <<< "$needles"
  for n in "${list[@]}"; do
    grep -qF -- "$n" err.txt || { cat err.txt; die "$label: the error does not mention '$n': $*"; }
  done
  echo "ok  $label (exit $rc): $(cat err.txt)"
}

expect_ok() {
  local label=$1; shift
  timeout -k 5 60 "$@" > ok.out 2>&1 || { cat ok.out; die "$label: the good twin failed: $*"; }
}

compile --preset micro --batch 2 --seq-len 16 -o micro

# --- safetensors given to verify --weights ---------------------------------
# Good weights come from a 1-step training run; the batch is a valid
# input_ids [batch, seq_len + 1] int32 tensor, so only the weights are bad.
write_shards data 64 4000 1000 1
expect_ok "train 1 step" ./micro train --data data --steps 1 --run-dir good --quiet
cp good/checkpoints/step_000001/model.safetensors weights.safetensors
"$PY" - <<'PYEOF'
import json, struct
b, t = 2, 17
body = struct.pack("<%di" % (b * t), *[(i * 5) % 64 for i in range(b * t)])
hdr = json.dumps({"input_ids": {"dtype": "I32", "shape": [b, t], "data_offsets": [0, len(body)]}}).encode()
hdr += b" " * (-len(hdr) % 8)
open("batch.safetensors", "wb").write(struct.pack("<Q", len(hdr)) + hdr + body)

w = open("weights.safetensors", "rb").read()
open("truncated.safetensors", "wb").write(w[: len(w) * 2 // 3])
open("stub.safetensors", "wb").write(w[:5])
open("longheader.safetensors", "wb").write(struct.pack("<Q", len(w) + 4096) + w[8:])
PYEOF
expect_ok "verify good weights" ./micro verify --weights weights.safetensors --batch-file batch.safetensors --out grads.safetensors
expect_error "truncated safetensors" "truncated.safetensors" \
  ./micro verify --weights truncated.safetensors --batch-file batch.safetensors --out grads.safetensors
expect_error "safetensors shorter than its length prefix" "stub.safetensors" \
  ./micro verify --weights stub.safetensors --batch-file batch.safetensors --out grads.safetensors
expect_error "safetensors header length past the end" "longheader.safetensors" \
  ./micro verify --weights longheader.safetensors --batch-file batch.safetensors --out grads.safetensors

# --- token shards given to train --data ------------------------------------
# Shards are 64-byte header + uint16 tokens (runtime/data/shards.h).
mkdir corrupt truncated
cp data/* corrupt/
cp data/* truncated/
"$PY" - <<'PYEOF'
b = bytearray(open("corrupt/train_00000.tok", "rb").read())
b[64 + 2 * 1000] ^= 0x01          # one bit of token 1000
open("corrupt/train_00000.tok", "wb").write(b)
b = open("truncated/train_00000.tok", "rb").read()
open("truncated/train_00000.tok", "wb").write(b[: len(b) - 200])
PYEOF
write_shards bigvocab 65 4000 1000 1
expect_error "corrupt shard" "corrupt/train_00000.tok|checksum" \
  ./micro train --data corrupt --steps 1 --run-dir r --quiet
expect_error "truncated shard" "truncated/train_00000.tok" \
  ./micro train --data truncated --steps 1 --run-dir r --quiet
expect_error "shard vocab larger than the model's" "bigvocab/train_00000.tok|65" \
  ./micro train --data bigvocab --steps 1 --run-dir r --quiet
expect_error "missing --data dir" "no-such-dir" \
  ./micro train --data no-such-dir --steps 1 --run-dir r --quiet
expect_error "--data without shards" "--data" \
  ./micro train --data good --steps 1 --run-dir r --quiet
expect_error "unknown train flag" "--no-such-flag" \
  ./micro train --data data --steps 1 --no-such-flag
expect_error "non-integer --steps" "--steps|abc" \
  ./micro train --data data --steps abc

# --- generate --------------------------------------------------------------
# A tokenizer needs >= 259 pieces (specials + bytes), more than micro's 64, so
# generation gets a model with room for a 512-piece tokenizer.
expect_error "generate with a missing tokenizer" "no-such.model" \
  ./micro generate --checkpoint good --tokenizer no-such.model --prompt "hello"
"$BIN/llama-compile" --preset micro --emit hf-config -o micro.json
"$PY" - <<'PYEOF'
import json
c = json.load(open("micro.json"))
c["vocab_size"] = 512
c["_name_or_path"] = "micro-512"
json.dump(c, open("micro512.json", "w"))
PYEOF
compile --config micro512.json --batch 2 --seq-len 16 -o micro512
"$BIN/llama-tokenize" train --input /usr/share/games/fortunes/fortunes --separator % --vocab-size 512 -o tok.model > /dev/null
write_shards data512 512 4000 1000 1
expect_ok "train micro512" ./micro512 train --data data512 --steps 1 --run-dir good512 --quiet
expect_ok "generate" ./micro512 generate --checkpoint good512 --tokenizer tok.model --prompt "hello" --max-tokens 4
expect_error "generate from a missing checkpoint" "no-such-run" \
  ./micro512 generate --checkpoint no-such-run --tokenizer tok.model --prompt "hello"
expect_error "generate from another model's checkpoint" "model.safetensors|embed_tokens" \
  ./micro512 generate --checkpoint good --tokenizer tok.model --prompt "hello"
expect_error "tokenizer larger than the model's vocab" "tok.model" \
  ./micro generate --checkpoint good --tokenizer tok.model --prompt "hello"

# --- llama-compile ---------------------------------------------------------
"$PY" - <<'PYEOF'
import json
c = json.load(open("micro.json"))
c["num_attention_heads"] = 3         # 16 / 3: no whole head size
c["num_key_value_heads"] = 1
del c["head_dim"]                    # an explicit head_dim would make it legal
json.dump(c, open("heads.json", "w"))
PYEOF
printf '{"hidden_size": 16,,}\n' > broken.json
printf 'this is { not MLIR %%0 = \n' > garbage.mlir
expect_ok "compile the good config" "$BIN/llama-compile" --config micro.json --seq-len 64 -o good-config
expect_error "unknown preset" "no-such-preset" "$BIN/llama-compile" --preset no-such-preset -o out
expect_error "missing --config file" "no-such-config.json" "$BIN/llama-compile" --config no-such-config.json -o out
expect_error "heads do not divide hidden_size" "heads.json|num_attention_heads" \
  "$BIN/llama-compile" --config heads.json -o out
expect_error "config.json that is not JSON" "broken.json" "$BIN/llama-compile" --config broken.json -o out
expect_error "--seq-len above max_position_embeddings" "seq-len|65|max_position_embeddings" \
  "$BIN/llama-compile" --config micro.json --seq-len 65 -o out
[ ! -e out ] || die "a failed llama-compile left its output file behind"

# Malformed MLIR: MLIR's own diagnostics (file:line:col, the source line, a
# caret) come first, then llama-compile's one-line summary naming the file.
rc=0
timeout -k 5 60 "$BIN/llama-compile" garbage.mlir -o out > err.out 2> err.txt || rc=$?
[ $rc -ne 0 ] && [ $rc -lt 124 ] || { cat err.txt; die "malformed MLIR: exit $rc"; }
head -1 err.txt | grep -qE '^garbage\.mlir:[0-9]+:[0-9]+: error: ' \
  || { cat err.txt; die "malformed MLIR: first line is not a garbage.mlir:LINE:COL diagnostic"; }
tail -1 err.txt | grep -qE '^llama-compile: .*garbage\.mlir' \
  || { cat err.txt; die "malformed MLIR: last line is not llama-compile's summary naming the file"; }
! grep -q -e 'Segmentation' -e 'terminate called' -e 'Assertion' -e 'Stack dump' err.txt \
  || { cat err.txt; die "malformed MLIR: crash text"; }
[ ! -e out ] || die "llama-compile left an output file for malformed MLIR"
echo "ok  malformed MLIR (exit $rc): $(head -1 err.txt) ... $(tail -1 err.txt)"
