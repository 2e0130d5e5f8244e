"""Shared by prepare, run and the section processes: paths, JSON files,
processes with time limits, library discovery, token shards, report parsing."""
import datetime
import glob
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PKG = os.path.dirname(os.path.abspath(__file__))
SCHEMA = "llama-mlir/gpu-check/1"

# H100 SXM dense bf16 peak (NVIDIA datasheet), the MFU denominator.
PEAK_BF16_TFLOPS = 989.0

# Libraries a training binary may link that every Linux system the device
# machine could run has (glibc, the C++ runtime); everything else ldd lists
# is carried (prepare) except the CUDA libraries, which come from the device.
CORE_LIBS = ("linux-vdso", "ld-linux", "libc.so", "libm.so", "libpthread.so", "libdl.so",
             "librt.so", "libstdc++.so", "libgcc_s.so")
DEVICE_LIBS = ("libcublasLt.so", "libcublas.so", "libcudart.so", "libnccl.so", "libcuda.so")
# What run looks for on the device, to record and to put on LD_LIBRARY_PATH.
WANTED_SONAMES = ("libcublasLt.so.13", "libcudart.so.13", "libnccl.so.2", "libcublas.so.13")


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_date():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def write_json(path, obj):
    """Atomic: a reader (or a kill mid-write) never sees half a file."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp%d" % os.getpid()
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_jsonl(path):
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "unparsable", "line": line[:500]})
    return out


def sig(x, digits=4):
    """x rounded to `digits` significant digits (None stays None)."""
    if x is None or x == 0:
        return x
    import math
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def tail(text, n=4000):
    if text is None:
        return None
    return text if len(text) <= n else "...[%d chars cut]...%s" % (len(text) - n, text[-n:])


RUNNING = set()  # child processes (each its own process group), killed on SIGTERM


def run_cmd(cmd, timeout, env=None, cwd=None, log=None, stdin=None):
    """Runs cmd in its own process group; kills the group at the timeout.
    Returns dict(rc, elapsed_s, timed_out, output). rc is None on timeout,
    negative for a signal."""
    t0 = time.monotonic()
    with open(log, "ab") if log else open(os.devnull, "wb") as logf:
        if log:
            logf.write(("$ %s\n" % " ".join(cmd)).encode())
            logf.flush()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                             cwd=cwd, start_new_session=True,
                             stdin=subprocess.DEVNULL if stdin is None else stdin)
        RUNNING.add(p)
        try:
            out, _ = p.communicate(timeout=max(1.0, timeout))
            timed_out = False
        except subprocess.TimeoutExpired:
            kill_group(p)
            out, _ = p.communicate()
            timed_out = True
        finally:
            RUNNING.discard(p)
        text = out.decode("utf-8", "replace")
        if log:
            logf.write(out)
            logf.write(("[rc %s%s, %.1f s]\n" % (p.returncode, ", timed out" if timed_out else "",
                                                 time.monotonic() - t0)).encode())
    return {"rc": None if timed_out else p.returncode, "elapsed_s": round(time.monotonic() - t0, 2),
            "timed_out": timed_out, "output": text}


def kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def lib_search_dirs():
    """Folders that may hold the CUDA libraries: the Python environment's
    nvidia/*/lib (pip wheels, what torch loads), the toolkit's, ldconfig's."""
    dirs = []
    try:
        import importlib.util
        spec = importlib.util.find_spec("nvidia")
        for base in (spec.submodule_search_locations or []) if spec else []:
            dirs += sorted(glob.glob(os.path.join(base, "*", "lib")))
            dirs += sorted(glob.glob(os.path.join(base, "*", "*", "lib")))
    except Exception:  # noqa: BLE001 (discovery is best effort; run records what it found)
        pass
    for d in ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
              "/usr/local/cuda/lib", "/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu"):
        dirs.append(d)
    return [d for i, d in enumerate(dirs) if os.path.isdir(d) and d not in dirs[:i]]


def find_libs(sonames=WANTED_SONAMES):
    """{soname: [paths]} over lib_search_dirs() and `ldconfig -p`."""
    found = {s: [] for s in sonames}
    for d in lib_search_dirs():
        for s in sonames:
            p = os.path.join(d, s)
            if os.path.exists(p):
                found[s].append(p)
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            for s in sonames:
                if line.strip().startswith(s + " ") and "=>" in line:
                    p = line.split("=>", 1)[1].strip()
                    if p not in found[s]:
                        found[s].append(p)
    except Exception:  # noqa: BLE001
        pass
    return found


def library_path(found, extra=()):
    """LD_LIBRARY_PATH: extra folders first, then each wanted library's first
    folder (pip's before the toolkit's), then what was set before."""
    dirs = list(extra)
    for s in WANTED_SONAMES:
        for p in found.get(s, []):
            d = os.path.dirname(p)
            if d not in dirs:
                dirs.append(d)
            break
    old = os.environ.get("LD_LIBRARY_PATH", "")
    return ":".join(dirs + ([old] if old else []))


def write_shards(d, vocab, n_train, n_val, seed):
    """Token shards in runtime/data/shards.h's format (as test/integration/
    common.sh write_shards): a noisy repeating sequence."""
    import random
    os.makedirs(d, exist_ok=True)
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        if n <= 0:
            continue
        toks = [((i * 7 + (i // 13)) % vocab) if rng.random() > 0.1 else rng.randrange(vocab)
                for i in range(n)]
        dtype = 0 if vocab <= 65535 else 1
        body = struct.pack("<%d%s" % (n, "H" if dtype == 0 else "i"), *toks)
        h = 0xcbf29ce484222325
        for x in body:
            h = ((h ^ x) * 0x100000001b3) & 0xffffffffffffffff
        hdr = b"LLMTOKS\0" + struct.pack("<IIQQQ", 1, dtype, vocab, n, h)
        with open(os.path.join(d, "%s_00000.tok" % split), "wb") as f:
            f.write(hdr + b"\0" * (64 - len(hdr)) + body)


def parse_fields(text):
    """`key: value` lines (llama-compile --report, BIN memcheck) -> dict of
    ints/floats/strings."""
    out = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        k, v = line.split(":", 1)
        k, v = k.strip(), v.strip()
        if not k or " " in k:
            continue
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def dir_bytes(path):
    total = 0
    for base, _, files in os.walk(path):
        for f in files:
            p = os.path.join(base, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def find_nvcc():
    for c in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if c and os.access(c, os.X_OK):
            return c
    return None


def log(msg):
    sys.stderr.write("[gpu-check %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()
