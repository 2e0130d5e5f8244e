# The runtime's tokenizer.json path against its tokenizer.model path, on a
# compiled model: a SentencePiece tokenizer trained on fortunes is converted
# to tokenizer.json the way transformers' LlamaConverter does
# (llama_converter.py, a Python port independent of the C++ one in
# test/unit/tokenizer_test.cpp), in a folder with the tokenizer_config.json
# that LlamaTokenizerFast.save_pretrained writes next to it (which names the
# EOS: a Llama tokenizer.json alone names only the BOS, in its template).
# Whether --tokenizer names the .model, the .json or that folder:
#   - `generate` prints the same text (greedy with and without the KV cache,
#     and sampled with a seed), for prompts with leading spaces, tabs,
#     newlines and characters only byte fallback can spell;
#   - `eval --tasks` prints the same accuracy and writes the same details
#     (every context and continuation token id, every log-likelihood), and
#     so does the .json alone, whose template supplies the BOS;
#   - `export --tokenizer tokenizer.json` writes an HF folder (tokenizer.json
#     copied, LlamaTokenizerFast config) that generates and scores the same.
# A tokenizer.json without merges is refused with one line naming it, so the
# runs above did read the .json.
source "$(dirname "$0")/common.sh" "$@"
TASKS=$SRC/test/integration/Inputs/eval_tasks.jsonl

FORTUNES=/usr/share/games/fortunes
corpus=()
for f in wisdom platitudes fortunes tao education; do
  [ -f $FORTUNES/$f ] || die "$FORTUNES/$f missing: install the 'fortunes' package (tools/install-deps)"
  corpus+=($FORTUNES/$f)
done
"$BIN/llama-tokenize" train --input "${corpus[@]}" --separator % --vocab-size 512 -o tok.model > tok.out 2>&1 \
  || { cat tok.out; die "tokenizer training failed"; }
"$BIN/llama-tokenize" encode --tokenizer tok.model --input "${corpus[@]}" --separator % \
  --val-fraction 0.05 -o shards > enc.out 2>&1 || { cat enc.out; die "encoding failed"; }
mkdir json
"$PY" "$SRC/test/integration/llama_converter.py" tok.model json/tokenizer.json \
  || die "llama_converter.py failed"
"$PY" - <<'PYEOF' || die "the converted tokenizer.json is not what LlamaConverter writes"
import json
t = json.load(open("json/tokenizer.json"))
m = t["model"]
assert len(m["vocab"]) == 512, len(m["vocab"])
assert [a["content"] for a in t["added_tokens"]] == ["<unk>", "<s>", "</s>"], t["added_tokens"]
bytes_ = [p for p in m["vocab"] if len(p) == 6 and p.startswith("<0x") and p.endswith(">")]
assert len(bytes_) == 256, len(bytes_)  # byte fallback pieces
# BPE: every other piece longer than one character is the merge of two.
merged = {l + r for l, r in m["merges"]}
longer = [p for p in m["vocab"] if len(p) > 1 and p not in bytes_ and not p.startswith("<")]
assert longer and all(p in merged for p in longer), [p for p in longer if p not in merged][:5]
print(f"tokenizer.json: {len(m['vocab'])} tokens, {len(m['merges'])} merges")
# As LlamaTokenizerFast.save_pretrained writes it (the fields that matter).
json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
           "unk_token": "<unk>", "pad_token": None, "clean_up_tokenization_spaces": False,
           "legacy": True, "tokenizer_class": "LlamaTokenizerFast"},
          open("json/tokenizer_config.json", "w"), indent=2)
PYEOF
mkdir bare
cp json/tokenizer.json bare/

compile --preset micro --emit hf-config -o micro.json
"$PY" -c "
import json
c = json.load(open('micro.json'))
c.update(_name_or_path='fortunes-tokenizer-json', vocab_size=512, hidden_size=64, num_hidden_layers=2,
         num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=176,
         max_position_embeddings=64)
json.dump(c, open('model.json', 'w'))"
compile --config model.json --batch 8 --seq-len 32 --gen-chunk 8 --kv-capacity 64 -o model
./model train --data shards --steps 100 --lr 2e-3 --warmup 10 --seed 1 --run-dir run --quiet \
  > train.out 2>&1 || { cat train.out; die "training failed"; }

# --- generate ------------------------------------------------------------------
gen() { # CHECKPOINT TOKENIZER PROMPT [FLAGS...] -> the text
  local checkpoint=$1 tok=$2 prompt=$3; shift 3
  ./model generate --checkpoint "$checkpoint" --tokenizer "$tok" --prompt "$prompt" --max-tokens 24 "$@" \
    2> gen.err || { cat gen.err; die "generate --tokenizer $tok failed"; }
}
prompts=("The fool doth think he is wise" "  two leading spaces,	a tab" $'line one\nline two'
  "Zürich café: naïve 🦙 ideas" "")
modes=("--temperature 0" "--temperature 0 --no-kv-cache" "--temperature 0.9 --top-k 40 --top-p 0.9 --seed 5")
n=0
for prompt in "${prompts[@]}"; do
  for mode in "${modes[@]}"; do
    # shellcheck disable=SC2086 # $mode is a list of flags
    want=$(gen run tok.model "$prompt" $mode)
    [ ${#want} -gt ${#prompt} ] || die "generate added no text to '$prompt' ($mode): '$want'"
    for tok in json/tokenizer.json json; do
      # shellcheck disable=SC2086
      got=$(gen run $tok "$prompt" $mode)
      [ "$got" = "$want" ] || die "generate $mode --prompt '$prompt' differs with --tokenizer $tok:
tokenizer.model: $want
$tok: $got"
    done
    n=$((n + 1))
  done
done
echo "generate: $n prompt x mode runs identical with tokenizer.model, tokenizer.json and its folder"
echo "  e.g. $(gen run json "${prompts[3]}" --temperature 0 | "$PY" -c 'import sys; print(repr(sys.stdin.read()))')"

# --- eval --tasks ----------------------------------------------------------------
evaluate() { # CHECKPOINT TOKENIZER NAME -> NAME.out, NAME.jsonl
  ./model eval --checkpoint "$1" --tokenizer "$2" --tasks "$TASKS" --details "$3.jsonl" > "$3.out" 2> eval.err \
    || { cat eval.err; die "eval --tasks --tokenizer $2 failed"; }
}
evaluate run tok.model eval-model
evaluate run json/tokenizer.json eval-json
evaluate run json eval-folder
evaluate run bare/tokenizer.json eval-bare
for name in eval-json eval-folder eval-bare; do
  cmp eval-model.out $name.out || die "eval --tasks output differs: $(cat eval-model.out) vs $(cat $name.out)"
  cmp eval-model.jsonl $name.jsonl || die "eval --tasks details (token ids, log-likelihoods) differ in $name"
done
[ "$(wc -l < eval-model.jsonl)" -eq "$(grep -c . "$TASKS")" ] || die "details should have one line per task item"
echo "eval --tasks: identical ($(cat eval-model.out)), $(wc -l < eval-model.jsonl) items of details"

# --- export --tokenizer tokenizer.json ----------------------------------------------
./model export --checkpoint run --format hf --out hf --tokenizer json/tokenizer.json > export.out \
  || die "export --tokenizer tokenizer.json failed"
cmp json/tokenizer.json hf/tokenizer.json || die "tokenizer.json was not copied verbatim"
[ ! -e hf/tokenizer.model ] || die "export wrote a tokenizer.model for a tokenizer.json"
"$PY" - <<'PYEOF' || die "the exported tokenizer config is wrong"
import json
tc = json.load(open("hf/tokenizer_config.json"))
assert tc["tokenizer_class"] == "LlamaTokenizerFast", tc
assert tc["add_bos_token"] is True and tc["add_eos_token"] is False, tc
assert (tc["bos_token"], tc["eos_token"], tc["unk_token"], tc["pad_token"]) == ("<s>", "</s>", "<unk>", None), tc
assert "legacy" not in tc and "sp_model_kwargs" not in tc, tc
PYEOF
want=$(gen run tok.model "${prompts[0]}" --temperature 0)
[ "$(gen hf hf "${prompts[0]}" --temperature 0)" = "$want" ] || die "generate from the exported folder differs"
evaluate hf hf eval-hf
cmp eval-model.jsonl eval-hf.jsonl || die "eval --tasks on the exported folder differs"
echo "export: tokenizer.json + LlamaTokenizerFast config; generate and eval from it identical"

# --- the .json is what was read -----------------------------------------------------
"$PY" -c "
import json
t = json.load(open('json/tokenizer.json'))
del t['model']['merges']
json.dump(t, open('broken.json', 'w'))"
if ./model generate --checkpoint run --tokenizer broken.json --prompt x > /dev/null 2> broken.err; then
  die "generate accepted a tokenizer.json without merges"
fi
[ "$(wc -l < broken.err)" -eq 1 ] && grep -q "broken.json" broken.err && grep -q "merges" broken.err \
  || { cat broken.err; die "want one line naming broken.json and its missing merges"; }
echo "broken tokenizer.json: $(cat broken.err)"
echo "tokenizer_json: PASS"
