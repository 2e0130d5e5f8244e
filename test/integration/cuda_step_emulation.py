"""Runs the generated CUDA train step (llama_cuda_train_step) on the CPU.

LIB.so is the source from `llama-compile --target cuda --emit kernels
--cuda-activations f32` compiled with -DLLAMA_CUDA_EMULATE and linked with
the CPU runtime (its BLAS matmul stands in for cuBLASLt). Parameters come
from WEIGHTS (by HF name, in the program's order), tokens/targets from
INPUTS ("input_ids" [batch, seq + 1]); every output, the arena and the
workspace start as NaN, so an unwritten gradient shows. Writes "loss" and
every gradient by name to OUT (the format llama_torch.py check reads).

Usage: cuda_step_emulation.py LIB.so WEIGHTS INPUTS OUT
"""
import ctypes
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from llama_torch import read_safetensors, write_safetensors  # noqa: E402


class Param(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("numel", ctypes.c_int64), ("offset", ctypes.c_int64)]


def main():
    lib = ctypes.CDLL(sys.argv[1])
    weights, _ = read_safetensors(sys.argv[2])
    inputs, _ = read_safetensors(sys.argv[3])
    count = ctypes.c_size_t.in_dll(lib, "llama_cuda_param_count").value
    params = (Param * count).in_dll(lib, "llama_cuda_params")
    total = sum(p.numel for p in params)
    P = torch.empty(total, dtype=torch.float32)
    for p in params:
        w = weights[p.name.decode()].to(torch.float32).reshape(-1)
        if w.numel() != p.numel:
            sys.exit("%s: %d elements, the program wants %d" % (p.name.decode(), w.numel(), p.numel))
        P[p.offset:p.offset + p.numel] = w
    ids = inputs["input_ids"].to(torch.int32)
    batch = ctypes.c_int64.in_dll(lib, "llama_cuda_batch").value
    seq = ctypes.c_int64.in_dll(lib, "llama_cuda_seq_len").value
    if list(ids.shape) != [batch, seq + 1]:
        sys.exit("input_ids is %s, the program wants [%d, %d]" % (list(ids.shape), batch, seq + 1))
    tokens, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    nan = float("nan")
    G = torch.full([total], nan, dtype=torch.float32)
    arena = torch.full([max(1, ctypes.c_size_t.in_dll(lib, "llama_cuda_arena_bytes").value // 4)], nan)
    ws = torch.full([ctypes.c_size_t.in_dll(lib, "llama_cuda_workspace_bytes").value // 4 + 1], nan)
    loss = torch.full([1], nan, dtype=torch.float32)
    step = lib.llama_cuda_train_step
    step.argtypes = [ctypes.c_void_p] * 9
    step(P.data_ptr(), G.data_ptr(), tokens.data_ptr(), targets.data_ptr(), arena.data_ptr(),
         ws.data_ptr(), loss.data_ptr(), None, None)
    out = {"loss": loss.double().reshape([])}
    for p in params:
        name = p.name.decode()
        g = G[p.offset:p.offset + p.numel].reshape(weights[name].shape)
        if not torch.isfinite(g).all():
            sys.exit("%s: gradient not written (NaN left)" % name)
        out[name] = g.double()
    write_safetensors(sys.argv[4], out)
    print("loss %.9g, %d gradients" % (float(loss), count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
