"""Phase 1, where llama-compile (MLIR) runs: everything the device cannot make.

Writes into DIR:
  kernels-bf16.cu / .so   the generated kernels of the benchmark model (bf16
                          storage), compiled by nvcc for sm_90a with
                          launch_check.cu (device), or as C++ under
                          -DLLAMA_CUDA_EMULATE (emulated)
  kernels-f32.cu / .so    the same for fp32 storage at a small shape
  train-bf16              the GPU training binary (--cuda-emulate when emulated)
  report.txt              llama-compile --report --target cuda of that binary
  hf-config.json          the model's HF config (the HF comparison builds it)
  libllamart_cuda.a       (device) to relink the kernel libraries there if the
                          ones built here do not load
  libs.tar.xz             (device) the shared libraries the binary links that a
                          bare CUDA machine lacks (ldd, minus glibc/libstdc++/CUDA)
  manifest.json           commands, shapes, sizes, the commit, calls per step
"""
import glob
import json
import os
import re
import shutil
import subprocess
import tarfile
import time

from . import common
from .common import ROOT, log

# The benchmark model (device) and the emulated one (CI). TinyLlama at seq
# 2048, batch 4 needs 27.7 GB of device memory (--report); the bf16 kernel
# library is compiled at the same shape so that its launchers are the
# binary's. The fp32-storage library checks the other instantiation of every
# kernel at a small shape.
DEVICE_MODEL = ["--preset", "tinyllama-1.1b", "--seq-len", "2048", "--batch", "4"]
DEVICE_F32 = ["--preset", "tiny", "--seq-len", "256", "--batch", "4"]
EMU_MODEL = ["--preset", "micro", "--seq-len", "8", "--batch", "2"]
EMU_F32 = ["--preset", "micro", "--seq-len", "16", "--batch", "5"]
NVCC_FLAGS = ["-shared", "-Xcompiler", "-fPIC", "-arch=sm_90a", "-std=c++17", "-O3"]
EMU_FLAGS = ["-std=c++17", "-O1", "-fopenmp", "-fPIC", "-shared", "-DLLAMA_CUDA_EMULATE"]
CARRY_LIMIT = 64 << 20  # the device tool's limit on what travels (tree + carried)


class PrepareError(RuntimeError):
    pass


def _run(manifest, cmd, what, timeout=1800, **kw):
    log("%s: %s" % (what, " ".join(cmd)))
    r = common.run_cmd(cmd, timeout, **kw)
    manifest["commands"].append({"what": what, "command": cmd, "rc": r["rc"],
                                 "elapsed_s": r["elapsed_s"]})
    if r["rc"] != 0:
        raise PrepareError("%s failed (rc %s):\n%s" % (what, r["rc"], common.tail(r["output"])))
    return r["output"]


def _exclude(dirpath):
    """Adds DIR to .git/info/exclude when it lies inside the repository, so
    that it travels only as a carried path."""
    rel = os.path.relpath(os.path.abspath(dirpath), ROOT)
    if rel.startswith(".."):
        return None
    git_dir = os.path.join(ROOT, ".git")
    if os.path.isfile(git_dir):  # a worktree: .git names the real folder
        line = open(git_dir).read().strip()
        if line.startswith("gitdir:"):
            git_dir = os.path.join(ROOT, line.split(":", 1)[1].strip())
    if not os.path.isdir(git_dir):
        return None
    info = os.path.join(git_dir, "info")
    os.makedirs(info, exist_ok=True)
    path = os.path.join(info, "exclude")
    pattern = "/%s/" % rel.strip("/")
    lines = open(path).read().splitlines() if os.path.exists(path) else []
    if pattern not in lines:
        with open(path, "a") as f:
            f.write(pattern + "\n")
    return pattern


def _git():
    def g(*args):
        try:
            return subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True,
                                  text=True, timeout=30).stdout
        except Exception:  # noqa: BLE001
            return None
    status = g("status", "--porcelain") or ""
    return {"commit": (g("rev-parse", "HEAD") or "").strip() or None,
            "subject": (g("log", "-1", "--format=%s") or "").strip(),
            "dirty_paths": [l[3:] for l in status.splitlines() if len(l) > 3][:200]}


def _tree_bytes(exclude_dir):
    """Bytes of what the device tool sends besides carried paths: tracked and
    untracked-not-ignored files."""
    try:
        out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "-co", "--exclude-standard"],
                             capture_output=True, timeout=60).stdout
    except Exception:  # noqa: BLE001
        return None
    total = 0
    ex = os.path.abspath(exclude_dir) + os.sep
    for rel in out.decode().split("\0"):
        p = os.path.join(ROOT, rel)
        if rel and os.path.isfile(p) and not os.path.islink(p) and not p.startswith(ex):
            total += os.path.getsize(p)
    return total


def _calls_per_step(source):
    """{launcher: calls in llama_cuda_train_step} and the GEMM count, from
    the generated host step (one call per use; layers share launchers)."""
    text = open(source).read()
    m = re.search(r'extern "C" void llama_cuda_train_step\(', text)
    if not m:
        return {}, None
    end = text.find("\n}\n", m.end())
    body = text[m.end():end if end > 0 else len(text)]
    calls = {}
    for name in re.findall(r"\b(op_\d+_\w+)\(b, workspace, stream\)", body):
        calls[name] = calls.get(name, 0) + 1
    return calls, len(re.findall(r"\bllama_gemm\(", body))


def _table(source):
    """The launcher table's rows (name, op, types, shapes), read from the
    source (the run reads the library's own table; this is for the manifest)."""
    rows = []
    for m in re.finditer(r'^\s*\{"(op_\d+_\w+)", "([\w.]+)", "(\w*)", "([\dx,]*)"', open(source).read(), re.M):
        rows.append({"name": m.group(1), "op": m.group(2), "types": m.group(3), "shapes": m.group(4)})
    return rows


def _carry_libs(binary, dest, manifest):
    """Packs the binary's non-system, non-CUDA shared libraries (ldd) into
    dest (xz: openblas alone is 36 MB raw, about 4 MB packed)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=60).stdout
    libs, missing = [], []
    for line in out.splitlines():
        line = line.strip()
        name = line.split()[0] if line else ""
        if not name or any(name.startswith(c) for c in common.CORE_LIBS):
            continue
        if any(name.startswith(c) for c in common.DEVICE_LIBS):
            continue
        if "=> not found" in line:
            missing.append(name)
            continue
        m = re.search(r"=> (\S+)", line)
        if m:
            libs.append((name, os.path.realpath(m.group(1))))
    if missing:
        raise PrepareError("ldd %s: not found here: %s" % (binary, ", ".join(missing)))
    t0 = time.monotonic()
    with tarfile.open(dest, "w:xz", preset=6) as tar:
        for name, path in libs:
            tar.add(path, arcname=name)  # under the soname the binary asks for
    manifest["carried_libs"] = {"file": os.path.basename(dest), "bytes": os.path.getsize(dest),
                                "libs": {n: p for n, p in libs}, "ldd_here": out.splitlines(),
                                "pack_s": round(time.monotonic() - t0, 1)}


def prepare(dirpath, build, emulate):
    t_start = time.monotonic()
    dirpath = os.path.abspath(dirpath)
    llama = os.path.join(build, "bin", "llama-compile")
    if not os.access(llama, os.X_OK):
        raise PrepareError("%s not found or not executable (build the project first)" % llama)
    if os.path.isdir(dirpath):
        shutil.rmtree(dirpath)
    os.makedirs(dirpath)
    manifest = {"schema": common.SCHEMA, "created_utc": common.utc_now(), "emulated": emulate,
                "git": _git(), "build": build, "commands": [],
                "excluded_as": _exclude(dirpath)}
    model = EMU_MODEL if emulate else DEVICE_MODEL
    f32 = EMU_F32 if emulate else DEVICE_F32
    manifest["model_args"], manifest["f32_kernel_args"] = model, f32
    d = lambda name: os.path.join(dirpath, name)  # noqa: E731

    _run(manifest, [llama] + model + ["--emit", "hf-config", "-o", d("hf-config.json")], "hf-config")
    report = _run(manifest, [llama] + model + ["--target", "cuda", "--report"], "report")
    open(d("report.txt"), "w").write(report)
    manifest["report"] = common.parse_fields(report)

    libs = {}
    for act, args in (("bf16", model), ("f32", f32)):
        src = d("kernels-%s.cu" % act)
        _run(manifest, [llama] + args + ["--target", "cuda", "--emit", "kernels",
                                         "--cuda-activations", act, "-o", src], "emit %s kernels" % act)
        so = d("kernels-%s.so" % act)
        if emulate:
            cpp = d("kernels-%s.cpp" % act)
            shutil.copy(src, cpp)
            blas = sorted(glob.glob("/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so*"))
            if not blas:
                raise PrepareError("no OpenBLAS (openblas-openmp) for the emulated kernel library")
            _run(manifest, [os.environ.get("CXX", "g++")] + EMU_FLAGS +
                 ["-I" + ROOT, cpp, os.path.join(build, "runtime", "libllamart_nomain.a"), blas[0],
                  "-o", so], "build %s kernel library (emulated)" % act)
        else:
            nvcc = common.find_nvcc()
            if not nvcc:
                raise PrepareError("no nvcc ($CUDACXX, PATH, /usr/local/cuda/bin/nvcc)")
            _run(manifest, [nvcc] + NVCC_FLAGS + ["-I" + ROOT, src,
                                                  os.path.join(common.PKG, "launch_check.cu"),
                                                  os.path.join(build, "runtime", "cuda", "libllamart_cuda.a"),
                                                  "-lcublasLt", "-o", so],
                 "build %s kernel library (nvcc)" % act)
        calls, gemms = _calls_per_step(src)
        table = _table(src)
        libs[act] = {"source": os.path.basename(src), "library": os.path.basename(so),
                     "args": args, "launchers": len(table), "table": table,
                     "calls_per_train_step": calls, "gemms_per_train_step": gemms}
    manifest["kernel_libraries"] = libs

    # The tensor-core attention forward alone, for the attention sweep.
    bench = os.path.join(common.PKG, "attention_bench.cu")
    so = d("attention-bench.so")
    if emulate:
        cpp = d("attention-bench.cpp")
        shutil.copy(bench, cpp)
        _run(manifest, [os.environ.get("CXX", "g++")] + EMU_FLAGS + ["-I" + ROOT, cpp, "-o", so],
             "build the attention bench library (emulated)")
        os.remove(cpp)
    else:
        _run(manifest, [common.find_nvcc()] + NVCC_FLAGS +
             ["-I" + ROOT, bench, os.path.join(common.PKG, "launch_check.cu"), "-o", so],
             "build the attention bench library (nvcc)")
    manifest["attention_bench"] = {"library": os.path.basename(so), "head_dims": [64, 128]}
    if not emulate:
        shutil.copy(os.path.join(build, "runtime", "cuda", "libllamart_cuda.a"), d("libllamart_cuda.a"))

    binary = d("train-bf16")
    _run(manifest, [llama] + model + ["--target", "cuda"] + (["--cuda-emulate"] if emulate else []) +
         ["-o", binary], "build training binary")
    info = _run(manifest, [binary, "info", "--json"], "binary info")
    manifest["binary_info"] = json.loads(info)
    if not emulate:
        _carry_libs(binary, d("libs.tar.xz"), manifest)

    sizes = {}
    for f in sorted(os.listdir(dirpath)):
        if os.path.isfile(d(f)):
            sizes[f] = os.path.getsize(d(f))
    tree = _tree_bytes(dirpath)
    total = sum(sizes.values()) + (tree or 0)
    manifest["sizes"] = {"files": sizes, "dir_bytes": sum(sizes.values()) + 4096,
                         "working_tree_bytes": tree, "travels_bytes": total,
                         "limit_bytes": CARRY_LIMIT}
    manifest["prepare_s"] = round(time.monotonic() - t_start, 1)
    common.write_json(d("manifest.json"), manifest)
    if not emulate and total > CARRY_LIMIT * 0.95:
        raise PrepareError("%s + working tree = %.1f MiB: over (or within 5%% of) the device tool's "
                           "64 MiB" % (dirpath, total / 2**20))
    log("prepared %s in %.0f s: %s; with the working tree %.1f MiB of 64 travel" % (
        dirpath, manifest["prepare_s"], ", ".join("%s %.1f MiB" % (k, v / 2**20) for k, v in sizes.items()),
        total / 2**20))
    return manifest
