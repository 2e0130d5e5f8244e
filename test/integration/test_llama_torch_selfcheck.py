#!/usr/bin/python3
"""Self test of llama_torch.py against independent math.

Run: /usr/bin/python3 test/integration/test_llama_torch_selfcheck.py
(exit status non-zero on any failure). The reference is only worth something
if it is right, so every piece is checked against something that does not
share its code: hand-written bytes for safetensors, scalar loops for RMSNorm,
RoPE and attention, closed forms (log V), invariants (norm preservation,
causality, GQA == MHA with repeated heads) and finite differences.
"""
import math
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import llama_torch as lt  # noqa: E402

SCRIPT = os.path.join(HERE, "llama_torch.py")

# Every dimension distinct where possible, so a transposed weight or a
# misrouted head fails; GQA with 2 query heads per KV head.
MICRO = {
    "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 6,
    "rms_norm_eps": 1e-5, "rope_theta": 500.0, "vocab_size": 37,
    "tie_word_embeddings": False,
}


def micro_model(seed=7, std=0.3, **overrides):
    cfg = dict(MICRO, **overrides)
    m = lt.LlamaTorch(cfg, torch.float64)
    m.randomize(seed, std)
    return m


def random_tokens(batch, seq, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq), generator=g)


# ---------------------------------------------------------------------------
# Naive reference: one scalar/vector at a time, no code shared with the module.
# ---------------------------------------------------------------------------

def naive_rms_norm(x, w, eps):
    n = len(x)
    ms = sum(float(v) * float(v) for v in x) / n
    r = 1.0 / math.sqrt(ms + eps)
    return torch.tensor([float(x[i]) * r * float(w[i]) for i in range(n)],
                        dtype=torch.float64)


def naive_rope(x, pos, theta):
    """Rotates pairs (i, i + d/2) by pos * theta^(-2i/d)."""
    d = len(x)
    out = [0.0] * d
    for i in range(d // 2):
        a = pos * theta ** (-2.0 * i / d)
        x1, x2 = float(x[i]), float(x[i + d // 2])
        out[i] = x1 * math.cos(a) - x2 * math.sin(a)
        out[i + d // 2] = x2 * math.cos(a) + x1 * math.sin(a)
    return torch.tensor(out, dtype=torch.float64)


def naive_logits(model, tokens):
    """Logits [B, T, V] with explicit loops over batch, position, head, key."""
    c = model.config
    sd = {n: p.detach() for n, p in model.named_parameters()}
    H, KV, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    eps, theta = c["rms_norm_eps"], c["rope_theta"]
    out_w = sd["model.embed_tokens.weight"] if c["tie_word_embeddings"] else sd["lm_head.weight"]
    B, T = tokens.shape
    result = torch.zeros(B, T, c["vocab_size"], dtype=torch.float64)
    for b in range(B):
        h = [sd["model.embed_tokens.weight"][int(tokens[b, t])].clone() for t in range(T)]
        for layer in range(c["num_hidden_layers"]):
            p = "model.layers.%d." % layer
            xs = [naive_rms_norm(h[t], sd[p + "input_layernorm.weight"], eps) for t in range(T)]
            q = [sd[p + "self_attn.q_proj.weight"] @ x for x in xs]
            k = [sd[p + "self_attn.k_proj.weight"] @ x for x in xs]
            v = [sd[p + "self_attn.v_proj.weight"] @ x for x in xs]
            attn = []
            for t in range(T):
                heads = []
                for hh in range(H):
                    g = hh // (H // KV)
                    qh = naive_rope(q[t][hh * D:(hh + 1) * D], t, theta)
                    scores = []
                    for s in range(t + 1):
                        kh = naive_rope(k[s][g * D:(g + 1) * D], s, theta)
                        scores.append(sum(float(qh[i]) * float(kh[i]) for i in range(D))
                                      / math.sqrt(D))
                    m = max(scores)
                    e = [math.exp(sc - m) for sc in scores]
                    z = sum(e)
                    o = torch.zeros(D, dtype=torch.float64)
                    for s in range(t + 1):
                        o += (e[s] / z) * v[s][g * D:(g + 1) * D]
                    heads.append(o)
                attn.append(sd[p + "self_attn.o_proj.weight"] @ torch.cat(heads))
            h = [h[t] + attn[t] for t in range(T)]
            for t in range(T):
                x = naive_rms_norm(h[t], sd[p + "post_attention_layernorm.weight"], eps)
                gate = sd[p + "mlp.gate_proj.weight"] @ x
                up = sd[p + "mlp.up_proj.weight"] @ x
                act = torch.tensor([float(gv) / (1.0 + math.exp(-float(gv))) * float(uv)
                                    for gv, uv in zip(gate, up)], dtype=torch.float64)
                h[t] = h[t] + sd[p + "mlp.down_proj.weight"] @ act
        for t in range(T):
            result[b, t] = out_w @ naive_rms_norm(h[t], sd["model.norm.weight"], eps)
    return result


def naive_loss(logits, targets):
    total, count = 0.0, 0
    B, T, V = logits.shape
    for b in range(B):
        for t in range(T):
            y = int(targets[b, t])
            if y == -100:
                continue
            row = [float(v) for v in logits[b, t]]
            m = max(row)
            lse = m + math.log(sum(math.exp(v - m) for v in row))
            total += lse - row[y]
            count += 1
    return total / count


# ---------------------------------------------------------------------------

class SafetensorsTest(unittest.TestCase):
    def test_round_trip_all_dtypes(self):
        g = torch.Generator().manual_seed(1)
        tensors = {
            "f64": torch.randn(3, 4, generator=g, dtype=torch.float64),
            "f32": torch.randn(2, 3, 5, generator=g),
            "bf16": torch.randn(7, generator=g).to(torch.bfloat16),
            "f16": torch.randn(2, 2, generator=g).to(torch.float16),
            "i32": torch.tensor([[-5, 2**31 - 1], [0, -2**31]], dtype=torch.int32),
            "i64": torch.tensor(-(2**62) - 3, dtype=torch.int64),  # a scalar, shape []
            "empty": torch.zeros(0, 4),
            # non-contiguous input must be written in logical order
            "transposed": torch.arange(6, dtype=torch.float32).view(2, 3).t(),
        }
        data = lt.serialize_safetensors(tensors, {"format": "pt"})
        (n,) = struct.unpack_from("<Q", data, 0)
        self.assertEqual(n % 8, 0)
        back, meta = lt.parse_safetensors(data)
        self.assertEqual(meta, {"format": "pt"})
        self.assertEqual(sorted(back), sorted(tensors))
        for k, t in tensors.items():
            self.assertEqual(back[k].dtype, t.dtype, k)
            self.assertEqual(list(back[k].shape), list(t.shape), k)
            self.assertTrue(torch.equal(back[k], t), k)

    def test_hand_made_bytes(self):
        # "b" is written after "a" (sorted names): F32 [1.5, -2] then I64 -7,
        # a BF16 1.0 (0x3F80) and an F16 1.0 (0x3C00) in names c, d.
        header = (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                  b'"b":{"dtype":"I64","shape":[],"data_offsets":[8,16]},'
                  b'"c":{"dtype":"BF16","shape":[1],"data_offsets":[16,18]},'
                  b'"d":{"dtype":"F16","shape":[1,1],"data_offsets":[18,20]}}')
        header += b" " * (-len(header) % 8)
        buf = (struct.pack("<2f", 1.5, -2.0) + struct.pack("<q", -7) +
               b"\x80\x3f" + b"\x00\x3c")
        blob = struct.pack("<Q", len(header)) + header + buf

        got, meta = lt.parse_safetensors(blob)
        self.assertEqual(meta, {})
        self.assertEqual(got["a"].tolist(), [1.5, -2.0])
        self.assertEqual(got["b"].item(), -7)
        self.assertEqual(list(got["b"].shape), [])
        self.assertEqual(got["c"].dtype, torch.bfloat16)
        self.assertEqual(got["c"].float().tolist(), [1.0])
        self.assertEqual(got["d"].float().tolist(), [[1.0]])

        # The writer produces exactly these bytes from unsorted input.
        written = lt.serialize_safetensors({
            "d": torch.ones(1, 1, dtype=torch.float16),
            "b": torch.tensor(-7, dtype=torch.int64),
            "c": torch.ones(1, dtype=torch.bfloat16),
            "a": torch.tensor([1.5, -2.0], dtype=torch.float32),
        })
        self.assertEqual(written, blob)

    def test_file_round_trip(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "x.safetensors")
            lt.write_safetensors(path, {"w": torch.arange(5.0)})
            back, _ = lt.read_safetensors(path)
            self.assertEqual(back["w"].tolist(), [0, 1, 2, 3, 4])
            self.assertEqual(os.listdir(d), ["x.safetensors"])  # no temp left
            with self.assertRaisesRegex(lt.SafetensorsError, "missing.safetensors: cannot read"):
                lt.read_safetensors(os.path.join(d, "missing.safetensors"))

    def _blob(self, entries, buf):
        import json
        h = json.dumps(entries).encode()
        return struct.pack("<Q", len(h)) + h + buf

    def test_malformed_files_are_rejected(self):
        ok = {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
        cases = {
            "truncated": b"\x01\x00",
            "header length": struct.pack("<Q", 50) + b"{}",
            "not valid JSON": struct.pack("<Q", 3) + b"{x}",
            "trailing": self._blob(ok, bytes(12)),
            "outside": self._blob(ok, bytes(4)),
            "unsupported dtype": self._blob(
                {"x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, bytes(2)),
            "needs 8": self._blob(
                {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)),
            "hole": self._blob(
                {"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)),
            "overlap": self._blob(
                {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                 "y": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)),
            "shape": self._blob(
                {"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b""),
        }
        for what, blob in cases.items():
            with self.subTest(what):
                with self.assertRaisesRegex(lt.SafetensorsError, "^f.st: .*" + what):
                    lt.parse_safetensors(blob, "f.st")


class ComponentTest(unittest.TestCase):
    def test_rms_norm_matches_loops(self):
        g = torch.Generator().manual_seed(2)
        x = torch.randn(2, 3, 5, generator=g, dtype=torch.float64) * 3
        w = torch.randn(5, generator=g, dtype=torch.float64)
        y = lt.rms_norm(x, w, 1e-5)
        for i in range(2):
            for j in range(3):
                self.assertTrue(torch.allclose(y[i, j], naive_rms_norm(x[i, j], w, 1e-5),
                                               rtol=1e-14, atol=0))

    def test_rope_matches_loops(self):
        g = torch.Generator().manual_seed(3)
        T, D, theta = 7, 8, 10000.0
        x = torch.randn(2, T, D, generator=g, dtype=torch.float64)  # [heads, T, D]
        cos, sin = lt.rope_tables(T, plain_rope(D, theta), torch.float64)
        y = lt.apply_rope(x, cos, sin)
        for h in range(2):
            for t in range(T):
                self.assertTrue(torch.allclose(y[h, t], naive_rope(x[h, t], t, theta),
                                               rtol=1e-13, atol=1e-15))

    def test_rope_invariants(self):
        g = torch.Generator().manual_seed(4)
        T, D = 9, 6
        cos, sin = lt.rope_tables(T, plain_rope(D, 10000.0), torch.float64)
        q = torch.randn(T, D, generator=g, dtype=torch.float64)
        k = torch.randn(T, D, generator=g, dtype=torch.float64)
        rq = lt.apply_rope(q, cos, sin)
        # A rotation: norms are preserved, and position 0 is the identity.
        self.assertTrue(torch.allclose(rq.norm(dim=-1), q.norm(dim=-1), rtol=1e-14))
        self.assertTrue(torch.equal(rq[0], q[0]))
        # <rope(q, m), rope(k, n)> depends only on m - n.
        same_q = lt.apply_rope(q[:1].expand(T, D), cos, sin)
        same_k = lt.apply_rope(k[:1].expand(T, D), cos, sin)
        dots = [float(same_q[m] @ same_k[m - 2]) for m in range(2, T)]
        for d in dots[1:]:
            self.assertAlmostEqual(d, dots[0], places=12)

    def test_f32_tables_are_rounded_f64(self):
        c32, s32 = lt.rope_tables(100, plain_rope(64, 10000.0), torch.float32)
        c64, s64 = lt.rope_tables(100, plain_rope(64, 10000.0), torch.float64)
        self.assertTrue(torch.equal(c32, c64.float()))
        self.assertTrue(torch.equal(s32, s64.float()))


def plain_rope(head_dim, theta):
    """The fields of a parsed config that rope_tables reads, without scaling."""
    return {"head_dim": head_dim, "rope_theta": theta, "rope_scaling": None,
            "max_position_embeddings": 2048}


class ModelTest(unittest.TestCase):
    def test_parameter_names_and_shapes(self):
        m = micro_model()
        shapes = {n: list(p.shape) for n, p in m.named_parameters()}
        want = {"model.embed_tokens.weight": [37, 16], "model.norm.weight": [16],
                "lm_head.weight": [37, 16]}
        for i in range(2):
            p = "model.layers.%d." % i
            want.update({p + "self_attn.q_proj.weight": [24, 16],
                         p + "self_attn.k_proj.weight": [12, 16],
                         p + "self_attn.v_proj.weight": [12, 16],
                         p + "self_attn.o_proj.weight": [16, 24],
                         p + "mlp.gate_proj.weight": [24, 16],
                         p + "mlp.up_proj.weight": [24, 16],
                         p + "mlp.down_proj.weight": [16, 24],
                         p + "input_layernorm.weight": [16],
                         p + "post_attention_layernorm.weight": [16]})
        self.assertEqual(shapes, want)
        tied = micro_model(tie_word_embeddings=True)
        self.assertNotIn("lm_head.weight", dict(tied.named_parameters()))

    def test_logits_and_loss_match_naive_loops(self):
        for overrides in ({}, {"tie_word_embeddings": True}, {"num_key_value_heads": 1},
                          {"num_key_value_heads": 4}):
            with self.subTest(**overrides):
                m = micro_model(**overrides)
                tokens = random_tokens(2, 5, 37, seed=5)
                targets = random_tokens(2, 5, 37, seed=6)
                targets[0, 1] = -100
                ref = naive_logits(m, tokens)
                got = m.logits(tokens).detach()
                self.assertLess(float((got - ref).abs().max()), 1e-12 * float(ref.abs().max()))
                self.assertAlmostEqual(float(m(tokens, targets)), naive_loss(ref, targets),
                                       places=12)

    def test_gqa_equals_mha_with_repeated_kv_heads(self):
        gqa = micro_model(num_key_value_heads=2)
        mha = lt.LlamaTorch(dict(MICRO, num_key_value_heads=4), torch.float64)
        rep, D, hidden = 2, MICRO["head_dim"], MICRO["hidden_size"]
        with torch.no_grad():
            src = dict(gqa.named_parameters())
            for name, p in mha.named_parameters():
                w = src[name]
                if name.endswith(("k_proj.weight", "v_proj.weight")):
                    # KV head g serves query heads g*rep .. g*rep + rep - 1.
                    w = w.view(2, D, hidden).repeat_interleave(rep, dim=0).reshape(4 * D, hidden)
                p.copy_(w)
        tokens = random_tokens(3, 6, 37, seed=8)
        a, b = gqa.logits(tokens), mha.logits(tokens)
        self.assertLess(float((a - b).abs().max()), 1e-13)

    def test_causality(self):
        m = micro_model()
        tokens = random_tokens(2, 8, 37, seed=9)
        base = m.logits(tokens).detach()
        changed = tokens.clone()
        changed[:, 5] = (changed[:, 5] + 1) % 37
        after = m.logits(changed).detach()
        self.assertLess(float((after[:, :5] - base[:, :5]).abs().max()), 1e-15)
        for t in range(5, 8):
            self.assertGreater(float((after[:, t] - base[:, t]).abs().max()), 1e-6)

    def test_zero_output_layer_gives_log_vocab(self):
        m = micro_model()
        with torch.no_grad():
            m.lm_head.weight.zero_()
        tokens = random_tokens(2, 6, 37, seed=10)
        targets = random_tokens(2, 6, 37, seed=11)
        targets[1, :3] = -100
        self.assertAlmostEqual(float(m(tokens, targets)), math.log(37), places=13)

    def test_ignored_targets_and_errors(self):
        m = micro_model()
        tokens = random_tokens(1, 4, 37, seed=12)
        targets = random_tokens(1, 4, 37, seed=13)
        with self.assertRaisesRegex(ValueError, "every target is -100"):
            m(tokens, torch.full_like(targets, -100))
        with self.assertRaisesRegex(ValueError, "outside"):
            m(tokens, torch.full_like(targets, 37))
        with self.assertRaisesRegex(ValueError, "outside"):
            m.logits(torch.full_like(tokens, -1))

    def test_gradcheck(self):
        m = micro_model(std=0.4)
        tokens = random_tokens(2, 5, 37, seed=14)
        targets = random_tokens(2, 5, 37, seed=15)
        names = ["model.layers.0.self_attn.k_proj.weight",
                 "model.layers.1.post_attention_layernorm.weight",
                 "model.norm.weight"]
        params = dict(m.named_parameters())
        inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
        from torch.nn.utils.stateless import functional_call

        def loss_of(*ws):
            return functional_call(m, dict(zip(names, ws)), (tokens, targets))

        self.assertTrue(torch.autograd.gradcheck(loss_of, inputs, eps=1e-6, atol=1e-8,
                                                 rtol=1e-5))

    def test_config_validation(self):
        cfg = dict(MICRO)
        del cfg["head_dim"], cfg["num_key_value_heads"]
        c = lt.parse_config(cfg)
        self.assertEqual((c["head_dim"], c["num_key_value_heads"]), (4, 4))
        for bad, msg in (({"rope_scaling": {"type": "longrope", "factor": 2.0}}, "rope_scaling"),
                         ({"num_key_value_heads": 3}, "not a multiple"),
                         ({"hidden_size": 0}, "hidden_size"),
                         ({"hidden_act": "gelu"}, "hidden_act"),
                         ({"head_dim": 5}, "even")):
            with self.subTest(msg):
                with self.assertRaisesRegex(lt.ConfigError, msg):
                    lt.parse_config(dict(MICRO, **bad))
        with self.assertRaisesRegex(lt.ConfigError, "missing field 'vocab_size'"):
            lt.parse_config({k: v for k, v in MICRO.items() if k != "vocab_size"})


class CliTest(unittest.TestCase):
    def run_cli(self, *args):
        return subprocess.run([sys.executable, SCRIPT] + list(args),
                              capture_output=True, text=True)

    def test_make_inputs_grads_check(self):
        import json
        with tempfile.TemporaryDirectory() as d:
            cfg = os.path.join(d, "config.json")
            with open(cfg, "w") as f:
                json.dump(MICRO, f)
            w, i, g = (os.path.join(d, n) for n in ("w.st", "i.st", "g.st"))
            r = self.run_cli("make-inputs", "--config", cfg, "--batch", "2", "--seq", "6",
                             "--seed", "3", "--weights", w, "--batch-file", i)
            self.assertEqual(r.returncode, 0, r.stderr)
            weights, _ = lt.read_safetensors(w)
            model = micro_model()
            self.assertEqual(sorted(weights), sorted(n for n, _ in model.named_parameters()))
            self.assertTrue(all(t.dtype == torch.float32 for t in weights.values()))
            self.assertGreater(float((weights["model.norm.weight"] - 1).abs().max()), 0.01)
            ids = lt.read_safetensors(i)[0]["input_ids"]
            self.assertEqual((ids.dtype, list(ids.shape)), (torch.int32, [2, 7]))
            self.assertTrue(0 <= int(ids.min()) and int(ids.max()) < 37)

            # Gradients of an f32 model checked against the f64 reference.
            r = self.run_cli("grads", "--config", cfg, "--weights", w, "--batch-file", i,
                             "--out", g, "--dtype", "f32")
            self.assertEqual(r.returncode, 0, r.stderr)
            r = self.run_cli("check", "--config", cfg, "--weights", w, "--batch-file", i,
                             "--grads", g)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("over 22 tensors", r.stdout)
            self.assertEqual(r.stdout.count("PASS"), 22)

            # The loss the CLI prints is the f64 loss of the same inputs.
            r = self.run_cli("loss", "--config", cfg, "--weights", w, "--batch-file", i)
            self.assertEqual(r.returncode, 0, r.stderr)
            model.load_weights(weights)
            tokens, targets = lt.load_batch(i, 37)
            self.assertAlmostEqual(float(r.stdout.split()[-1]),
                                   naive_loss(naive_logits(model, tokens), targets), places=12)

            # A gradient off by 1e-3 relative fails, and only that tensor.
            grads, _ = lt.read_safetensors(g)
            grads["model.layers.1.mlp.up_proj.weight"] *= 1.001
            bad = os.path.join(d, "bad.st")
            lt.write_safetensors(bad, grads)
            r = self.run_cli("check", "--config", cfg, "--weights", w, "--batch-file", i,
                             "--grads", bad)
            self.assertEqual(r.returncode, 1)
            fails = [ln for ln in r.stdout.splitlines() if ln.endswith("FAIL")]
            self.assertEqual(len(fails), 1)
            self.assertTrue(fails[0].startswith("model.layers.1.mlp.up_proj.weight"))

            # An extra or a missing tensor is an error naming the file.
            grads["extra"] = torch.zeros(1)
            lt.write_safetensors(bad, grads)
            r = self.run_cli("check", "--config", cfg, "--weights", w, "--batch-file", i,
                             "--grads", bad)
            self.assertEqual(r.returncode, 1)
            self.assertIn("bad.st: tensors do not match the model: unexpected extra",
                          r.stderr)
            del grads["extra"], grads["loss"]
            lt.write_safetensors(bad, grads)
            r = self.run_cli("check", "--config", cfg, "--weights", w, "--batch-file", i,
                             "--grads", bad)
            self.assertEqual(r.returncode, 1)
            self.assertIn("missing loss", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
