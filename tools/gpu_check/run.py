"""Phase 2, on the GPU machine (or emulated on the CPU): every section in its
own time box, the JSON rewritten after each one.

Sections, in order (a later one still runs when an earlier one failed):
  device            nvidia-smi, torch's view, where the CUDA libraries are, the
                    device-to-device copy bandwidth (the memory ceiling)
  kernels_bf16      every launcher of the benchmark model's kernel library:
                    checked against float64 PyTorch by test/integration/
                    cuda_emulation.py on device tensors, and timed
  train_ours        our training binary: tokens/s and MFU on synthetic shards
  train_hf          HF LlamaForCausalLM, same config, batch and sequence
  attention_sdpa    torch SDPA (flash) at our attention launchers' shapes
  attention_sweep   our tensor-core attention forward and backward beside SDPA (flash),
                    seq 1k-8k, head dims 64 and 128, causal: TF/s and correctness (the
                    forward on wgmma, and the mma.sync one beside it)
  memcheck          the binary's measured memory against --report's estimate
  kernels_f32       the fp32-storage kernel library (small shape), checked
  train_hf_compile  the HF model under torch.compile (gets the time left)
"""
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time

from . import common
from .common import PEAK_BF16_TFLOPS, ROOT, log

DEVICE_BUDGET_S = 420   # fits an 8-minute device call with start-up to spare
EMU_BUDGET_S = 900
TARGET_FRACTION = 0.8   # the target: memory-bound kernels >= 80% of copy bandwidth
EMU_NOTE = ("EMULATED: kernels ran on the CPU through runtime/cuda/emulate.h and torch on the CPU, at "
            "micro shapes; every time, bandwidth, tokens/s and MFU in this file is meaningless. Only "
            "the structure and the correctness checks (kernels vs float64 PyTorch, memcheck) mean "
            "something.")


class Run:
    def __init__(self, dirpath, emulate, budget, json_paths, only=None):
        self.only = only
        self.dir = os.path.abspath(dirpath)
        self.emulate = emulate
        self.budget = budget
        self.t0 = time.monotonic()
        self.logs = os.path.join(self.dir, "logs")
        if os.path.isdir(self.logs):
            shutil.rmtree(self.logs)
        os.makedirs(self.logs)
        self.manifest = common.read_json(os.path.join(self.dir, "manifest.json"))
        if bool(self.manifest.get("emulated")) != emulate:
            raise SystemExit("gpu-check: %s was prepared %s; run it %s" % (
                self.dir, "emulated" if self.manifest.get("emulated") else "for the device",
                "with --emulate" if self.manifest.get("emulated") else "without --emulate"))
        self.paths = list(json_paths)
        self.out_dir = os.environ.get("OUT")
        self.result = {
            "schema": common.SCHEMA,
            "emulated": emulate,
            "note": EMU_NOTE if emulate else
            "Measured on the device named under sections.device. Every number says how it was "
            "measured; a section that failed carries its error instead of numbers.",
            "started_utc": common.utc_now(),
            "finished_utc": None,
            "budget_s": budget,
            "command": " ".join(["tools/gpu-check"] + sys.argv[1:]),
            "host": {"hostname": os.uname().nodename, "machine": os.uname().machine},
            "prepared": {k: self.manifest.get(k) for k in
                         ("created_utc", "git", "model_args", "f32_kernel_args", "sizes",
                          "binary_info", "report", "prepare_s")},
            "sections": {},
            "summary": {},
        }
        self.bin = os.path.join(self.dir, "train-bf16")
        self.report = self.manifest.get("report", {})
        self.hf_config = common.read_json(os.path.join(self.dir, "hf-config.json"))
        self._setup_env()

    # -- environment ---------------------------------------------------------
    def _setup_env(self):
        self.env_py = dict(os.environ)
        self.env_py["PYTHONPATH"] = os.path.join(ROOT, "tools") + (
            ":" + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
        self.env_py["PYTHONUNBUFFERED"] = "1"
        self.env_bin = dict(os.environ)
        self.carried_lib_dir = None
        if self.emulate:
            self.libs = {}
            for env in (self.env_py, self.env_bin):
                env["OMP_WAIT_POLICY"] = "passive"
            return
        self.libs = common.find_libs()
        carried = os.path.join(self.dir, "libs.tar.xz")
        extra = []
        if os.path.exists(carried):
            self.carried_lib_dir = "/tmp/gpu-check-libs"
            shutil.rmtree(self.carried_lib_dir, ignore_errors=True)
            with tarfile.open(carried) as tar:
                tar.extractall(self.carried_lib_dir,
                               **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            extra = [self.carried_lib_dir]
        self.env_py["LD_LIBRARY_PATH"] = common.library_path(self.libs)
        self.env_bin["LD_LIBRARY_PATH"] = common.library_path(self.libs, extra)

    # -- bookkeeping -----------------------------------------------------------
    def elapsed(self):
        return time.monotonic() - self.t0

    def remaining(self):
        return self.budget - self.elapsed()

    def outputs(self):
        paths = [os.path.join(self.dir, "gpu-check.json")] + self.paths
        if self.out_dir:
            paths.append(os.path.join(self.out_dir, "gpu-check-%s.json" % common.utc_date()))
        if not self.emulate:
            paths.append(os.path.join(ROOT, "docs", "perf", "gpu-check-%s.json" % common.utc_date()))
        return paths

    def save(self):
        for p in self.outputs():
            try:
                common.write_json(p, self.result)
            except OSError as e:
                log("cannot write %s: %s" % (p, e))
        if self.out_dir:
            self._save_logs(os.path.join(self.out_dir, "gpu-check-logs.txt"))

    def _save_logs(self, path, per_file=256 << 10):
        try:
            with open(path + ".tmp", "w") as out:
                for name in sorted(os.listdir(self.logs)):
                    p = os.path.join(self.logs, name)
                    size = os.path.getsize(p)
                    out.write("==== %s (%d bytes%s)\n" % (name, size, ", tail" if size > per_file else ""))
                    with open(p, "rb") as f:
                        f.seek(max(0, size - per_file))
                        out.write(f.read().decode("utf-8", "replace"))
                    out.write("\n")
            os.replace(path + ".tmp", path)
        except OSError as e:
            log("cannot write %s: %s" % (path, e))

    def child(self, name, label, args, timeout):
        """Runs children.CHILDREN[name] in its own process; returns (run_cmd
        result, events)."""
        args_path = os.path.join(self.logs, label + ".args.json")
        progress = os.path.join(self.logs, label + ".progress.jsonl")
        if os.path.exists(progress):
            os.remove(progress)
        common.write_json(args_path, args)
        r = common.run_cmd([sys.executable, "-m", "gpu_check", "child", name, args_path, progress],
                           timeout, env=self.env_py, cwd=ROOT,
                           log=os.path.join(self.logs, label + ".log"))
        return r, common.read_jsonl(progress)

    # -- sections --------------------------------------------------------------
    def section(self, name, fn, box_s, min_s):
        sec = {"status": "running", "started_utc": common.utc_now()}
        self.result["sections"][name] = sec
        left = self.remaining()
        if left < min_s:
            sec.update(status="skipped", reason="skipped: out of time budget (%.0f s left of %d, this "
                                                "section needs at least %d)" % (left, self.budget, min_s))
            self.save()
            return
        box = min(box_s, left)
        sec["time_box_s"] = round(box, 1)
        self.save()
        log("section %s (time box %.0f s, %.0f s left)" % (name, box, left))
        t0 = time.monotonic()
        try:
            sec.update(fn(box))
        except Exception as e:  # noqa: BLE001 (a broken section must not end the run)
            import traceback
            sec.update(status="error", error="%s: %s" % (type(e).__name__, e),
                       traceback=traceback.format_exc()[-3000:])
        sec["elapsed_s"] = round(time.monotonic() - t0, 1)
        log("section %s: %s in %.0f s" % (name, sec.get("status"), sec["elapsed_s"]))
        self.save()

    def copy_gbps(self):
        try:
            return self.result["sections"]["device"]["copy_bandwidth"]["gbps_median"]
        except (KeyError, TypeError):
            return None

    def sec_device(self, box):
        r, ev = self.child("device", "device", {"emulate": self.emulate, "nvcc": common.find_nvcc()}, box)
        out = {}
        res = _result(ev)
        if res is not None:
            out.update(res)
            out["status"] = "ok"
        else:
            for e in ev:
                if e.get("event") == "partial":
                    out.update(e["data"])
            out.update(_failure(r, ev))
        out["libraries"] = self.libs if not self.emulate else "skipped: emulated"
        out["ld_library_path"] = {"python": self.env_py.get("LD_LIBRARY_PATH"),
                                  "binary": self.env_bin.get("LD_LIBRARY_PATH"),
                                  "carried_libs_dir": self.carried_lib_dir}
        try:
            ldd = subprocess.run(["ldd", self.bin], capture_output=True, text=True, timeout=30,
                                 env=self.env_bin).stdout.splitlines()
            out["binary_ldd"] = [l.strip() for l in ldd]
            missing = [l.split()[0] for l in ldd if "not found" in l]
            out["binary_missing_libs"] = missing
            if missing and out.get("status") == "ok":
                out["status"] = "failed"
                out["error"] = "the training binary misses libraries: " + ", ".join(missing)
        except Exception as e:  # noqa: BLE001
            out["binary_ldd"] = "error: %s" % e
        return out

    # kernels ------------------------------------------------------------------
    def _rebuild_on_device(self, act, why, seconds):
        """The library built where prepare ran did not load here: relink it
        from the carried source with this machine's nvcc."""
        nvcc = common.find_nvcc() or "nvcc"
        lt = (self.libs.get("libcublasLt.so.13") or [None])[0]
        so = "/tmp/gpu-check-kernels-%s.so" % act
        cmd = [nvcc, "-shared", "-Xcompiler", "-fPIC", "-arch=sm_90a", "-std=c++17", "-O3", "-I" + ROOT,
               os.path.join(self.dir, "kernels-%s.cu" % act), os.path.join(common.PKG, "launch_check.cu"),
               os.path.join(self.dir, "libllamart_cuda.a")] + ([lt] if lt else ["-lcublasLt"]) + ["-o", so]
        r = common.run_cmd(cmd, max(5, min(150, seconds)), env=self.env_py,
                           log=os.path.join(self.logs, "kernels_%s.rebuild.log" % act))
        return (so if r["rc"] == 0 else None), {"reason": why[-1500:], "command": cmd, "rc": r["rc"],
                                                "elapsed_s": r["elapsed_s"],
                                                "output": common.tail(r["output"], 2000)}

    def sec_kernels(self, act, box):
        lib_info = self.manifest["kernel_libraries"][act]
        library = os.path.join(self.dir, lib_info["library"])
        deadline = time.monotonic() + box
        skip, attempts, events, rebuilt = [], [], [], None
        seed = 1 if act == "bf16" else 2
        for attempt in range(4):
            left = deadline - time.monotonic()
            if left < 10:
                break
            r, ev = self.child("kernels", "kernels_%s.%d" % (act, attempt),
                               {"library": library, "act": act, "seed": seed, "emulate": self.emulate,
                                "skip": skip, "timing": True,
                                "launcher_limit_s": float(os.environ.get("GPU_CHECK_LAUNCHER_LIMIT_S", 60))},
                               left)
            attempts.append({"rc": r["rc"], "timed_out": r["timed_out"], "elapsed_s": r["elapsed_s"],
                             "skipped_launchers": list(skip)})
            events += [dict(e, attempt=attempt) for e in ev]
            if any(e.get("event") == "main_returned" for e in ev):
                break
            failure = _failure(r, ev)
            attempts[-1]["error"] = failure["error"]
            if r["timed_out"]:
                break
            if not any(e.get("event") == "loaded" for e in ev):
                if self.emulate or rebuilt is not None or "OSError" not in failure["error"]:
                    break  # only a library that does not load (OSError from ctypes) is relinked
                so, rebuilt = self._rebuild_on_device(act, failure["error"], deadline - time.monotonic() - 10)
                if not so:
                    break
                library = so
                continue
            started = [e["name"] for e in ev if e.get("event") == "start"]
            if not started:
                break
            skip.append(started[-1])  # the launcher that faulted or raised: go on without it
        out = self._kernel_records(act, events, attempts)
        if out["status"] != "ok" and any(a["timed_out"] for a in attempts):
            out["status"] = "timeout"
        out["library"] = {"file": library, "source": lib_info["source"],
                          "compiled_by": "g++ -DLLAMA_CUDA_EMULATE (emulated)" if self.emulate else
                          ("nvcc on this machine (the carried one did not load)" if rebuilt and library.startswith("/tmp")
                           else "nvcc where prepare ran: " + " ".join(["nvcc", "-shared", "-Xcompiler", "-fPIC",
                                                                       "-arch=sm_90a", "-std=c++17", "-O3"])),
                          "model_args": lib_info["args"], "storage": act}
        if rebuilt:
            out["rebuild"] = rebuilt
        out["attempts"] = attempts
        return out

    def _kernel_records(self, act, events, attempts):
        lib_info = self.manifest["kernel_libraries"][act]
        calls = lib_info.get("calls_per_train_step", {})
        table = next((e["launchers"] for e in events if e.get("event") == "table"), None)
        if table is None:
            errs = [a["error"] for a in attempts if a.get("error")]
            return {"status": "error", "error": "the kernel library's table was never read: %s"
                    % (errs[-1] if errs else "no attempt ran")}
        copy = self.copy_gbps()
        recs = {t["name"]: dict(t, calls_per_train_step=calls.get(t["name"], 0), correctness="not run")
                for t in table}
        order = [t["name"] for t in table]
        fails, op_worst, summary_line, exceptions = {}, {}, None, []
        by_attempt = {}
        for e in events:
            by_attempt.setdefault(e["attempt"], []).append(e)
        for att, ev in by_attempt.items():
            started = [e["name"] for e in ev if e.get("event") == "start"]
            returned = any(e.get("event") == "main_returned" for e in ev)
            for i, name in enumerate(started):
                rec = recs[name]
                done = returned or i + 1 < len(started)
                rec["correctness"] = "checked" if done else "unknown: the process ended during its check"
            for e in ev:
                kind = e.get("event")
                if kind == "timing":
                    t = {k: v for k, v in e.items() if k not in ("event", "name", "t", "attempt")}
                    recs[e["name"]]["timing"] = t
                elif kind == "launch_error":
                    recs[e["name"]]["launch_error"] = e["error"]
                    recs[e["name"]]["correctness"] = "error: " + e["error"]
                elif kind == "exception":
                    exceptions.append(e["error"])
                    if started and recs[started[-1]]["correctness"].startswith("unknown"):
                        recs[started[-1]]["correctness"] = "error: " + e["error"].strip().splitlines()[-1]
                elif kind == "stdout":
                    line = e["line"]
                    m = re.match(r"FAIL (\S+)", line)
                    if m and m.group(1) in recs:
                        fails.setdefault(m.group(1), []).append(line)
                    m = re.match(r"(llama\.\S+)\s+max relative error (\S+)", line)
                    if m:
                        op_worst[m.group(1)] = max(op_worst.get(m.group(1), 0.0), float(m.group(2)))
                    m = re.match(r"(\d+) launchers, (\d+) failures", line)
                    if m:
                        skipped = attempts[att].get("skipped_launchers") if att < len(attempts) else None
                        summary_line = line if len(by_attempt) == 1 else (
                            (summary_line + "; " if summary_line else "") +
                            "attempt %d (without %s): %s" % (att, ", ".join(skipped or []) or "none", line))
        n_pass = n_fail = 0
        for name in order:
            rec = recs[name]
            if name in fails:
                rec["correctness"] = "fail"
                rec["failures"] = fails[name]
            elif rec["correctness"] == "checked":
                rec["correctness"] = "pass"
            n_pass += rec["correctness"] == "pass"
            n_fail += rec["correctness"] != "pass"
            t = rec.get("timing")
            if t:
                sec = t["median_us"] * 1e-6
                rec["gbps"] = common.sig(rec["bytes"] / sec / 1e9) if sec > 0 else None
                if rec["op"] in ("llama.attention", "llama.attention_grad"):
                    fl = attention_flops(rec)
                    rec["flops"] = fl
                    rec["tflops"] = common.sig(fl / sec / 1e12) if sec > 0 else None
                    rec["meets_target"] = None  # judged by TF/s beside SDPA, not bandwidth
                else:
                    rec["fraction_of_copy_bw"] = (common.sig(rec["gbps"] / copy, 3)
                                                  if copy and rec["gbps"] is not None else None)
                    rec["meets_target"] = (rec["fraction_of_copy_bw"] >= TARGET_FRACTION
                                           if rec["fraction_of_copy_bw"] is not None else None)
        mem = [recs[n] for n in order if recs[n].get("meets_target") is not None]
        in_step = [r for r in mem if r["calls_per_train_step"] > 0]
        est = sum(recs[n]["timing"]["median_us"] * recs[n]["calls_per_train_step"]
                  for n in order if recs[n].get("timing"))
        missing_t = [n for n in order if recs[n]["calls_per_train_step"] and not recs[n].get("timing")]
        status = "ok" if n_fail == 0 else "failed"
        return {
            "status": status,
            "checks": "cuda_emulation.py (imported, unchanged): fresh random inputs (ids in range, some "
                      "targets ignored), outputs poisoned with NaN, every output against float64 PyTorch "
                      "by ||out - ref|| / ||ref||: < 1e-2 for %s activations, < 1e-5 for fp32 outputs; "
                      "in-place (aliased) variants run too; on the device its tensors are CUDA tensors "
                      "(torch.device context) and each launch is followed by cudaGetLastError and "
                      "cudaDeviceSynchronize of the library's runtime" % act,
            "bytes_rule": "fewest bytes: every operand read once, every result written once at its "
                          "storage size; the embedding reads only the rows it gathers; workspace not "
                          "counted",
            "target": "memory-bound launchers (all but attention): achieved GB/s >= %.0f%% of the "
                      "measured copy bandwidth (sections.device.copy_bandwidth.gbps_median = %s)"
                      % (TARGET_FRACTION * 100, copy),
            "launchers": [recs[n] for n in order],
            "launcher_count": len(order),
            "passed": n_pass,
            "not_passed": n_fail,
            "cuda_emulation_summary": summary_line,
            "max_relative_error_by_op": op_worst,
            "exceptions": exceptions,
            "memory_bound_meeting_target": "%d of %d (in the train step: %d of %d)" % (
                sum(bool(r["meets_target"]) for r in mem), len(mem),
                sum(bool(r["meets_target"]) for r in in_step), len(in_step)),
            "train_step_kernel_time_us": {
                "value": round(est, 1),
                "how": "sum over launchers of median time x calls in llama_cuda_train_step (isolated, "
                       "L2-flushed launches; GEMMs, copies and the optimizer not included)",
                "launchers_without_timing": missing_t},
        }

    # attention vs SDPA -------------------------------------------------------
    def sec_sdpa(self, box):
        shapes, ours = [], {}
        for t in self.manifest["kernel_libraries"]["bf16"]["table"]:
            if t["op"] not in ("llama.attention", "llama.attention_grad"):
                continue
            dims = [[int(x) for x in s.split("x")] if s else [] for s in t["shapes"].split(",")]
            b, s, h, d = dims[0]
            kv = dims[1][2] if t["op"] == "llama.attention" else dims[2][2]
            shp = {"b": b, "s": s, "h": h, "d": d, "kv": kv, "scale": d ** -0.5}
            if shp not in shapes:
                shapes.append(shp)
        k = self.result["sections"].get("kernels_bf16", {})
        for rec in k.get("launchers", []) if isinstance(k, dict) else []:
            if rec.get("tflops") is not None:
                ours[rec["name"]] = rec
        r, ev = self.child("sdpa", "attention_sdpa", {"emulate": self.emulate, "shapes": shapes}, box)
        res = _result(ev)
        if res is None:
            done = [e["result"] for e in ev if e.get("event") == "shape_done"]
            return dict(_failure(r, ev), results=done)
        if res.get("status") == "skipped":
            return res
        for item in res["results"]:
            shp = item["shape"]
            item["ours"] = {}
            for rec in ours.values():
                dims = [int(x) for x in rec["shapes"].split(",")[0].split("x")]
                if dims == [shp["b"], shp["s"], shp["h"], shp["d"]]:
                    which = "forward" if rec["op"] == "llama.attention" else "backward"
                    mine = {"launcher": rec["name"], "median_us": rec["timing"]["median_us"],
                            "tflops": rec["tflops"]}
                    if item.get(which):
                        mine["ours_time_over_sdpa"] = round(rec["timing"]["median_us"] / item[which]["median_us"], 2)
                    item["ours"][which] = mine
        res["flops_rule"] = ("forward 4*B*S^2*H*D / 2 (causal), backward 2.5x forward; the same count "
                             "for SDPA and ours")
        return dict(res, status="ok")

    # the tensor-core attention forward over seq x head dim ----------------------
    def sec_attention_sweep(self, box):
        if self.emulate:  # the plumbing and the numbers on the CPU, at tiny shapes
            shapes = [{"b": 1, "s": 40, "h": 2, "kv": 1, "d": 64},
                      {"b": 1, "s": 24, "h": 4, "kv": 1, "d": 128}]
        else:  # 16k tokens x 2048 model width per call; GQA 4 at 4k
            shapes = [{"b": 16384 // s, "s": s, "h": 2048 // d, "kv": 2048 // d, "d": d}
                      for d, s in ((128, 1024), (128, 2048), (128, 4096), (128, 8192),
                                   (64, 1024), (64, 4096))]
            shapes.append({"b": 4, "s": 4096, "h": 16, "kv": 4, "d": 128})
        lib = os.path.join(self.dir, self.manifest["attention_bench"]["library"])
        r, ev = self.child("attention_sweep", "attention_sweep",
                           {"emulate": self.emulate, "library": lib, "shapes": shapes}, box)
        res = _result(ev)
        done = [e["result"] for e in ev if e.get("event") == "shape_done"]
        if res is None:
            return dict(_failure(r, ev), results=done)
        bad = [x["shape"] for x in res["results"] if "error" in x or not x.get("correct")]
        res["rule"] = ("forward FLOPs 4*B*S^2*H*D / 2 (causal), backward 2.5x forward (the same count "
                       "for ours, whose deterministic kernels do 3.5x); ours: flash_attention.cuh through "
                       "attention-bench.so on torch's stream (its backward includes the GQA group's "
                       "sum); SDPA: flash backend, K/V expanded to H heads (not timed; its backward "
                       "timed to the expanded K/V's gradients); L2 flushed before every timed call")
        return dict(res, status="failed" if bad else "ok", **({"failed_shapes": bad} if bad else {}))

    # training -----------------------------------------------------------------
    def flops_per_token(self):
        c = self.hf_config
        n_non_emb = self.report.get("non-embedding-params")
        seq = self.manifest["binary_info"]["seq_len"]
        heads, hd = c["num_attention_heads"], c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        if n_non_emb is None:
            return None, None
        f = 6 * n_non_emb + 12 * c["num_hidden_layers"] * heads * hd * seq
        return f, ("6*N_non_embedding + 12*L*H*Q*T = 6*%d + 12*%d*%d*%d*%d (llama-compile --report "
                   "flops-per-token: %s)" % (n_non_emb, c["num_hidden_layers"], heads, hd, seq,
                                             self.report.get("flops-per-token")))

    def mfu(self, tokens_per_s):
        f, _ = self.flops_per_token()
        if not f or not tokens_per_s:
            return None
        return common.sig(tokens_per_s * f / (PEAK_BF16_TFLOPS * 1e12), 3)

    def sec_train_ours(self, box):
        info = self.manifest["binary_info"]
        b, s, vocab = info["batch"], info["seq_len"], info["vocab_size"]
        want = 4 if self.emulate else 12
        work = os.path.join(self.dir, "work") if self.emulate else "/tmp/gpu-check-work"
        shutil.rmtree(work, ignore_errors=True)
        data, run_dir = os.path.join(work, "data"), os.path.join(work, "run")
        common.write_shards(data, vocab, (want + 8) * b * (s + 1) + 1, 2 * b * (s + 1) + 1, 5)
        cmd = [self.bin, "train", "--data", data, "--steps", str(want + 100), "--run-dir", run_dir]
        logp = os.path.join(self.logs, "train_ours.log")
        t0 = time.monotonic()
        with open(logp, "wb") as logf:
            logf.write(("$ %s\n" % " ".join(cmd)).encode())
            logf.flush()
            p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=self.env_bin,
                                 cwd=work, start_new_session=True)
            common.RUNNING.add(p)
            metrics = os.path.join(run_dir, "metrics.jsonl")
            records, outcome = [], "timeout"
            while time.monotonic() - t0 < box:
                records = [r for r in common.read_jsonl(metrics) if "tokens_per_s" in r]
                if len(records) >= want:
                    outcome = "ok"
                    break
                if p.poll() is not None:
                    outcome = "exited"
                    break
                time.sleep(0.5)
            records = [r for r in common.read_jsonl(metrics) if "tokens_per_s" in r]
            rc = p.poll()
            if rc is None:
                common.kill_group(p)  # SIGKILL: no final checkpoint (13 GB) or evaluation
            p.wait()
            common.RUNNING.discard(p)
        text = open(logp, "rb").read().decode("utf-8", "replace").replace("\r", "\n")
        lines = [l for l in text.splitlines() if l.strip()]
        out = {"command": " ".join(cmd), "data": "synthetic shards (vocab %d, a noisy repeating sequence)"
               % vocab, "records": records, "output_head": lines[:12],
               "stopped": "killed (SIGKILL) after %d step records, before the final checkpoint and "
                          "evaluation" % len(records) if outcome == "ok" else outcome,
               "elapsed_s_total": round(time.monotonic() - t0, 1)}
        if outcome != "ok":
            out.update(status="timeout" if outcome == "timeout" else "error", rc=rc,
                       error="%d of %d step records%s" % (len(records), want,
                                                          "; exited with %s" % rc if outcome == "exited" else
                                                          " within the time box"),
                       output_tail=lines[-30:])
        tok = b * s  # --grad-accum 1
        out["tokens_per_update"] = tok
        use = [r for r in records if r["step"] >= 3]
        if len(use) >= 1:
            el = {r["step"]: r["elapsed_s"] for r in records}
            walls = [el[k] - el[k - 1] for k in sorted(el) if k >= 3 and k - 1 in el]
            med_wall = statistics.median(walls) if walls else None
            med_tps = statistics.median(r["tokens_per_s"] for r in use)
            f, how = self.flops_per_token()
            out.update({
                "timing": "steps 3..%d (step 1 runs eagerly, step 2 captures the CUDA Graph): median "
                          "over steps of (a) the wall time between consecutive metrics.jsonl records "
                          "(elapsed_s) and (b) the trainer's own tokens_per_s" % records[-1]["step"],
                "step_ms_wall_median": round(med_wall * 1e3, 2) if med_wall else None,
                "tokens_per_s": round(tok / med_wall, 1) if med_wall else None,
                "tokens_per_s_trainer_median": round(med_tps, 1),
                "flops_per_token": f, "flops_per_token_how": how,
                "mfu": self.mfu(tok / med_wall) if med_wall else None,
                "mfu_how": "tokens/s x flops_per_token / %g TF/s (H100 SXM dense bf16 peak)" % PEAK_BF16_TFLOPS,
                "loss_first": records[0]["loss"], "loss_last": records[-1]["loss"],
                "precision": "bf16 storage, fp32 master weights, fp32 weight gradients and AdamW moments"})
        if outcome == "ok":
            out["status"] = "ok"
        return out

    def sec_train_hf(self, box, compile_):
        info = self.manifest["binary_info"]
        args = {"config": os.path.join(self.dir, "hf-config.json"), "batch": info["batch"],
                "seq": info["seq_len"], "emulate": self.emulate, "compile": compile_,
                "steps": 2 if self.emulate else 10, "warmup": 1 if self.emulate else 3}
        label = "train_hf_compile" if compile_ else "train_hf"
        r, ev = self.child("hf", label, args, box)
        res = _result(ev)
        if res is None:
            out = {}
            for e in ev:
                if e.get("event") == "partial":
                    out.update(e["data"])
                if e.get("event") == "first_step":
                    out["first_step_s"] = e["seconds"]
            out.update(_failure(r, ev))
            if r["timed_out"]:
                out["error"] = "time box of %.0f s ran out (%s)" % (box, "after the first step" if "first_step_s" in out
                                                                   else "before the first step finished")
            return out
        if res.get("status") == "ok":
            res["mfu"] = self.mfu(res["tokens_per_s"])
            res["flops_per_token"], res["flops_per_token_how"] = self.flops_per_token()
            ours = self.result["sections"].get("train_ours", {}).get("tokens_per_s")
            if ours:
                res["ours_over_this_tokens_per_s"] = round(ours / res["tokens_per_s"], 3)
        return res

    def sec_memcheck(self, box):
        r = common.run_cmd([self.bin, "memcheck"], box, env=self.env_bin, cwd=self.dir,
                           log=os.path.join(self.logs, "memcheck.log"))
        out = {"command": "%s memcheck" % self.bin, "rc": r["rc"], "elapsed_s": r["elapsed_s"]}
        if r["rc"] != 0:
            return dict(out, status="timeout" if r["timed_out"] else "error",
                        error=common.tail(r["output"], 3000))
        m = common.parse_fields(r["output"])
        rep = self.report
        out["measured"] = m
        checks = {}
        for what in ("train", "eval"):
            plan, used = m.get("device-%s-arena-bytes" % what), m.get("device-%s-arena-used-bytes" % what)
            want = rep.get("cuda-%s-arena-bytes" % what)
            checks["%s_arena_equals_report" % what] = {"measured": plan, "report": want, "ok": plan == want}
            checks["%s_arena_used_95_to_100pct" % what] = {
                "used": used, "planned": plan,
                "ok": isinstance(used, int) and isinstance(plan, int) and 0.95 * plan <= used <= plan}
        emulated = not isinstance(m.get("device-used-bytes"), int)
        key = "cuda-session-bytes" if emulated else "cuda-device-bytes"
        held, est = m.get("device-held-bytes"), rep.get(key)
        checks["held_equals_report"] = {  # both from runtime/cuda/layout.h
            "held": held, "report_key": key, "report": est,
            "relative_difference": round((held - est) / est, 5) if held and est else None,
            "ok": bool(held and est and held == est)}
        if not emulated:
            used = m["device-used-bytes"]
            checks["device_used_within_5pct_of_held"] = {
                "device_used": used, "held": held,
                "relative_difference": round((used - held) / held, 5) if held else None,
                "ok": bool(held and abs(used - held) <= 0.05 * held)}
        out["checks"] = checks
        out["how"] = ("BIN memcheck (arenas filled with marker bytes, one train step and one evaluation, "
                      "high-water marks; on a GPU the growth of the device's used memory) against "
                      "llama-compile --report --target cuda of the same flags, computed at prepare time "
                      "(the tolerances of test/integration/cuda_train.sh)")
        out["status"] = "ok" if all(c["ok"] for c in checks.values()) else "failed"
        return out

    # --------------------------------------------------------------------------
    def summarize(self):
        s = self.result["sections"]
        summ = {"sections": {k: v.get("status") for k, v in s.items()}}
        for act in ("bf16", "f32"):
            k = s.get("kernels_" + act, {})
            if "launcher_count" in k:
                summ["kernels_" + act] = "%d launchers: %d pass, %d not (%s)" % (
                    k["launcher_count"], k["passed"], k["not_passed"], k.get("cuda_emulation_summary"))
                if act == "bf16":
                    summ["memory_bound_meeting_80pct_of_copy_bw"] = k["memory_bound_meeting_target"]
        d = s.get("device", {})
        if isinstance(d.get("copy_bandwidth"), dict):
            summ["copy_bandwidth_gbps"] = d["copy_bandwidth"]["gbps_median"]
        for name in ("train_ours", "train_hf", "train_hf_compile"):
            t = s.get(name, {})
            if t.get("tokens_per_s"):
                summ[name] = {"tokens_per_s": t["tokens_per_s"], "mfu": t.get("mfu")}
        a = s.get("attention_sdpa", {})
        for item in a.get("results", []) if isinstance(a, dict) else []:
            shp = item["shape"]
            for which in ("forward", "backward"):
                if item.get(which) and item.get("ours", {}).get(which):
                    key = "%s B%d S%d H%d D%d" % (which, shp["b"], shp["s"], shp["h"], shp["d"])
                    summ.setdefault("attention_tflops_ours_vs_sdpa", {})[key] = [
                        item["ours"][which]["tflops"], item[which]["tflops"]]
        a = s.get("attention_sweep", {})
        for item in a.get("results", []) if isinstance(a, dict) else []:
            shp = item["shape"]
            for which, mine, theirs in (("forward", "ours", "sdpa"),
                                        ("forward mma.sync", "ours_mma_sync", "sdpa"),
                                        ("backward", "ours_backward", "sdpa_backward"),
                                        ("backward mma.sync", "ours_backward_mma_sync", "sdpa_backward")):
                if item.get(mine) and item.get(theirs):
                    key = "%s B%d S%d H%d/%d D%d" % (which, shp["b"], shp["s"], shp["h"], shp["kv"], shp["d"])
                    summ.setdefault("attention_sweep_tflops_ours_vs_sdpa", {})[key] = [
                        item[mine]["tflops"], item[theirs]["tflops"]]
        m = s.get("memcheck", {})
        if "checks" in m:
            summ["memcheck"] = "ok" if m["status"] == "ok" else "failed: " + ", ".join(
                k for k, v in m["checks"].items() if not v["ok"])
        self.result["summary"] = summ
        return summ

    def main(self):
        log("run %s (%s, budget %d s)" % (self.dir, "emulated" if self.emulate else "device", self.budget))
        self.save()
        plan = [
            ("device", self.sec_device, 60, 10),
            # Issue 19's numbers, early so that the budget always reaches them.
            ("attention_sweep", self.sec_attention_sweep, 90, 20),
            ("kernels_bf16", lambda box: self.sec_kernels("bf16", box), 180, 30),
            ("train_ours", self.sec_train_ours, 150, 30),
            ("train_hf", lambda box: self.sec_train_hf(box, False), 100, 30),
            ("attention_sdpa", self.sec_sdpa, 45, 15),
            ("memcheck", self.sec_memcheck, 90, 20),
            ("kernels_f32", lambda box: self.sec_kernels("f32", box), 60, 15),
            ("train_hf_compile", lambda box: self.sec_train_hf(box, True), 240, 60),
        ]
        unknown = set(self.only or ()) - {p[0] for p in plan}
        if unknown:
            raise SystemExit("gpu-check: no section named %s" % ", ".join(sorted(unknown)))
        for name, fn, box, least in plan:
            if self.only and name not in self.only:
                self.result["sections"][name] = {"status": "skipped", "reason": "skipped: not in --only"}
                continue
            self.section(name, fn, box, least)
        self.result["finished_utc"] = common.utc_now()
        self.result["run_s"] = round(self.elapsed(), 1)
        summ = self.summarize()
        self.save()
        print_summary(self.result, self.outputs())
        bad = [k for k, v in summ["sections"].items() if v not in ("ok", "skipped")]
        return 1 if bad else 0


def attention_flops(rec):
    dims = [int(x) for x in rec["shapes"].split(",")[0].split("x")]
    b, s, h, d = dims
    fwd = 4.0 * b * s * s * h * d / 2
    return fwd if rec["op"] == "llama.attention" else 2.5 * fwd


def _result(events):
    for e in events:
        if e.get("event") == "result":
            return e["result"]
    return None


def _failure(r, events):
    exc = [e["error"] if e["event"] == "exception" else "%s: %s" % (e["name"], e["error"])
           for e in events if e.get("event") in ("exception", "launch_error")]
    if r["timed_out"]:
        return {"status": "timeout", "error": "killed at the time box (%.0f s)" % r["elapsed_s"],
                "output_tail": common.tail(r["output"], 2000)}
    return {"status": "error", "rc": r["rc"],
            "error": exc[-1] if exc else common.tail(r["output"], 3000)}


def print_summary(result, outputs):
    print("gpu-check %s: %s" % ("(EMULATED: timings meaningless)" if result["emulated"] else "(device)",
                                result["finished_utc"]))
    for k, v in result["summary"].items():
        print("  %-40s %s" % (k, v))
    k = result["sections"].get("kernels_bf16", {})
    if k.get("launchers"):
        print("  %-28s %-7s %10s %9s %7s %s" % ("launcher", "check", "median_us", "GB/s", "of copy", "TF/s"))
        for r in k["launchers"]:
            t = r.get("timing", {})
            print("  %-28s %-7s %10s %9s %7s %s" % (
                r["name"][:28], r["correctness"][:7], t.get("median_us", "-"), r.get("gbps", "-"),
                r.get("fraction_of_copy_bw", "-"), r.get("tflops", "")))
    print("JSON: " + ", ".join(outputs))
    sys.stdout.flush()


def run(dirpath, emulate, budget=None, json_paths=(), only=None):
    r = Run(dirpath, emulate, budget or (EMU_BUDGET_S if emulate else DEVICE_BUDGET_S), json_paths, only)

    def on_term(signum, frame):  # the device tool's timeout: leave a JSON that says so
        for p in list(common.RUNNING):
            common.kill_group(p)
        r.result["finished_utc"] = common.utc_now()
        r.result["interrupted"] = "signal %d after %.0f s" % (signum, r.elapsed())
        r.summarize()
        r.save()
        os._exit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    return r.main()
