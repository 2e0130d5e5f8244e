#!/usr/bin/env python3
"""Seeds for test/fuzz/tokenizer_fuzz: two small tokenizer.json files in the
shapes of Llama-2's and Llama-3's, built from the .vocab file that
`llama-tokenize train` writes next to its model (one "piece<TAB>score" line
per id). The fuzzer's inputs are capped at 64 KiB, far below the real files.

    make_fuzz_seeds.py tok.vocab OUT_DIR   ->  OUT_DIR/llama2-style.json, llama3-style.json

Llama-2 style: the pieces as they are, merges of every split into two pieces
(ordered by id), the legacy normalizer, byte fallback, the <s> template and
the SentencePiece decoder chain. Llama-3 style: the 256 byte-level characters
plus every piece spelled in them, the Llama-3 Split regex, ByteLevel, special
tokens after the vocabulary, ignore_merges, the <|begin_of_text|> template.
"""
import json
import sys

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def special(i, content):
    return {"id": i, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": True}


def template(token, token_id):
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [], "special_tokens": {token: {"id": token, "ids": [token_id], "tokens": [token]}}}


def merges_of(ids):
    by_id = {i: p for p, i in ids.items()}
    out = []
    for i in range(len(by_id)):
        p = by_id[i]
        out += [[p[:k], p[k:]] for _, k in sorted(
            ((ids[p[:k]], ids[p[k:]]), k) for k in range(1, len(p)) if p[:k] in ids and p[k:] in ids)]
    return out


def byte_level_table():
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    rest = [b for b in range(256) if b not in printable]
    return {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(rest)}


def main():
    vocab_file, out = sys.argv[1], sys.argv[2]
    pieces = [line.rstrip("\n").split("\t")[0] for line in open(vocab_file, encoding="utf-8")]
    ids = {p: i for i, p in enumerate(pieces)}
    llama2 = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": template("<s>", 1),
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "vocab": ids,
                  "merges": [" ".join(m) for m in merges_of(ids)]},
    }
    table = byte_level_table()
    byte_level = {table[b]: b for b in range(256)}
    for p in pieces:
        if not (p.startswith("<") and p.endswith(">")):  # control and <0xAB> pieces
            byte_level.setdefault("".join(table[b] for b in p.replace("\u2581", " ").encode()),
                                  len(byte_level))
    n = len(byte_level)
    llama3 = {
        "version": "1.0",
        "added_tokens": [special(n, "<|begin_of_text|>"), special(n + 1, "<|end_of_text|>"),
                         special(n + 2, "<|eot_id|>")],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            template("<|begin_of_text|>", n)]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": True, "vocab": byte_level, "merges": merges_of(byte_level)},
    }
    for name, tok in (("llama2-style", llama2), ("llama3-style", llama3)):
        with open(f"{out}/{name}.json", "w", encoding="utf-8") as f:
            json.dump(tok, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
