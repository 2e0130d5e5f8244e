"""python -m gpu_check: see tools/gpu-check."""
import argparse
import os
import sys

from . import common


def main(argv):
    if argv[:1] == ["child"]:
        from . import children
        return children.main(*argv[1:4])
    ap = argparse.ArgumentParser(prog="tools/gpu-check", description=__doc__)
    ap.add_argument("words", nargs="*", metavar="[prepare|run] [DIR]",
                    help="prepare (here: llama-compile, nvcc) or run (on the device); with "
                         "--emulate and no command: both, on the CPU. DIR: the working folder "
                         "(default .gpu-check, emulated .gpu-check-emu), carried to the device")
    ap.add_argument("--emulate", action="store_true", help="CPU emulation at micro shapes (CI)")
    ap.add_argument("--build", default=os.path.join(common.ROOT, "build"),
                    help="build folder with bin/llama-compile and runtime/ (default build)")
    ap.add_argument("--budget", type=float, help="run: seconds for all sections (default 420 on "
                                                 "the device, 900 emulated)")
    ap.add_argument("--json", action="append", default=[], help="run: also write the JSON here")
    ap.add_argument("--only", help="run: these sections alone (comma-separated: device, kernels_bf16, "
                                   "train_ours, train_hf, attention_sdpa, attention_sweep, memcheck, kernels_f32, "
                                   "train_hf_compile)")
    a = ap.parse_intermixed_args(argv)
    words = list(a.words)
    a.command = words.pop(0) if words and words[0] in ("prepare", "run") else None
    a.dir = words.pop(0) if words else None
    if words:
        ap.error("unexpected arguments: %s" % " ".join(words))
    if a.command is None and not a.emulate:
        ap.error("name a command (prepare or run) or give --emulate")
    d = a.dir or os.path.join(common.ROOT, ".gpu-check-emu" if a.emulate else ".gpu-check")
    build = os.path.abspath(a.build)
    if a.command in (None, "prepare"):
        from . import prepare
        try:
            prepare.prepare(d, build, a.emulate)
        except prepare.PrepareError as e:
            sys.stderr.write("gpu-check prepare: %s\n" % e)
            return 2
    if a.command in (None, "run"):
        from . import run
        return run.run(d, a.emulate, a.budget, a.json, a.only.split(",") if a.only else None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
