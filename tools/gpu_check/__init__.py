"""gpu-check: one device call that measures and checks what llama-mlir emits for CUDA.

`tools/gpu-check prepare` (where llama-compile runs) emits the kernel sources and
builds the kernel libraries and the training binary; `tools/gpu-check run` (on
the GPU machine) checks and times them and writes one JSON; `tools/gpu-check
--emulate` does both on the CPU at micro shapes (CI). See tools/gpu-check and
docs/benchmarks.md ("gpu-check").

Modules: common (paths, JSON, processes, libraries, shards), prepare (phase 1),
run (phase 2: the sections, their time boxes, the JSON), children (the code
each section runs in its own process: device, kernels, sdpa, hf).
"""
