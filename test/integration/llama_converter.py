#!/usr/bin/env python3
"""A SentencePiece BPE tokenizer.model as the tokenizer.json that transformers'
LlamaConverter (convert_slow_tokenizer.py, legacy=True) and LlamaTokenizerFast
write for it, in plain Python: the model's protobuf is read by hand, so
neither sentencepiece nor protobuf is needed.

    llama_converter.py tokenizer.model tokenizer.json

The parts, as transformers builds them:
  vocab    every piece by id; the first three (unk, bos, eos) score 0
  merges   SentencePieceExtractor: every split of a piece into two pieces
           (at code point boundaries), the splits of one piece ordered by the
           ids of their halves, all ordered by the piece's score, highest first
           (a stable sort: ties stay in vocabulary order)
  added    control and unknown pieces, as special tokens
  the rest Llama-2's: Prepend("▁") + Replace(" ", "▁") normalizer, no
           pre-tokenizer, BPE with byte fallback, the "<s> $A" template, and
           Replace("▁", " ") + ByteFallback + Fuse + Strip(1 leading space)
"""
import json
import struct
import sys

# sentencepiece_model.proto
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
BPE = 2


def varint(buf, pos):
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def fields(buf):
    """(field number, value) of a protobuf message; value is an int for
    varints, bytes for length-delimited fields and 32/64-bit raw bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def read_model(path):
    """[(piece, score, type)] by id, and the trainer's ids of bos/unk."""
    pieces, model_type, unk_id, bos_id = [], 1, 0, 1
    for number, value in fields(open(path, "rb").read()):
        if number == 1:  # ModelProto.pieces
            piece, score, kind = "", 0.0, NORMAL
            for n, v in fields(value):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", v)[0]
                elif n == 3:
                    kind = v
            pieces.append((piece, score, kind))
        elif number == 2:  # ModelProto.trainer_spec
            for n, v in fields(value):
                if n == 3:
                    model_type = v
                elif n == 40:
                    unk_id = v
                elif n == 41:
                    bos_id = v
    if model_type != BPE:
        sys.exit(f"{path}: not a BPE model (model_type {model_type})")
    return pieces, unk_id, bos_id


def convert(pieces, unk_id, bos_id):
    vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
    scored = [(piece, 0.0 if i < 3 else score) for i, (piece, score, _) in enumerate(pieces)]
    merges = []
    for piece, score in scored:
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        merges += sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]]))
    merges = [[l, r] for l, r, _ in sorted(merges, key=lambda m: m[2], reverse=True)]
    added = [{"id": i, "content": piece, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, (piece, _, kind) in enumerate(pieces) if kind in (CONTROL, UNKNOWN)]
    bos = pieces[bos_id][0]
    seq = lambda name, type_id: {"Sequence": {"id": name, "type_id": type_id}}
    special = lambda type_id: {"SpecialToken": {"id": bos, "type_id": type_id}}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special(0), seq("A", 0)],
            "pair": [special(0), seq("A", 0), special(1), seq("B", 1)],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": pieces[unk_id][0],
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: llama_converter.py tokenizer.model tokenizer.json")
    result = convert(*read_model(sys.argv[1]))
    with open(sys.argv[2], "w", encoding="utf-8") as out:
        json.dump(result, out, ensure_ascii=False)
