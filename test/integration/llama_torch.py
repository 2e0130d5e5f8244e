#!/usr/bin/python3
"""An independent PyTorch reference of the LLaMA model that llama-mlir compiles.

It follows Hugging Face `LlamaForCausalLM` semantics (parameter names, [out, in]
weights, rotate-half RoPE, GQA by repeating KV heads) but is written from the
equations, not from the compiler's code, so the integration tests can compare
the compiled program's loss and gradients against it. Runs on the Debian
python3-torch (1.13, CPU) under /usr/bin/python3; needs nothing else.

Module API
  read_safetensors(path) -> (dict name -> tensor, metadata dict)
  write_safetensors(path, tensors, metadata=None)
  load_config(path) -> dict;  LlamaTorch(config, dtype)
  LlamaTorch.forward(tokens, targets) -> loss;  .logits(tokens) -> [B, T, V]

Command line (errors are one line on stderr, exit status 1; usage errors 2)
  make-inputs --config C --batch B --seq T --seed S --weights W --batch-file I
              [--dtype f32|f64] [--std 0.02]
  check --config C --weights W --batch-file I --grads G [--rtol 1e-4] [--dtype f64]
  loss  --config C --weights W --batch-file I [--dtype f64]
  grads --config C --weights W --batch-file I --out G [--dtype f64]
  rope-freqs --config C --mlir M --seq T [--rtol 1e-13]
"""
import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------

# safetensors dtype name -> (torch dtype, bytes per element)
ST_DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
}
TORCH_TO_ST = {v[0]: k for k, v in ST_DTYPES.items()}

# The header is JSON that a reader holds in memory; the reference
# implementation refuses headers over 100 MB, and so do we.
MAX_HEADER_BYTES = 100 * 1000 * 1000

if sys.byteorder != "little":
    raise ImportError("llama_torch: safetensors buffers are little-endian; "
                      "this reader maps them in native order")


class SafetensorsError(ValueError):
    """A malformed safetensors file; the message starts with the path."""


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def parse_safetensors(data, name="<bytes>"):
    """Parses a whole safetensors file held in `data` (bytes-like).

    Returns (tensors, metadata). Enforces the format's invariants: a header
    that is a JSON object, known dtypes, offsets that match the shapes and
    tile the buffer exactly (no holes, no overlap, nothing trailing).
    """
    def fail(what):
        return SafetensorsError("%s: %s" % (name, what))

    if len(data) < 8:
        raise fail("truncated: %d bytes, shorter than the 8-byte header length"
                   % len(data))
    (n,) = struct.unpack_from("<Q", data, 0)
    if n > MAX_HEADER_BYTES:
        raise fail("header length %d exceeds the %d-byte limit" % (n, MAX_HEADER_BYTES))
    if 8 + n > len(data):
        raise fail("truncated: header length %d but only %d bytes follow"
                   % (n, len(data) - 8))
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise fail("header is not valid JSON (%s)" % e)
    if not isinstance(header, dict):
        raise fail("header is not a JSON object")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise fail("__metadata__ must map strings to strings")

    buf = memoryview(data)[8 + n:]
    spans = []
    for tname, info in header.items():
        if not isinstance(info, dict):
            raise fail("tensor %r: entry is not an object" % tname)
        dtype = info.get("dtype")
        shape = info.get("shape")
        offsets = info.get("data_offsets")
        if dtype not in ST_DTYPES:
            raise fail("tensor %r: unsupported dtype %r (supported: %s)"
                       % (tname, dtype, ", ".join(sorted(ST_DTYPES))))
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise fail("tensor %r: shape %r is not a list of non-negative integers"
                       % (tname, shape))
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(
                isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise fail("tensor %r: data_offsets %r is not [begin, end]" % (tname, offsets))
        begin, end = offsets
        want = _numel(shape) * ST_DTYPES[dtype][1]
        if not 0 <= begin <= end <= len(buf):
            raise fail("tensor %r: data_offsets [%d, %d) outside the %d-byte buffer"
                       % (tname, begin, end, len(buf)))
        if end - begin != want:
            raise fail("tensor %r: %d bytes at data_offsets but %s %s needs %d"
                       % (tname, end - begin, dtype, shape, want))
        spans.append((begin, end, tname))

    # The buffer must be tiled exactly: a hole or an overlap means a broken
    # writer, and silently accepting one would hide it.
    pos = 0
    for begin, end, tname in sorted(spans):
        if begin != pos:
            raise fail("tensor %r starts at byte %d, expected %d (%s)"
                       % (tname, begin, pos, "overlap" if begin < pos else "hole"))
        pos = end
    if pos != len(buf):
        raise fail("%d trailing bytes after the last tensor" % (len(buf) - pos))

    tensors = {}
    for begin, end, tname in spans:
        info = header[tname]
        tdtype = ST_DTYPES[info["dtype"]][0]
        # Copy into a bytearray: frombuffer on read-only memory is undefined
        # behaviour if anyone writes to the tensor later.
        raw = bytearray(buf[begin:end])
        if len(raw) == 0:
            t = torch.empty(info["shape"], dtype=tdtype)
        else:
            t = torch.frombuffer(raw, dtype=tdtype).reshape(info["shape"])
        tensors[tname] = t
    return tensors, metadata


def read_safetensors(path):
    """Reads a safetensors file -> (dict name -> tensor, metadata dict)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SafetensorsError("%s: cannot read (%s)" % (path, e.strerror or e))
    return parse_safetensors(data, path)


def serialize_safetensors(tensors, metadata=None):
    """Returns the bytes of a safetensors file holding `tensors`.

    Names are sorted and the data laid out in that order; the header is
    padded with spaces to a multiple of 8 bytes so the buffer is aligned.
    """
    header = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise SafetensorsError("__metadata__ must map strings to strings")
        header["__metadata__"] = dict(metadata)
    chunks = []
    offset = 0
    for tname in sorted(tensors):
        if tname == "__metadata__":
            raise SafetensorsError("'__metadata__' is reserved and cannot name a tensor")
        t = tensors[tname]
        if not isinstance(t, torch.Tensor):
            raise SafetensorsError("tensor %r: not a torch.Tensor" % tname)
        if t.dtype not in TORCH_TO_ST:
            raise SafetensorsError("tensor %r: dtype %s has no safetensors name here"
                                   % (tname, t.dtype))
        t = t.detach().cpu().contiguous()
        # numpy has no bfloat16: reinterpret every dtype as same-width ints.
        width = ST_DTYPES[TORCH_TO_ST[t.dtype]][1]
        as_int = {8: torch.int64, 4: torch.int32, 2: torch.int16}[width]
        raw = t.view(as_int).numpy().tobytes() if t.numel() else b""
        header[tname] = {"dtype": TORCH_TO_ST[t.dtype], "shape": list(t.shape),
                         "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def write_safetensors(path, tensors, metadata=None):
    """Writes `tensors` (dict name -> tensor) to `path` atomically."""
    data = serialize_safetensors(tensors, metadata)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise SafetensorsError("%s: cannot write (%s)" % (path, e.strerror or e))


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------

class ConfigError(ValueError):
    """An HF config this reference cannot represent exactly."""


def _int_field(cfg, key, default=None, minimum=1):
    """cfg[key] as an int >= minimum; absent or null -> default (None: required)."""
    v = cfg.get(key)
    if v is None:
        if default is None:
            raise ConfigError("missing field '%s'" % key)
        v = default
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ConfigError("'%s' must be an integer >= %d, got %r" % (key, minimum, v))
    return v


def parse_config(cfg):
    """Validates an HF LlamaForCausalLM config dict and fills HF defaults.

    Returns a plain dict with every field the model uses. Options that would
    change the math and that this reference does not implement (longrope,
    biases, another activation) are rejected rather than ignored.
    """
    if not isinstance(cfg, dict):
        raise ConfigError("config is not a JSON object")
    c = {}
    c["hidden_size"] = _int_field(cfg, "hidden_size")
    c["intermediate_size"] = _int_field(cfg, "intermediate_size")
    c["num_hidden_layers"] = _int_field(cfg, "num_hidden_layers")
    c["num_attention_heads"] = _int_field(cfg, "num_attention_heads")
    c["vocab_size"] = _int_field(cfg, "vocab_size")
    c["num_key_value_heads"] = _int_field(cfg, "num_key_value_heads",
                                          c["num_attention_heads"])
    if cfg.get("head_dim") is None and c["hidden_size"] % c["num_attention_heads"]:
        raise ConfigError("hidden_size %d is not divisible by num_attention_heads %d "
                          "and no head_dim is given"
                          % (c["hidden_size"], c["num_attention_heads"]))
    c["head_dim"] = _int_field(cfg, "head_dim",
                               c["hidden_size"] // c["num_attention_heads"])
    if c["head_dim"] % 2:
        raise ConfigError("head_dim %d must be even for rotary embeddings" % c["head_dim"])
    if c["num_attention_heads"] % c["num_key_value_heads"]:
        raise ConfigError("num_attention_heads %d is not a multiple of "
                          "num_key_value_heads %d"
                          % (c["num_attention_heads"], c["num_key_value_heads"]))
    for key, default in (("rms_norm_eps", 1e-6), ("rope_theta", 10000.0)):
        v = cfg.get(key, default)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
            raise ConfigError("'%s' must be a positive number, got %r" % (key, v))
        c[key] = float(v)
    tie = cfg.get("tie_word_embeddings", False)
    if not isinstance(tie, bool):
        raise ConfigError("'tie_word_embeddings' must be true or false, got %r" % tie)
    c["tie_word_embeddings"] = tie
    c["max_position_embeddings"] = _int_field(cfg, "max_position_embeddings", 2048)
    c["rope_scaling"] = _rope_scaling(cfg)
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key, False):
            raise ConfigError("'%s': true is not supported (LLaMA has no biases)" % key)
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError("hidden_act %r is not supported (LLaMA uses silu)" % act)
    return c


# The keys each rope type reads (transformers' modeling_rope_utils).
ROPE_KEYS = {
    "default": set(),
    "linear": {"factor"},
    "dynamic": {"factor", "original_max_position_embeddings"},
    "yarn": {"factor", "original_max_position_embeddings", "attention_factor", "beta_fast",
             "beta_slow", "mscale", "mscale_all_dim", "truncate"},
    "llama3": {"factor", "original_max_position_embeddings", "low_freq_factor",
               "high_freq_factor"},
}


def _rope_scaling(cfg):
    """rope_scaling (or transformers 5's rope_parameters) as a dict with
    "rope_type"; None for plain RoPE."""
    r = cfg.get("rope_scaling")
    if r is None and isinstance(cfg.get("rope_parameters"), dict):
        r = cfg["rope_parameters"]
    if r is None:
        return None
    if not isinstance(r, dict):
        raise ConfigError("rope_scaling must be an object, got %r" % (r,))
    r = dict(r)
    r.pop("rope_theta", None)
    kind = r.pop("rope_type", r.pop("type", None))
    if kind not in ROPE_KEYS:
        raise ConfigError("rope_scaling type %r is not supported" % (kind,))
    unknown = set(r) - ROPE_KEYS[kind]
    if unknown:
        raise ConfigError("rope_scaling keys %s are not defined for %r" % (sorted(unknown), kind))
    if kind == "default":
        return None
    r["rope_type"] = kind
    return r


def rope_frequencies(c, seq_len):
    """(inv_freq [head_dim/2] float64, attention factor) of config c for a
    sequence of seq_len tokens: the published formulas, transcribed in
    float64 from transformers' modeling_rope_utils (default, linear, dynamic
    NTK, YaRN, Llama 3.1) independently of the compiler's C++."""
    d = c["head_dim"]
    base = c["rope_theta"]
    expo = torch.arange(0, d, 2, dtype=torch.float64) / d
    plain = 1.0 / torch.pow(torch.tensor(base, dtype=torch.float64), expo)
    r = c["rope_scaling"]
    if r is None:
        return plain, 1.0
    kind = r["rope_type"]
    factor = float(r["factor"])
    if kind == "linear":
        return plain / factor, 1.0
    if kind == "dynamic":
        m = c["max_position_embeddings"]
        n = seq_len if seq_len > m else m
        grown = base * ((factor * n / m) - (factor - 1)) ** (d / (d - 2))
        return 1.0 / torch.pow(torch.tensor(grown, dtype=torch.float64), expo), 1.0
    if kind == "llama3":
        old = r["original_max_position_embeddings"]
        lo, hi = r["low_freq_factor"], r["high_freq_factor"]
        out = []
        for f in plain.tolist():
            wavelen = 2 * math.pi / f
            if wavelen < old / hi:
                out.append(f)
            elif wavelen > old / lo:
                out.append(f / factor)
            else:
                smooth = (old / wavelen - lo) / (hi - lo)
                out.append((1 - smooth) * f / factor + smooth * f)
        return torch.tensor(out, dtype=torch.float64), 1.0
    # yarn
    original = r.get("original_max_position_embeddings")
    if original is not None:
        factor = c["max_position_embeddings"] / original
    else:
        original = c["max_position_embeddings"]

    def mscale_of(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
    attn = r.get("attention_factor")
    if attn is None:
        if r.get("mscale") and r.get("mscale_all_dim"):
            attn = mscale_of(factor, r["mscale"]) / mscale_of(factor, r["mscale_all_dim"])
        else:
            attn = mscale_of(factor)

    def turns_dim(rotations):
        return d * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))
    low, high = turns_dim(r.get("beta_fast") or 32), turns_dim(r.get("beta_slow") or 1)
    if r.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(d // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp
    return (plain / factor) * (1 - keep) + plain * keep, float(attn)


def load_config(path):
    """Reads and validates an HF config.json; errors name the file."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as e:
        raise ConfigError("%s: cannot read (%s)" % (path, e.strerror or e))
    except ValueError as e:
        raise ConfigError("%s: not valid JSON (%s)" % (path, e))
    try:
        return parse_config(raw)
    except ConfigError as e:
        raise ConfigError("%s: %s" % (path, e))


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------

def rms_norm(x, weight, eps):
    """y = x * rsqrt(mean(x^2) + eps) * w, in x's dtype."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_tables(seq_len, c, dtype):
    """cos, sin [seq_len, head_dim] for HF rotate-half RoPE of config c.

    The frequencies (rope_frequencies), the angles and the attention factor
    are applied in float64 and only then cast, so f32 and f64 models see the
    same rounded tables.
    """
    inv_freq, attn = rope_frequencies(c, seq_len)
    pos = torch.arange(seq_len, dtype=torch.float64)
    angles = torch.outer(pos, inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return (attn * angles.cos()).to(dtype), (attn * angles.sin()).to(dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):
    """x [..., T, D] rotated by position: x * cos + rotate_half(x) * sin."""
    return x * cos + rotate_half(x) * sin


def causal_attention(q, k, v, scale):
    """q [B, H, T, D], k/v [B, H, T, D] -> [B, H, T, D]; softmax(QK^T*s) V, j <= i."""
    t = q.shape[-2]
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    future = torch.ones(t, t, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(future, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps, dtype):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def _linear(n_in, n_out, dtype):
    return nn.Linear(n_in, n_out, bias=False, dtype=dtype)


class Attention(nn.Module):
    def __init__(self, c, dtype):
        super().__init__()
        self.heads = c["num_attention_heads"]
        self.kv_heads = c["num_key_value_heads"]
        self.head_dim = c["head_dim"]
        hd = self.head_dim
        self.q_proj = _linear(c["hidden_size"], self.heads * hd, dtype)
        self.k_proj = _linear(c["hidden_size"], self.kv_heads * hd, dtype)
        self.v_proj = _linear(c["hidden_size"], self.kv_heads * hd, dtype)
        self.o_proj = _linear(self.heads * hd, c["hidden_size"], dtype)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        hd = self.head_dim
        q = self.q_proj(x).view(b, t, self.heads, hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, hd).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        # GQA: query head h reads KV head h // (H / KV).
        rep = self.heads // self.kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        o = causal_attention(q, k, v, 1.0 / math.sqrt(hd))
        return self.o_proj(o.transpose(1, 2).reshape(b, t, self.heads * hd))


class MLP(nn.Module):
    def __init__(self, c, dtype):
        super().__init__()
        self.gate_proj = _linear(c["hidden_size"], c["intermediate_size"], dtype)
        self.up_proj = _linear(c["hidden_size"], c["intermediate_size"], dtype)
        self.down_proj = _linear(c["intermediate_size"], c["hidden_size"], dtype)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c, dtype):
        super().__init__()
        self.self_attn = Attention(c, dtype)
        self.mlp = MLP(c, dtype)
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"], dtype)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"], dtype)

    def forward(self, h, cos, sin):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class _Backbone(nn.Module):
    """Holds the `model.*` parameters so their names match HF's."""

    def __init__(self, c, dtype):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"], dtype=dtype)
        self.layers = nn.ModuleList(DecoderLayer(c, dtype)
                                    for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"], dtype)


class LlamaTorch(nn.Module):
    """HF LlamaForCausalLM semantics; parameters carry HF names exactly.

    Parameters start as HF initializes them (matrices normal(0, 0.02), norm
    gains 1); `randomize` draws the test weights make-inputs writes.
    """

    def __init__(self, config, dtype=torch.float64):
        super().__init__()
        self.config = parse_config(config)
        self.dtype = dtype
        c = self.config
        self.model = _Backbone(c, dtype)
        if not c["tie_word_embeddings"]:
            self.lm_head = _linear(c["hidden_size"], c["vocab_size"], dtype)
        g = torch.Generator().manual_seed(0)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.02)

    def output_weight(self):
        if self.config["tie_word_embeddings"]:
            return self.model.embed_tokens.weight
        return self.lm_head.weight

    def _check_tokens(self, tokens, what):
        if tokens.dim() != 2:
            raise ValueError("%s must be [batch, seq], got shape %s" % (what, list(tokens.shape)))
        if tokens.numel() and (int(tokens.min()) < 0 or
                               int(tokens.max()) >= self.config["vocab_size"]):
            raise ValueError("%s holds ids outside [0, %d)" % (what, self.config["vocab_size"]))

    def logits(self, tokens):
        """tokens [B, T] int -> logits [B, T, V] in the model dtype."""
        self._check_tokens(tokens, "tokens")
        tokens = tokens.long()
        c = self.config
        cos, sin = rope_tables(tokens.shape[1], c, self.dtype)
        h = F.embedding(tokens, self.model.embed_tokens.weight)
        for layer in self.model.layers:
            h = layer(h, cos, sin)
        h = self.model.norm(h)
        return F.linear(h, self.output_weight())

    def forward(self, tokens, targets):
        """Mean cross-entropy over targets != -100 (scalar in the model dtype)."""
        if targets.shape != tokens.shape:
            raise ValueError("targets shape %s differs from tokens shape %s"
                             % (list(targets.shape), list(tokens.shape)))
        targets = targets.long()
        valid = targets != -100
        if not bool(valid.any()):
            raise ValueError("every target is -100: the mean loss is undefined")
        self._check_tokens(torch.where(valid, targets, torch.zeros_like(targets)), "targets")
        logits = self.logits(tokens)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=-100, reduction="mean")

    def randomize(self, seed, std=0.02):
        """Test weights: matrices normal(0, std), norm gains 1 + 0.1 * normal.

        Drawn in float64 in named_parameters order from one generator, so an
        f32 and an f64 model from the same seed hold the same values rounded.
        Norm gains away from 1 make their gradients matter in the check.
        """
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                r = torch.randn(p.shape, generator=g, dtype=torch.float64)
                p.copy_(1.0 + 0.1 * r if name.endswith("norm.weight") else std * r)

    def load_weights(self, tensors, path="<weights>"):
        """Copies tensors (by HF name, any float dtype) into the parameters.

        The set of names must equal the model's exactly.
        """
        _check_names(path, tensors, dict(self.named_parameters()), "weights")
        with torch.no_grad():
            for name, p in self.named_parameters():
                t = tensors[name]
                if list(t.shape) != list(p.shape):
                    raise ValueError("%s: %s has shape %s, the model needs %s"
                                     % (path, name, list(t.shape), list(p.shape)))
                if not t.is_floating_point():
                    raise ValueError("%s: %s has integer dtype %s" % (path, name, t.dtype))
                p.copy_(t.to(torch.float64))


def _check_names(path, have, want, what, extra_ok=()):
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want) - set(extra_ok))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing %s" % ", ".join(missing[:5]) +
                         (" (+%d more)" % (len(missing) - 5) if len(missing) > 5 else ""))
        if unexpected:
            parts.append("unexpected %s" % ", ".join(unexpected[:5]) +
                         (" (+%d more)" % (len(unexpected) - 5) if len(unexpected) > 5 else ""))
        raise ValueError("%s: %s do not match the model: %s" % (path, what, "; ".join(parts)))


def load_batch(path, vocab_size):
    """input_ids [B, T+1] (int32/int64) -> (tokens [B, T], targets [B, T]) int64."""
    tensors, _ = read_safetensors(path)
    if "input_ids" not in tensors:
        raise ValueError('%s: no tensor "input_ids"' % path)
    ids = tensors["input_ids"]
    if ids.dtype not in (torch.int32, torch.int64):
        raise ValueError("%s: input_ids must be I32 or I64, got %s" % (path, ids.dtype))
    if ids.dim() != 2 or ids.shape[1] < 2 or ids.shape[0] < 1:
        raise ValueError("%s: input_ids must be [batch >= 1, seq_len + 1 >= 2], got %s"
                         % (path, list(ids.shape)))
    ids = ids.long()
    # Every column but the last is an input; the last is only a target and
    # may be -100 (ignored), as the runtime's `verify` accepts.
    tokens, last = ids[:, :-1], ids[:, -1]
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size or \
            bool(((last != -100) & ((last < 0) | (last >= vocab_size))).any()):
        raise ValueError("%s: input_ids hold ids outside [0, %d)" % (path, vocab_size))
    return tokens.contiguous(), ids[:, 1:].contiguous()


def reference_grads(model, tokens, targets):
    """(loss, dict HF name -> gradient) from one forward + backward."""
    model.zero_grad(set_to_none=True)
    loss = model(tokens, targets)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    return loss.detach(), grads


def relative_error(ours, ref):
    """max|ours - ref| / max(max|ref|, 1e-30), in float64."""
    ours = ours.to(torch.float64)
    ref = ref.to(torch.float64)
    if ref.numel() == 0:
        return 0.0
    diff = float((ours - ref).abs().max())
    if math.isnan(diff) or bool(torch.isnan(ours).any()):
        return float("inf")
    return diff / max(float(ref.abs().max()), 1e-30)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

DTYPE_FLAGS = {"f32": torch.float32, "f64": torch.float64}


def _model_from_files(args):
    config = load_config(args.config)
    model = LlamaTorch(config, DTYPE_FLAGS[args.dtype])
    weights, _ = read_safetensors(args.weights)
    model.load_weights(weights, args.weights)
    tokens, targets = load_batch(args.batch_file, model.config["vocab_size"])
    return model, tokens, targets


def cmd_make_inputs(args):
    if args.batch < 1 or args.seq < 1:
        raise ValueError("--batch and --seq must be >= 1")
    if not args.std > 0:
        raise ValueError("--std must be positive")
    model = LlamaTorch(load_config(args.config), DTYPE_FLAGS[args.dtype])
    model.randomize(args.seed, args.std)
    write_safetensors(args.weights, {n: p.detach() for n, p in model.named_parameters()})
    # A generator of its own, so the ids do not depend on the model size.
    g = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(0, model.config["vocab_size"], (args.batch, args.seq + 1),
                        generator=g, dtype=torch.int64).to(torch.int32)
    write_safetensors(args.batch_file, {"input_ids": ids})
    n = sum(p.numel() for p in model.parameters())
    print("wrote %s (%d params, %s) and %s (input_ids [%d, %d])"
          % (args.weights, n, args.dtype, args.batch_file, args.batch, args.seq + 1))
    return 0


def cmd_loss(args):
    model, tokens, targets = _model_from_files(args)
    with torch.no_grad():
        loss = model(tokens, targets)
    print("loss: %.17g" % float(loss))
    return 0


def cmd_grads(args):
    model, tokens, targets = _model_from_files(args)
    loss, grads = reference_grads(model, tokens, targets)
    grads["loss"] = loss.reshape([])
    write_safetensors(args.out, grads)
    print("loss: %.17g" % float(loss))
    return 0


def cmd_check(args):
    if not args.rtol > 0:
        raise ValueError("--rtol must be positive")
    model, tokens, targets = _model_from_files(args)
    ours, _ = read_safetensors(args.grads)
    params = dict(model.named_parameters())
    _check_names(args.grads, ours, list(params) + ["loss"], "tensors")
    ref_loss, ref = reference_grads(model, tokens, targets)
    ref["loss"] = ref_loss.reshape([])

    names = ["loss"] + [n for n in params]
    width = max(len(n) for n in names)
    worst = 0.0
    failed = 0
    for name in names:
        t = ours[name]
        if t.numel() != ref[name].numel() or (name != "loss" and
                                               list(t.shape) != list(ref[name].shape)):
            raise ValueError("%s: %s has shape %s, expected %s"
                             % (args.grads, name, list(t.shape), list(ref[name].shape)))
        if not t.is_floating_point():
            raise ValueError("%s: %s has integer dtype %s" % (args.grads, name, t.dtype))
        err = relative_error(t.reshape(ref[name].shape), ref[name])
        ok = err < args.rtol
        failed += not ok
        worst = max(worst, err)
        print("%-*s  rel err %.3e  %s" % (width, name, err, "PASS" if ok else "FAIL"))
    print("loss: ours %.17g reference %.17g" % (float(ours["loss"].reshape([])),
                                                float(ref_loss)))
    print("max relative error: %.3e over %d tensors" % (worst, len(names)))
    if failed:
        print("%d of %d tensors exceed rtol %g" % (failed, len(names), args.rtol))
    return 1 if failed else 0


def cmd_compare(args):
    """Two loss + gradients files (verify outputs) against each other: the
    same tensor names, and every tensor within --rtol by relative_error
    (--metric max) or by relative L2 distance (--metric l2)."""
    ours, _ = read_safetensors(args.grads)
    ref, _ = read_safetensors(args.reference)
    if set(ours) != set(ref):
        print("%s: tensor names differ from %s: %s" % (args.label, args.reference,
                                                    sorted(set(ours) ^ set(ref))))
        return 1
    def l2(a, b):
        a, b = a.double().reshape(-1), b.double().reshape(-1)
        return float((a - b).norm() / max(float(b.norm()), 1e-30))
    err = {n: (relative_error(ours[n], ref[n].double()) if args.metric == "max"
               else l2(ours[n], ref[n])) for n in ref}
    worst = max(err.values())
    print("%s: max relative %s difference %.2e over %d tensors (tolerance %g)"
          % (args.label, "L2" if args.metric == "l2" else "element", worst, len(ref), args.rtol))
    return 0 if worst < args.rtol else 1


def cmd_rope_freqs(args):
    """The IR's RoPE frequencies against rope_frequencies: every rope op of
    an --emit mlir module (the inv_freq array, plain theta^(-2i/d) when it
    has none, and attention_factor) within --rtol of the float64
    transcription for this config at --seq."""
    import re
    c = load_config(args.config)
    want, attn = rope_frequencies(c, args.seq)
    text = open(args.mlir, encoding="utf-8").read()
    ops = re.findall(r"llama\.rope(?:_at|_qk|_grad)? [^{]*\{([^}]*)\}", text)
    if not ops:
        print("%s: no rope op" % args.mlir)
        return 1
    worst = 0.0
    for attrs in ops:
        m = re.search(r"inv_freq = array<f64: ([^>]*)>", attrs)
        if m:
            have = torch.tensor([float(v) for v in m.group(1).split(",")], dtype=torch.float64)
        else:
            theta = float(re.search(r"theta = ([-0-9.eE+]+)", attrs).group(1))
            have = rope_frequencies(dict(c, rope_theta=theta, rope_scaling=None), args.seq)[0]
        a = re.search(r"attention_factor = ([-0-9.eE+]+)", attrs)
        have_attn = float(a.group(1)) if a else 1.0
        if have.shape != want.shape:
            print("%s: %d frequencies, expected %d" % (args.mlir, have.numel(), want.numel()))
            return 1
        worst = max(worst, float(((have - want).abs() / want).max()),
                    abs(have_attn - attn) / attn)
    print("%s: %d rope ops, max relative difference %.2e from the float64 formulas "
          "(attention factor %.17g)" % (args.mlir, len(ops), worst, attn))
    return 0 if worst <= args.rtol else 1


def build_parser():
    p = argparse.ArgumentParser(
        prog="llama_torch.py",
        description="PyTorch reference of the llama-mlir LLaMA model (HF semantics).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(sp, dtype_default):
        sp.add_argument("--config", required=True, help="HF config.json")
        sp.add_argument("--weights", required=True, help="params by HF name (.safetensors)")
        sp.add_argument("--batch-file", required=True,
                        help='"input_ids" [batch, seq + 1] (.safetensors)')
        sp.add_argument("--dtype", choices=sorted(DTYPE_FLAGS), default=dtype_default)

    sp = sub.add_parser("make-inputs", help="random weights and a random batch")
    common(sp, "f32")
    sp.add_argument("--batch", type=int, required=True)
    sp.add_argument("--seq", type=int, required=True)
    sp.add_argument("--seed", type=int, required=True)
    sp.add_argument("--std", type=float, default=0.02, help="std of weight matrices")
    sp.set_defaults(func=cmd_make_inputs)

    sp = sub.add_parser("check", help="compare a loss + gradients file to the reference")
    common(sp, "f64")
    sp.add_argument("--grads", required=True, help='"loss" + gradients by HF name')
    sp.add_argument("--rtol", type=float, default=1e-4)
    sp.set_defaults(func=cmd_check)

    sp = sub.add_parser("compare", help="compare two loss + gradients files")
    sp.add_argument("--grads", required=True)
    sp.add_argument("--reference", required=True)
    sp.add_argument("--rtol", type=float, required=True)
    sp.add_argument("--metric", choices=["max", "l2"], default="max")
    sp.add_argument("--label", default="compare")
    sp.set_defaults(func=cmd_compare)

    sp = sub.add_parser("rope-freqs", help="compare an IR's RoPE frequencies to the formulas")
    sp.add_argument("--config", required=True, help="HF config.json")
    sp.add_argument("--mlir", required=True, help="llama-compile --emit mlir output")
    sp.add_argument("--seq", type=int, required=True)
    sp.add_argument("--rtol", type=float, default=1e-13)
    sp.set_defaults(func=cmd_rope_freqs)

    sp = sub.add_parser("loss", help="print the reference loss")
    common(sp, "f64")
    sp.set_defaults(func=cmd_loss)

    sp = sub.add_parser("grads", help="write the reference loss + gradients")
    common(sp, "f64")
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=cmd_grads)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:
        print("llama_torch.py %s: error: %s" % (args.command, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
