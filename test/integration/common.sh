# Shared by the integration tests: tool paths, a scratch dir, helpers.
# Usage: source common.sh BUILD_DIR SRC_DIR
set -euo pipefail
BUILD=$(cd "$1" && pwd)
SRC=$(cd "$2" && pwd)
BIN=$BUILD/bin
PY=/usr/bin/python3   # Debian's python3-torch lives here
WORK=$(mktemp -d "${TMPDIR:-/tmp}/llama-it.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

die() { echo "FAIL: $*" >&2; exit 1; }
# launch N PROGRAM ARGS...: N local ranks, through llama-run when it is built.
launch() {
  local n=$1; shift
  if [ -x "$BIN/llama-run" ]; then
    "$BIN/llama-run" -n "$n" -- "$@"
  else
    mpirun --allow-run-as-root --oversubscribe --bind-to none \
      -x OMP_NUM_THREADS -x LLAMA_COMM_TIMEOUT_S -n "$n" "$@"
  fi
}
compile() { "$BIN/llama-compile" "$@"; }

# write_shards DIR VOCAB N_TRAIN N_VAL SEED: token shards (runtime/data/shards.h
# format) of a noisy repeating sequence, learnable but not trivial.
write_shards() {
  "$PY" - "$@" <<'PYEOF'
import os, random, struct, sys
d, vocab, ntrain, nval, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
os.makedirs(d, exist_ok=True)
rng = random.Random(seed)
def fnv(b):
    h = 0xcbf29ce484222325
    for x in b:
        h = ((h ^ x) * 0x100000001b3) & 0xffffffffffffffff
    return h
for split, n in (("train", ntrain), ("val", nval)):
    toks = [((i * 7 + (i // 13)) % vocab) if rng.random() > 0.1 else rng.randrange(vocab) for i in range(n)]
    dtype = 0 if vocab <= 65535 else 1
    body = struct.pack("<%d%s" % (n, "H" if dtype == 0 else "i"), *toks)
    hdr = b"LLMTOKS\0" + struct.pack("<IIQQQ", 1, dtype, vocab, n, fnv(body))
    open(os.path.join(d, "%s_00000.tok" % split), "wb").write(hdr + b"\0" * (64 - len(hdr)) + body)
PYEOF
}

# fortunes_corpus: sets the array `corpus` to the text files of the Debian
# fortunes package (real English text; tools/install-deps installs it).
fortunes_corpus() {
  local dir=/usr/share/games/fortunes f
  [ -d $dir ] || die "$dir missing: install the 'fortunes' package (tools/install-deps)"
  corpus=()
  for f in $dir/*; do
    case $f in *.dat | *.u8) continue ;; esac
    [ -f "$f" ] && [ ! -L "$f" ] && corpus+=("$f")
  done
  [ ${#corpus[@]} -gt 10 ] || die "only ${#corpus[@]} fortune files in $dir"
}

# fortunes_gqa NAME: in the current dir, a SentencePiece tokenizer of the
# fortunes corpus (tok.model, 512 pieces), its token shards (shards/, 5%
# validation) and model.json: a small GQA LLaMA named NAME (2 layers, width
# 64, 4 heads over 2 KV heads of 16, 64 positions, Llama 3 RoPE scaling).
fortunes_gqa() {
  fortunes_corpus
  "$BIN/llama-tokenize" train --input "${corpus[@]}" --separator % --vocab-size 512 -o tok.model
  "$BIN/llama-tokenize" encode --tokenizer tok.model --input "${corpus[@]}" --separator % \
    --val-fraction 0.05 -o shards
  "$BIN/llama-compile" --preset micro --emit hf-config -o micro.json
  "$PY" - "$1" <<'PYEOF'
import json, sys
c = json.load(open("micro.json"))
c.update({"_name_or_path": sys.argv[1], "vocab_size": 512, "hidden_size": 64,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "head_dim": 16, "intermediate_size": 176, "max_position_embeddings": 64,
          # Llama 3's RoPE (theta 5e5, the llama3 bands scaled from 48
          # positions: pair 0 kept, pair 1 smoothed, the rest divided), so
          # generation's rope_at runs scaled frequencies.
          "rope_theta": 500000.0,
          "rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 48}})
json.dump(c, open("model.json", "w"), indent=1)
PYEOF
}
