#!/usr/bin/python3
"""Writes the inputs of meta_folder_test with real PyTorch (torch.save), and
the reference each is checked against, computed the way transformers'
convert_llama_weights_to_hf.py computes it (from the files, not from the
weights they were made of).

    meta_folder_fixtures.py OUT_DIR

OUT_DIR/<case>/       a Meta folder: params.json + consolidated.NN.pth
OUT_DIR/<case>_hf/    its HF layout: config.json + model.safetensors (F32,
                      so that the half-precision cases hold torch's own
                      widening of the stored values), written by hand
OUT_DIR/err_*/        broken variants for the error tests
"""
import json
import os
import shutil
import struct
import sys
import zipfile

import torch


def meta_weights(p, n_layers, vocab, ffn, seed):
    """A full (unsplit) model in Meta's naming and layout, float32."""
    g = torch.Generator().manual_seed(seed)
    dim, hd = p["dim"], p["dim"] // p["n_heads"]
    kv = p.get("n_kv_heads", p["n_heads"]) * hd
    r = lambda *s: torch.randn(*s, generator=g)
    w = {"tok_embeddings.weight": r(vocab, dim)}
    for l in range(n_layers):
        pre = "layers.%d." % l
        w[pre + "attention.wq.weight"] = r(dim, dim)
        w[pre + "attention.wk.weight"] = r(kv, dim)
        w[pre + "attention.wv.weight"] = r(kv, dim)
        w[pre + "attention.wo.weight"] = r(dim, dim)
        w[pre + "feed_forward.w1.weight"] = r(ffn, dim)
        w[pre + "feed_forward.w2.weight"] = r(dim, ffn)
        w[pre + "feed_forward.w3.weight"] = r(ffn, dim)
        w[pre + "attention_norm.weight"] = 1 + 0.1 * r(dim)
        w[pre + "ffn_norm.weight"] = 1 + 0.1 * r(dim)
    w["norm.weight"] = 1 + 0.1 * r(dim)
    w["output.weight"] = r(vocab, dim)
    return w


def split_dim(name, vocab_parallel):
    """fairscale's layouts in Meta's model.py."""
    if name == "tok_embeddings.weight":
        return 0 if vocab_parallel else 1
    if name.endswith(("wq.weight", "wk.weight", "wv.weight", "w1.weight", "w3.weight")) \
            or name == "output.weight":
        return 0
    if name.endswith(("wo.weight", "w2.weight")):
        return 1
    return None  # norms: replicated


def write_meta(folder, params, full, n_shards, dtype, vocab_parallel=False, rope_freqs=False,
               protocol=2):
    os.makedirs(folder, exist_ok=True)
    json.dump(params, open(os.path.join(folder, "params.json"), "w"))
    for s in range(n_shards):
        sd = {}
        for name, t in full.items():
            d = split_dim(name, vocab_parallel)
            piece = t if d is None else torch.chunk(t, n_shards, dim=d)[s]
            sd[name] = piece.to(dtype).clone().contiguous()
        if rope_freqs:  # old checkpoints carried this buffer
            hd = params["dim"] // params["n_heads"]
            sd["rope.freqs"] = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        torch.save(sd, os.path.join(folder, "consolidated.%02d.pth" % s),
                   pickle_protocol=protocol)


def permute(w, n_heads, dim1, dim2):
    """transformers' convert_llama_weights_to_hf.py, verbatim."""
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def convert_to_hf(meta_dir, n_layers, vocab_parallel=False):
    """Meta folder -> HF tensors, as convert_llama_weights_to_hf.py does it:
    torch.load every file, concatenate the slices, permute wq and wk."""
    params = json.load(open(os.path.join(meta_dir, "params.json")))
    files = sorted(f for f in os.listdir(meta_dir) if f.startswith("consolidated."))
    loaded = [torch.load(os.path.join(meta_dir, f), map_location="cpu") for f in files]
    n = len(loaded)
    dim, n_heads = params["dim"], params["n_heads"]
    n_kv = params.get("n_kv_heads", n_heads)
    hd = dim // n_heads
    out = {}
    for l in range(n_layers):
        m, h = "layers.%d." % l, "model.layers.%d." % l
        cat = lambda key, d: torch.cat([x[m + key] for x in loaded], dim=d)
        q = torch.cat([x[m + "attention.wq.weight"].view(n_heads // n, hd, dim) for x in loaded],
                      dim=0).reshape(dim, dim)
        k = torch.cat([x[m + "attention.wk.weight"].view(n_kv // n, hd, dim) for x in loaded],
                      dim=0).reshape(n_kv * hd, dim)
        out[h + "self_attn.q_proj.weight"] = permute(q, n_heads, dim, dim)
        out[h + "self_attn.k_proj.weight"] = permute(k, n_kv, n_kv * hd, dim)
        out[h + "self_attn.v_proj.weight"] = cat("attention.wv.weight", 0)
        out[h + "self_attn.o_proj.weight"] = cat("attention.wo.weight", 1)
        out[h + "mlp.gate_proj.weight"] = cat("feed_forward.w1.weight", 0)
        out[h + "mlp.down_proj.weight"] = cat("feed_forward.w2.weight", 1)
        out[h + "mlp.up_proj.weight"] = cat("feed_forward.w3.weight", 0)
        out[h + "input_layernorm.weight"] = loaded[0][m + "attention_norm.weight"]
        out[h + "post_attention_layernorm.weight"] = loaded[0][m + "ffn_norm.weight"]
    out["model.embed_tokens.weight"] = torch.cat(
        [x["tok_embeddings.weight"] for x in loaded], dim=0 if vocab_parallel else 1)
    out["model.norm.weight"] = loaded[0]["norm.weight"]
    out["lm_head.weight"] = torch.cat([x["output.weight"] for x in loaded], dim=0)
    return out


def write_safetensors_f32(path, tensors):
    """safetensors by hand: u64 LE header length, JSON header, raw bytes."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].float().contiguous()
        data = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_hf(folder, params, n_layers, vocab, ffn, tensors):
    os.makedirs(folder, exist_ok=True)
    config = {
        "model_type": "llama", "hidden_act": "silu", "vocab_size": vocab,
        "hidden_size": params["dim"], "intermediate_size": ffn,
        "num_hidden_layers": n_layers, "num_attention_heads": params["n_heads"],
        "num_key_value_heads": params.get("n_kv_heads", params["n_heads"]),
        "head_dim": params["dim"] // params["n_heads"], "rms_norm_eps": params["norm_eps"],
        "rope_theta": params.get("rope_theta", 10000.0), "tie_word_embeddings": False,
    }
    json.dump(config, open(os.path.join(folder, "config.json"), "w"))
    write_safetensors_f32(os.path.join(folder, "model.safetensors"), tensors)


def make_case(out, name, params, n_layers, vocab, ffn, n_shards, dtype, seed, **kw):
    full = meta_weights(params, n_layers, vocab, ffn, seed)
    write_meta(os.path.join(out, name), params, full, n_shards, dtype, **kw)
    hf = convert_to_hf(os.path.join(out, name), n_layers, kw.get("vocab_parallel", False))
    write_hf(os.path.join(out, name + "_hf"), params, n_layers, vocab, ffn, hf)


def rewrite_zip(src, transform=None, extra=None):
    """The records of a torch.save archive, optionally changed, as a plain list."""
    z = zipfile.ZipFile(src)
    recs = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    if transform:
        recs = [(n, transform(n, d)) for n, d in recs]
    if extra:
        recs.insert(1, extra(recs[0][0].split("/")[0]))
    return recs


def write_zip64(path, records):
    """A stored zip archive with every size and offset in zip64 fields (as
    PyTorch's writer emits past 4 GiB), written field by field."""
    import zlib
    body, central = b"", b""
    for name, data in records:
        n = name.encode()
        crc = zlib.crc32(data) & 0xffffffff
        offset = len(body)
        local_extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        body += struct.pack("<IHHHHHIIIHH", 0x04034b50, 45, 0, 0, 0, 0, crc,
                            0xffffffff, 0xffffffff, len(n), len(local_extra)) + n + local_extra
        body += data
        cd_extra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 45, 45, 0, 0, 0, 0, crc,
                               0xffffffff, 0xffffffff, len(n), len(cd_extra), 0, 0, 0, 0,
                               0xffffffff) + n + cd_extra
    cd_offset, cd_size = len(body), len(central)
    z64_offset = cd_offset + cd_size
    z64 = struct.pack("<IQHHIIQQQQ", 0x06064b50, 44, 45, 45, 0, 0, len(records), len(records),
                      cd_size, cd_offset)
    locator = struct.pack("<IIQI", 0x07064b50, 0, z64_offset, 1)
    end = struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, 0xffff, 0xffff, 0xffffffff, 0xffffffff, 0)
    with open(path, "wb") as f:
        f.write(body + central + z64 + locator + end)


def write_zip_plain(path, records, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in records:
            z.writestr(name, data)


def main():
    out = sys.argv[1]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)

    # GQA (4 query heads, 2 KV heads) over 2 model-parallel files, in the
    # three dtypes Meta's checkpoints come in; old-style rope.freqs included.
    gqa = {"dim": 16, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 24,
           "multiple_of": 16, "norm_eps": 1e-05}
    for name, dtype in (("f32_mp2", torch.float32), ("bf16_mp2", torch.bfloat16),
                        ("f16_mp2", torch.float16)):
        make_case(out, name, gqa, 2, 24, 48, 2, dtype, seed=1, rope_freqs=True)

    # Multi-head attention, one file: Llama 1's params.json shape (vocab_size -1).
    mha = {"dim": 32, "n_layers": 1, "n_heads": 4, "vocab_size": -1, "multiple_of": 32,
           "norm_eps": 1e-06}
    make_case(out, "f32_mp1", mha, 1, 20, 96, 1, torch.float32, seed=2)

    # Llama 3 style: vocab-parallel embedding, rope_theta, ffn_dim_multiplier,
    # 4 files with 1 KV head each, bf16, pickle protocol 4 (FRAME, MEMOIZE,
    # STACK_GLOBAL, SHORT_BINUNICODE).
    l3 = {"dim": 32, "n_layers": 2, "n_heads": 8, "n_kv_heads": 4, "vocab_size": 40,
          "multiple_of": 16, "ffn_dim_multiplier": 1.3, "norm_eps": 1e-05,
          "rope_theta": 500000.0}
    # int(1.3 * int(2 * 4 * 32 / 3)) = int(1.3 * 85) = 110 -> 112
    make_case(out, "llama3_mp4", l3, 2, 40, 112, 4, torch.bfloat16, seed=3,
              vocab_parallel=True, protocol=4)

    # Strided views and shared storages: the same weights as f32_mp1, each
    # tensor saved as a view (transposed copy, a slice at an offset, two
    # tensors in one storage). torch.save keeps views as views.
    src = os.path.join(out, "f32_mp1")
    sd = torch.load(os.path.join(src, "consolidated.00.pth"))
    views = {}
    names = list(sd)
    big = torch.cat([sd[n].reshape(-1) for n in names])  # one storage for all
    pos = 0
    for i, n in enumerate(names):
        t = sd[n]
        if i % 3 == 0 and t.dim() == 2:
            views[n] = t.t().contiguous().t()  # column-major strides
        else:
            views[n] = big[pos:pos + t.numel()].view(t.shape)  # offset into shared storage
        pos += t.numel()
    for n in names:
        assert torch.equal(views[n], sd[n]), n
    assert any(not v.is_contiguous() for v in views.values())
    os.makedirs(os.path.join(out, "views"))
    shutil.copy(os.path.join(src, "params.json"), os.path.join(out, "views"))
    torch.save(views, os.path.join(out, "views", "consolidated.00.pth"))

    # zip64 archive records, checked with torch.load itself.
    shutil.copytree(os.path.join(out, "f32_mp2"), os.path.join(out, "zip64"))
    p = os.path.join(out, "zip64", "consolidated.01.pth")
    write_zip64(p, rewrite_zip(os.path.join(out, "f32_mp2", "consolidated.01.pth")))
    ref = torch.load(os.path.join(out, "f32_mp2", "consolidated.01.pth"))
    back = torch.load(p)
    assert all(torch.equal(ref[k], back[k]) for k in ref)

    # byteorder "big" (PyTorch >= 2.0 on a big-endian host): every storage's
    # elements byte-swapped.
    shutil.copytree(os.path.join(out, "bf16_mp2"), os.path.join(out, "bigendian"))
    p = os.path.join(out, "bigendian", "consolidated.00.pth")

    def swap(name, data):
        if "/data/" not in name:
            return data
        return b"".join(data[i:i + 2][::-1] for i in range(0, len(data), 2))
    write_zip_plain(p, rewrite_zip(os.path.join(out, "bf16_mp2", "consolidated.00.pth"), swap,
                                   lambda prefix: (prefix + "/byteorder", b"big")))

    # --- broken inputs --------------------------------------------------------
    shutil.copytree(os.path.join(out, "f32_mp2"), os.path.join(out, "err_deflate"))
    p = os.path.join(out, "err_deflate", "consolidated.01.pth")
    write_zip_plain(p, rewrite_zip(os.path.join(out, "f32_mp2", "consolidated.01.pth")),
                    zipfile.ZIP_DEFLATED)

    shutil.copytree(os.path.join(out, "f32_mp2"), os.path.join(out, "err_long"))
    p = os.path.join(out, "err_long", "consolidated.00.pth")
    sd = torch.load(p)
    sd["layers.0.attention.step"] = torch.tensor([3], dtype=torch.int64)
    torch.save(sd, p)

    shutil.copytree(os.path.join(out, "f32_mp2"), os.path.join(out, "err_norm"))
    p = os.path.join(out, "err_norm", "consolidated.01.pth")
    sd = torch.load(p)
    sd["layers.1.ffn_norm.weight"][3] += 1.0
    torch.save(sd, p)

    shutil.copytree(os.path.join(out, "f32_mp2"), os.path.join(out, "err_legacy"))
    p = os.path.join(out, "err_legacy", "consolidated.00.pth")
    torch.save(torch.load(p), p, _use_new_zipfile_serialization=False)

    shutil.copytree(os.path.join(out, "f32_mp2"), os.path.join(out, "err_extra"))
    p = os.path.join(out, "err_extra", "consolidated.01.pth")
    sd = torch.load(p)
    sd["layers.0.attention.bias"] = torch.zeros(4)
    torch.save(sd, p)

    # One flipped bit inside a storage's bytes: only the CRC-32 can tell.
    shutil.copytree(os.path.join(out, "f32_mp2"), os.path.join(out, "err_crc"))
    p = os.path.join(out, "err_crc", "consolidated.01.pth")
    info = [i for i in zipfile.ZipFile(p).infolist() if i.filename.endswith("/data/3")][0]
    raw = bytearray(open(p, "rb").read())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    raw[info.header_offset + 30 + name_len + extra_len + 5] ^= 0x10
    open(p, "wb").write(raw)

    # An archive comment after the end record (zip tools may add one).
    shutil.copytree(os.path.join(out, "f32_mp2"), os.path.join(out, "zipcomment"))
    p = os.path.join(out, "zipcomment", "consolidated.00.pth")
    with zipfile.ZipFile(p, "a") as z:
        z.comment = b"written by meta_folder_fixtures.py"

    open(os.path.join(out, "done"), "w").write("ok\n")


if __name__ == "__main__":
    main()
