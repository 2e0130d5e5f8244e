"""What each section runs in its own process (python -m gpu_check child NAME
ARGS.json PROGRESS.jsonl): a kernel fault, an out-of-memory or a hang there
costs that section only. Each child appends events to PROGRESS (one JSON
object a line, flushed at once) and ends with {"event": "result", ...}; the
driver (run.py) reads the events even when the child was killed.
"""
import contextlib
import ctypes
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import traceback

from .common import ROOT

SMI_FIELDS = ["name", "driver_version", "compute_cap", "pci.bus_id", "memory.total", "memory.used",
              "pstate", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem",
              "power.draw", "power.limit", "temperature.gpu", "persistence_mode",
              "clocks_event_reasons.active"]


class Emit:
    def __init__(self, path):
        self.f = open(path, "a")

    def __call__(self, **event):
        event.setdefault("t", round(time.time(), 3))
        self.f.write(json.dumps(event) + "\n")
        self.f.flush()


def _event_times(fn, reps, flush):
    """Seconds of `reps` launches of fn, each timed by CUDA events with the L2
    evicted first (writing `flush`, larger than an H100's 50 MB L2)."""
    import torch
    ev = []
    for _ in range(reps):
        flush.zero_()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        ev.append((s, e))
    torch.cuda.synchronize()
    return [s.elapsed_time(e) / 1e3 for s, e in ev]


def _stats_us(samples_s):
    us = sorted(x * 1e6 for x in samples_s)
    return {"median_us": round(statistics.median(us), 3), "min_us": round(us[0], 3),
            "max_us": round(us[-1], 3), "n": len(us)}


# ---------------------------------------------------------------- device --

def smi_query(fields=SMI_FIELDS):
    """nvidia-smi --query-gpu, one call; on a field this driver does not know,
    one call per field (an unknown field fails the whole query)."""
    def q(fs):
        r = subprocess.run(["nvidia-smi", "--query-gpu=" + ",".join(fs), "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError((r.stdout + r.stderr).strip())
        return [v.strip() for v in r.stdout.strip().splitlines()[0].split(",")]
    try:
        return dict(zip(fields, q(fields)))
    except Exception:  # noqa: BLE001
        out = {}
        for f in fields:
            try:
                out[f] = q([f])[0]
            except Exception as e:  # noqa: BLE001
                out[f] = "error: %s" % str(e)[:200]
        return out


def child_device(a, emit):
    import torch
    emulate = a["emulate"]
    res = {}
    if emulate:
        res["nvidia_smi"] = "skipped: emulated (no GPU)"
    else:
        res["nvidia_smi"] = smi_query()
    res["torch"] = {"version": torch.__version__, "cuda": getattr(torch.version, "cuda", None),
                    "python": sys.version.split()[0], "executable": sys.executable}
    if not emulate:
        p = torch.cuda.get_device_properties(0)
        res["torch"].update({"device_name": p.name, "capability": "%d.%d" % (p.major, p.minor),
                             "sm_count": p.multi_processor_count,
                             "l2_bytes": getattr(p, "L2_cache_size", None),
                             "total_memory_bytes": p.total_memory})
    try:
        r = subprocess.run([a.get("nvcc") or "nvcc", "--version"], capture_output=True, text=True, timeout=30)
        res["nvcc"] = r.stdout.strip().splitlines()[-2:] if r.returncode == 0 else "error: " + r.stderr[-300:]
    except Exception as e:  # noqa: BLE001
        res["nvcc"] = "not found: %s" % e
    emit(event="partial", data=res)

    # Copy bandwidth: dst.copy_(src), bytes read + written over the time.
    n = (64 << 20) if emulate else (1 << 30)
    dev = "cpu" if emulate else "cuda"
    src = torch.empty(n, dtype=torch.uint8, device=dev)
    src.random_(0, 256)
    dst = torch.empty_like(src)
    warm, reps = (1, 5) if emulate else (3, 20)
    for _ in range(warm):
        dst.copy_(src)
    times = []
    if emulate:
        for _ in range(reps):
            t0 = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t0)
    else:
        torch.cuda.synchronize()
        ev = []
        for _ in range(reps):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            dst.copy_(src)
            e.record()
            ev.append((s, e))
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) / 1e3 for s, e in ev]
    ok = bool(torch.equal(dst[: 1 << 20], src[: 1 << 20]) and torch.equal(dst[-(1 << 20):], src[-(1 << 20):]))
    st = sorted(times)
    med = statistics.median(st)
    res["copy_bandwidth"] = {
        "method": "torch dst.copy_(src) of %d-byte uint8 buffers (random bytes) on %s; bytes moved = "
                  "read + written = %d per copy; %s; %d warm-up copies, then %d timed"
                  % (n, dev, 2 * n, "host clock" if emulate else "CUDA events around each copy",
                     warm, reps),
        "buffer_bytes": n, "bytes_per_copy": 2 * n, "n": reps,
        "ms_median": round(med * 1e3, 4), "gbps_median": round(2 * n / med / 1e9, 1),
        "gbps_best": round(2 * n / st[0] / 1e9, 1), "gbps_worst": round(2 * n / st[-1] / 1e9, 1),
        "copy_verified": ok}
    if not emulate:
        res["nvidia_smi_after_copy"] = smi_query(["clocks.sm", "clocks.mem", "power.draw",
                                                   "temperature.gpu", "pstate"])
    return res


# --------------------------------------------------------------- kernels --

class LaunchError(RuntimeError):
    pass


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def launcher_bytes(op, types, shapes, act_bytes):
    """Fewest bytes a launcher moves: every operand read once, every result
    written once, at its storage size ('a' activation storage, 'f' fp32,
    'i' int32). The embedding reads only the rows it gathers (as many as it
    writes), not the whole table. Workspace traffic is not counted."""
    size = {"a": act_bytes, "f": 4, "i": 4}
    total = 0
    for i, (t, s) in enumerate(zip(types, shapes)):
        b = _numel(s) * size[t]
        if op == "llama.embedding" and i == 0:
            b = _numel(shapes[2]) * act_bytes
        total += b
    return total


class _MissingEmuSymbol:
    """Stands for a `llama_emu_*` function that a library lacks (an nvcc
    build has no emulator): restype/argtypes may be set, a call fails."""
    def __init__(self, name):
        self.__dict__["name"] = name

    def __setattr__(self, key, value):
        self.__dict__[key] = value

    def __call__(self, *args):
        raise RuntimeError("%s: not in this library (no emulator in a GPU build)" % self.name)


def _tolerant_ctypes():
    """ctypes for cuda_emulation's module globals, whose CDLL answers a missing
    emulator-only symbol (llama_emu_*) with _MissingEmuSymbol instead of
    AttributeError: its main() binds llama_emu_coalescing_report whether or
    not it will use it (only with LLAMA_EMULATE_COUNT=1)."""
    import types

    class CDLL(ctypes.CDLL):
        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                if name.startswith("llama_emu_"):
                    stub = _MissingEmuSymbol(name)
                    setattr(self, name, stub)
                    return stub
                raise

    proxy = types.ModuleType("ctypes")
    proxy.__dict__.update(ctypes.__dict__)
    proxy.CDLL = CDLL
    return proxy


def child_kernels(a, emit):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
    import cuda_emulation as ce  # the CPU harness: its inputs, references and checks

    emulate = a["emulate"]
    act_bytes = 2 if a["act"] == "bf16" else 4
    skip = set(a.get("skip", []))
    lib = ctypes.CDLL(a["library"])  # a load error ends the child here, reported as such
    checked = hasattr(lib, "gpu_check_last_error")
    if checked:
        lib.gpu_check_error_string.restype = ctypes.c_char_p
    emit(event="loaded", library=a["library"], launch_checks=checked)
    flush = None if emulate else torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    target_s = a.get("time_per_launcher_s", 0.25)

    def check(what):
        if not checked:
            return
        for fn in (lib.gpu_check_last_error, lib.gpu_check_synchronize):
            err = fn()
            if err:
                raise LaunchError("%s: CUDA error %d (%s)" % (what, err, lib.gpu_check_error_string(err).decode()))

    def time_launch(fn):
        if emulate:
            fn()
            samples = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
            r = _stats_us(samples)
            r.update(warmup=1, method="host clock around each launch (emulated on the CPU: meaningless)")
            return r
        fn()
        fn()
        check("warm-up launches")
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        one = s.elapsed_time(e) / 1e3
        reps = int(min(100, max(5, target_s / max(one, 1e-7))))
        times = _event_times(fn, reps, flush)
        check("timed launches")
        r = _stats_us(times)
        r.update(warmup=3, method="CUDA events around each launch on the default stream, 256 MiB "
                                  "written between launches to evict the L2; median of n")
        return r

    RealOp = ce.Op
    seen = set()
    current = {"name": None, "since": time.monotonic()}
    limit_s = a.get("launcher_limit_s", 60)

    def watchdog():
        """A launcher that hangs (a barrier never reached, an endless loop)
        must not take the whole section: report it and end the process; the
        driver reruns the rest without it."""
        while True:
            time.sleep(1.0)
            if current["name"] and time.monotonic() - current["since"] > limit_s:
                emit(event="launch_error", name=current["name"],
                     error="no progress for %d s (hung?): the process was ended" % limit_s)
                os._exit(4)
    threading.Thread(target=watchdog, daemon=True).start()

    class Entry:
        """A row of the library's table whose launch times, then runs and
        checks the launcher; cuda_emulation.main() sees the same fields."""
        def __init__(self, raw):
            self.name, self.op, self.types = raw.name, raw.op, raw.types
            self.shapes, self.attrs, self.workspace_bytes = raw.shapes, raw.attrs, raw.workspace_bytes
            self._launch = raw.launch

        def launch(self, ptrs, ws, stream):
            name = self.name.decode()
            if name not in seen:
                seen.add(name)
                current.update(name=name, since=time.monotonic())
                emit(event="start", name=name)
                if a.get("timing", True):
                    try:
                        emit(event="timing", name=name, **time_launch(lambda: self._launch(ptrs, ws, stream)))
                    except LaunchError as ex:
                        emit(event="launch_error", name=name, error=str(ex))
                        os._exit(3)
            self._launch(ptrs, ws, stream)  # the launch whose outputs main() checks
            try:
                check("checked launch")
            except LaunchError as ex:
                emit(event="launch_error", name=name, error=str(ex))
                os._exit(3)

    def meta(e):
        types = e.types.decode()
        shapes = [[int(d) for d in s.split("x")] if s else [] for s in e.shapes.decode().split(",")]
        return {"name": e.name.decode(), "op": e.op.decode(), "types": types,
                "shapes": e.shapes.decode(), "attrs": e.attrs.decode(),
                "workspace_bytes": e.workspace_bytes,
                "bytes": launcher_bytes(e.op.decode(), types, shapes, act_bytes)}

    class Table:
        def __init__(self, count):
            self.count = count

        def in_dll(self, library, symbol):
            entries = [Entry(r) for r in (RealOp * self.count).in_dll(library, symbol)]
            emit(event="table", count=self.count, launchers=[meta(e) for e in entries])
            return [e for e in entries if e.name.decode() not in skip]

    class OpShim:
        def __mul__(self, count):
            return Table(count)

    class Tee:
        def __init__(self, out):
            self.out, self.buf = out, ""

        def write(self, s):
            self.out.write(s)
            self.buf += s
            while "\n" in self.buf:
                line, self.buf = self.buf.split("\n", 1)
                emit(event="stdout", line=line)
            return len(s)

        def flush(self):
            self.out.flush()

    ce.Op = OpShim()
    ce.ctypes = _tolerant_ctypes()
    sys.argv = [ce.__file__, a["library"], a["act"], str(a["seed"])]
    sys.stdout = Tee(sys.stdout)
    try:
        if emulate:
            rc = ce.main()
        else:
            with torch.device("cuda"):
                rc = ce.main()
    except Exception:  # noqa: BLE001
        emit(event="exception", error=traceback.format_exc()[-4000:])
        os._exit(2)
    emit(event="main_returned", rc=rc)
    return {"main_rc": rc}


# ------------------------------------------------------------------ sdpa --

def child_sdpa(a, emit):
    import torch
    import torch.nn.functional as F
    if not hasattr(F, "scaled_dot_product_attention"):
        return {"status": "skipped", "reason": "skipped: torch %s has no scaled_dot_product_attention"
                % torch.__version__}
    if a["emulate"]:
        return {"status": "skipped", "reason": "skipped: emulated (SDPA on a CPU says nothing about flash)"}
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        ctx = lambda: sdpa_kernel([SDPBackend.FLASH_ATTENTION])  # noqa: E731
        backend = "flash (torch.nn.attention.sdpa_kernel([SDPBackend.FLASH_ATTENTION]))"
    except Exception:  # noqa: BLE001
        ctx = lambda: torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False,  # noqa: E731
                                                     enable_mem_efficient=False)
        backend = "flash (torch.backends.cuda.sdp_kernel)"
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")

    def timed(fn, reps=20):
        for _ in range(3):
            fn()
        return _stats_us(_event_times(fn, reps, flush))

    out = []
    for shp in a["shapes"]:
        b, s, h, d, kv, scale = shp["b"], shp["s"], shp["h"], shp["d"], shp["kv"], shp["scale"]
        fwd_flops = 4.0 * b * s * s * h * d / 2
        r = {"shape": shp, "backend": backend,
             "layout": "q [B,H,S,D] (a transposed view of [B,S,H,D], as HF passes it); k, v expanded "
                       "from %d to %d heads before timing (the expansion is not timed)" % (kv, h),
             "flops_forward": fwd_flops, "flops_backward": 2.5 * fwd_flops}
        try:
            torch.manual_seed(0)
            q = torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
            k = torch.randn(b, s, kv, d, device="cuda", dtype=torch.bfloat16).repeat_interleave(h // kv, dim=2)
            v = torch.randn(b, s, kv, d, device="cuda", dtype=torch.bfloat16).repeat_interleave(h // kv, dim=2)
            k, v = k.transpose(1, 2), v.transpose(1, 2)
            q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
            with ctx():
                fwd = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale))
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
                do = torch.randn_like(o)
                bwd = timed(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True))
            fwd["tflops"] = round(fwd_flops / (fwd["median_us"] * 1e-6) / 1e12, 2)
            bwd["tflops"] = round(2.5 * fwd_flops / (bwd["median_us"] * 1e-6) / 1e12, 2)
            r.update(forward=fwd, backward=bwd)
        except Exception:  # noqa: BLE001
            r["error"] = traceback.format_exc()[-2000:]
        emit(event="shape_done", result=r)
        out.append(r)
    return {"status": "ok", "results": out}


# ------------------------------------------------------- attention sweep --

def child_attention_sweep(a, emit):
    """Our tensor-core attention forward and backward (attention-bench.so)
    beside torch SDPA (flash backend) over sequence lengths and head dims,
    causal, bf16: TF/s of both, our output and gradients against SDPA's
    (relative L2), our lse against float64 torch for the first (batch,
    head). The forward is the one training runs (wgmma, sm_90a); the
    FlashAttention-2 forward on mma.sync is checked and timed beside it
    (`ours_mma_sync`), as is the backward on mma.sync
    (`ours_backward_mma_sync`). Emulated: tiny shapes on the CPU against
    float64 torch autograd, no timing."""
    import ctypes
    import torch
    lib = ctypes.CDLL(a["library"])
    for fn in (lib.gpu_check_flash_forward, lib.gpu_check_flash_forward_mma):
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 5 + \
            [ctypes.c_long] * 4 + [ctypes.c_float, ctypes.c_void_p]
    if not a["emulate"]:
        lib.gpu_check_error_string.restype = ctypes.c_char_p
    for fn in (lib.gpu_check_flash_backward, lib.gpu_check_flash_backward_mma):
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 9 + \
            [ctypes.c_long] * 4 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p]
    emulate = a["emulate"]
    dev = "cpu" if emulate else "cuda"
    sdpa = None
    if not emulate:
        import torch.nn.functional as F
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            ctx = lambda: sdpa_kernel([SDPBackend.FLASH_ATTENTION])  # noqa: E731
        except Exception:  # noqa: BLE001
            ctx = lambda: torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False,  # noqa: E731
                                                         enable_mem_efficient=False)
        sdpa = lambda q, k, v, scale: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)  # noqa: E731
        flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")

    def reference(q, k, v, scale, b=None, h=None):
        """Causal attention in float64 (q [B,S,H,D], k/v [B,S,KV,D]); o and lse."""
        B, S, H, D = q.shape
        g = H // k.shape[2]
        qd = q.double().permute(0, 2, 1, 3)
        kd = k.double().repeat_interleave(g, dim=2).permute(0, 2, 1, 3)
        vd = v.double().repeat_interleave(g, dim=2).permute(0, 2, 1, 3)
        s = qd @ kd.transpose(-1, -2) * scale
        s = s.masked_fill(torch.triu(torch.ones(S, S, dtype=torch.bool, device=q.device), 1), float("-inf"))
        lse = torch.logsumexp(s, dim=-1)
        return (torch.softmax(s, dim=-1) @ vd).permute(0, 2, 1, 3), lse

    def rel(x, y):
        return ((x.double() - y.double()).norm() / y.double().norm()).item()

    def reference_grads(q, k, v, do, scale):
        """dq, dk, dv of the float64 reference by autograd."""
        qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
        o, _ = reference(qd, kd, vd, scale)
        return torch.autograd.grad(o, (qd, kd, vd), do.double())

    out = []
    for shp in a["shapes"]:
        b, s, h, kv, d = shp["b"], shp["s"], shp["h"], shp["kv"], shp["d"]
        scale = d ** -0.5
        flops = 4.0 * b * s * s * h * d / 2
        r = {"shape": shp, "flops_forward": flops}
        try:
            torch.manual_seed(0)
            q = torch.randn(b, s, h, d, device=dev, dtype=torch.bfloat16)
            k = torch.randn(b, s, kv, d, device=dev, dtype=torch.bfloat16)
            v = torch.randn(b, s, kv, d, device=dev, dtype=torch.bfloat16)
            o = torch.empty_like(q)
            lse = torch.empty(b, h, s, device=dev, dtype=torch.float32)
            stream = None if emulate else torch.cuda.current_stream().cuda_stream

            o_mma, lse_mma = torch.empty_like(o), torch.empty_like(lse)

            def ours(fn=lib.gpu_check_flash_forward, o=o, lse=lse):
                rc = fn(d, q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(),
                        lse.data_ptr(), b, s, h, kv, scale, stream)
                if rc != 0:
                    raise RuntimeError("gpu_check_flash_forward: no kernel for head dim %d" % d)

            def ours_mma():
                ours(lib.gpu_check_flash_forward_mma, o_mma, lse_mma)
            do = torch.randn_like(q)
            dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(k)
            ws = torch.empty(b * h * s, device=dev, dtype=torch.float32)

            dq_m, dk_m, dv_m = torch.empty_like(q), torch.empty_like(k), torch.empty_like(k)

            def ours_bwd(fn=lib.gpu_check_flash_backward, dq=dq, dk=dk, dv=dv):
                rc = fn(d, do.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(),
                        o.data_ptr(), lse.data_ptr(), dq.data_ptr(), dk.data_ptr(),
                        dv.data_ptr(), b, s, h, kv, scale, ws.data_ptr(), stream)
                if rc != 0:
                    raise RuntimeError("gpu_check_flash_backward: no kernel for head dim %d" % d)

            def ours_bwd_mma():
                ours_bwd(lib.gpu_check_flash_backward_mma, dq_m, dk_m, dv_m)
            ours()
            ours_mma()
            ours_bwd()
            ours_bwd_mma()
            if emulate:
                want_o, want_lse = reference(q, k, v, scale)
                r["o_rel_l2_vs_float64"] = round(rel(o, want_o), 6)
                r["lse_rel_l2_vs_float64"] = round(rel(lse, want_lse), 9)
                r["mma_sync_o_rel_l2_vs_float64"] = round(rel(o_mma, want_o), 6)
                wq, wk, wv = reference_grads(q, k, v, do, scale)
                r["grads_rel_l2_vs_float64"] = [round(rel(x, y), 6) for x, y in ((dq, wq), (dk, wk), (dv, wv))]
                r["mma_sync_grads_rel_l2_vs_float64"] = [round(rel(x, y), 6) for x, y in
                                                         ((dq_m, wq), (dk_m, wk), (dv_m, wv))]
                r["correct"] = (r["o_rel_l2_vs_float64"] < 1e-2 and r["lse_rel_l2_vs_float64"] < 1e-5
                                and r["mma_sync_o_rel_l2_vs_float64"] < 1e-2
                                and max(r["grads_rel_l2_vs_float64"]) < 1e-2
                                and max(r["mma_sync_grads_rel_l2_vs_float64"]) < 1e-2)
            else:
                torch.cuda.synchronize()
                err = lib.gpu_check_last_error()
                if err:
                    raise RuntimeError("launch error %d: %s" % (err, lib.gpu_check_error_string(err)))
                # SDPA on [B, H, S, D] views; K/V expanded to H heads from leaves of
                # [B, S, KV, D], so autograd sums the group's gradients as ours does.
                qs, ks, vs = (t.detach().requires_grad_() for t in (q, k, v))
                qt = qs.transpose(1, 2)
                kt = ks.repeat_interleave(h // kv, dim=2).transpose(1, 2)
                vt = vs.repeat_interleave(h // kv, dim=2).transpose(1, 2)
                reps = 20 if s <= 2048 else 6
                with ctx():
                    out_t = sdpa(qt, kt, vt, scale)
                    ref = out_t.transpose(1, 2)
                    gq, gk, gv = torch.autograd.grad(out_t, (qs, ks, vs), do.transpose(1, 2), retain_graph=True)
                    for _ in range(2):
                        ours()
                    mine = _stats_us(_event_times(ours, reps, flush))
                    for _ in range(2):
                        ours_mma()
                    mine_mma = _stats_us(_event_times(ours_mma, reps, flush))
                    for _ in range(2):
                        ours_bwd()
                    mine_bwd = _stats_us(_event_times(ours_bwd, reps, flush))
                    for _ in range(2):
                        ours_bwd_mma()
                    mine_bwd_mma = _stats_us(_event_times(ours_bwd_mma, reps, flush))
                    for _ in range(2):
                        sdpa(qt, kt, vt, scale)
                    theirs = _stats_us(_event_times(lambda: sdpa(qt, kt, vt, scale), reps, flush))
                    theirs_bwd = _stats_us(_event_times(
                        lambda: torch.autograd.grad(out_t, (qt, kt, vt), do.transpose(1, 2), retain_graph=True),
                        reps, flush))
                torch.cuda.synchronize()
                err = lib.gpu_check_last_error()
                if err:
                    raise RuntimeError("launch error %d: %s" % (err, lib.gpu_check_error_string(err)))
                one = reference(q[:1, :, :1], k[:1, :, :1], v[:1, :, :1], scale)[1]
                r["o_rel_l2_vs_sdpa"] = round(rel(o, ref), 6)
                r["mma_sync_o_rel_l2_vs_sdpa"] = round(rel(o_mma, ref), 6)
                r["lse_rel_l2_vs_float64_first_head"] = round(rel(lse[:1, :1], one), 9)
                r["grads_rel_l2_vs_sdpa"] = [round(rel(x, y), 6) for x, y in ((dq, gq), (dk, gk), (dv, gv))]
                r["mma_sync_grads_rel_l2_vs_sdpa"] = [round(rel(x, y), 6) for x, y in
                                                      ((dq_m, gq), (dk_m, gk), (dv_m, gv))]
                r["correct"] = (r["o_rel_l2_vs_sdpa"] < 1e-2 and r["lse_rel_l2_vs_float64_first_head"] < 1e-5
                                and r["mma_sync_o_rel_l2_vs_sdpa"] < 1e-2
                                and max(r["grads_rel_l2_vs_sdpa"]) < 2e-2
                                and max(r["mma_sync_grads_rel_l2_vs_sdpa"]) < 2e-2)
                for t, f in ((mine, flops), (mine_mma, flops), (theirs, flops), (mine_bwd, 2.5 * flops),
                             (mine_bwd_mma, 2.5 * flops), (theirs_bwd, 2.5 * flops)):
                    t["tflops"] = round(f / (t["median_us"] * 1e-6) / 1e12, 2)
                r.update(ours=mine, ours_mma_sync=mine_mma, sdpa=theirs, ours_backward=mine_bwd,
                         ours_backward_mma_sync=mine_bwd_mma, sdpa_backward=theirs_bwd,
                         ours_time_over_sdpa=round(mine["median_us"] / theirs["median_us"], 3),
                         ours_backward_time_over_sdpa=round(mine_bwd["median_us"] / theirs_bwd["median_us"], 3))
        except Exception:  # noqa: BLE001
            r["error"] = traceback.format_exc()[-2000:]
        emit(event="shape_done", result=r)
        out.append(r)
    return {"status": "ok", "results": out}


# -------------------------------------------------------------------- hf --

def child_hf(a, emit):
    import torch
    import importlib.util
    if importlib.util.find_spec("transformers") is None:
        return {"status": "skipped", "reason": "skipped: transformers not installed"}
    if a.get("compile") and not hasattr(torch, "compile"):
        return {"status": "skipped", "reason": "skipped: torch %s has no torch.compile" % torch.__version__}
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
    emulate = a["emulate"]
    dev = "cpu" if emulate else "cuda"
    b, s = a["batch"], a["seq"]
    cfg = json.load(open(a["config"]))
    cfg.pop("_name_or_path", None)
    config = LlamaConfig.from_dict(cfg)
    config.use_cache = False
    try:
        config._attn_implementation = "sdpa"
    except Exception:  # noqa: BLE001
        pass
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with (contextlib.nullcontext() if emulate else torch.device(dev)):
        model = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16)
    model.train()
    params = [p for p in model.parameters()]
    res = {"transformers": transformers.__version__, "torch": torch.__version__,
           "attn_implementation": getattr(model.config, "_attn_implementation", None),
           "params": sum(p.numel() for p in params),
           "precision": "bf16 parameters, gradients and AdamW moments (no fp32 master weights)",
           "optimizer": "torch.optim.AdamW(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1%s) "
                        "after clip_grad_norm_(1.0); loss = model(input_ids=x, labels=x).loss"
                        % ("" if emulate else ", fused=True"),
           "batch": b, "seq": s, "build_s": round(time.perf_counter() - t0, 1)}
    emit(event="partial", data=res)
    opt = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            **({} if emulate else {"fused": True}))
    run = model
    if a.get("compile"):
        run = torch.compile(model)
        res["compile"] = "torch.compile(model) (default mode); the optimizer step is not compiled"
    xs = [torch.randint(0, config.vocab_size, (b, s), device=dev) for _ in range(4)]

    def step(i):
        x = xs[i % len(xs)]
        loss = run(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = (lambda: None) if emulate else torch.cuda.synchronize
    t0 = time.perf_counter()
    loss0 = float(step(0))
    sync()
    res["first_step_s"] = round(time.perf_counter() - t0, 2)
    emit(event="first_step", seconds=res["first_step_s"], loss=loss0)
    for i in range(1, a["warmup"]):
        step(i)
    sync()
    emit(event="warm")
    times, losses = [], []
    for i in range(a["steps"]):
        if emulate:
            t = time.perf_counter()
            losses.append(step(i))
            times.append(time.perf_counter() - t)
        else:
            st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            st.record()
            losses.append(step(i))
            en.record()
            times.append((st, en))
    sync()
    if not emulate:
        times = [st.elapsed_time(en) / 1e3 for st, en in times]
    med = statistics.median(times)
    res.update({
        "timing": "%s around each whole step (forward, backward, clip, AdamW, zero_grad); %d warm-up "
                  "steps first (the first, with any compilation, timed alone as first_step_s); median of %d"
                  % ("host clock" if emulate else "CUDA events", a["warmup"], len(times)),
        "step_ms": {"median": round(med * 1e3, 2), "min": round(min(times) * 1e3, 2),
                    "max": round(max(times) * 1e3, 2), "n": len(times)},
        "tokens_per_step": b * s, "tokens_per_s": round(b * s / med, 1),
        "loss_first": loss0, "loss_last": float(losses[-1]),
        "max_memory_allocated_bytes": None if emulate else torch.cuda.max_memory_allocated()})
    return dict(res, status="ok")


CHILDREN = {"device": child_device, "kernels": child_kernels, "sdpa": child_sdpa, "hf": child_hf,
            "attention_sweep": child_attention_sweep}


def main(name, args_path, progress_path):
    emit = Emit(progress_path)
    a = json.load(open(args_path))
    emit(event="begin", child=name, pid=os.getpid())
    try:
        result = CHILDREN[name](a, emit)
    except Exception:  # noqa: BLE001
        emit(event="exception", error=traceback.format_exc()[-4000:])
        return 2
    emit(event="result", result=result)
    return 0
