"""Compiled one-pass kernels (numba) for routing's memory-bound inner loops on large CPU batches.

GrAP routing needs, for every token, the sum of each of its E channel blocks and its L2 norm.
Eager torch reads the activations twice for that (strided block sums ~1.6x a plain read, the norm
~1.1x, measured on the development machine); these kernels read each row once, widen it to a
float32 row buffer that stays in L1, and accumulate both in float32 (~1.3x a plain read).
numba is imported on first use only: importing it and loading the cached machine code costs
~0.5 s per process, which pays off only on large batches (``functional.FUSED_MIN_ELEMENTS``).
Compiled code is cached on disk (numba ``cache=True``).
"""

from __future__ import annotations

import numba
import numpy as np
import torch


@numba.njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def _row_stats(f: np.ndarray, num_experts: int, cosine: bool, sums: np.ndarray, t: int) -> float:
    """Block sums of float32 row ``f`` into sums[t] (divided by sqrt(d/E) |f| when ``cosine``);
    returns the row's sum of squares."""
    g = len(f) // num_experts
    ss = np.float32(0.0)
    for j in range(len(f)):
        ss += f[j] * f[j]
    scale = np.float32(1.0)
    if cosine:
        scale = np.float32(1.0) / (np.float32(np.sqrt(g)) * max(np.sqrt(ss), np.float32(1e-12)))
    for e in range(num_experts):
        acc = np.float32(0.0)
        base = e * g
        for j in range(g):
            acc += f[base + j]
        sums[t, e] = acc * scale
    return ss


@numba.njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def _stats_bf16(bits: np.ndarray, num_experts: int, cosine: bool, sums: np.ndarray, sumsq: np.ndarray) -> None:
    """bits [N, d] uint16: bf16 bit patterns (a bf16 is the top half of a float32)."""
    n, d = bits.shape
    buf = np.empty(d, dtype=np.uint32)
    f = buf.view(np.float32)
    for t in range(n):
        row = bits[t]
        for j in range(d):
            buf[j] = np.uint32(row[j]) << np.uint32(16)
        sumsq[t] = _row_stats(f, num_experts, cosine, sums, t)


@numba.njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def _stats_f32(x: np.ndarray, num_experts: int, cosine: bool, sums: np.ndarray, sumsq: np.ndarray) -> None:
    for t in range(x.shape[0]):
        sumsq[t] = _row_stats(x[t], num_experts, cosine, sums, t)


def grap_stats(hidden: torch.Tensor, num_experts: int, cosine: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, E] float32 block sums, [N, 1] float32 L2 norms) of a CPU bf16 or float32 [N, d] tensor.

    cosine: return the GrAP cosine affinity block / (sqrt(d/E) |x|) in place of the block sums,
    scaled row by row inside the kernel (no second pass over [N, E])."""
    x = hidden.contiguous()
    n, d = x.shape
    sums = np.empty((n, num_experts), dtype=np.float32)
    sumsq = np.empty(n, dtype=np.float32)
    if x.dtype == torch.bfloat16:
        _stats_bf16(x.view(torch.int16).numpy().view(np.uint16), num_experts, cosine, sums, sumsq)
    else:
        _stats_f32(x.numpy(), num_experts, cosine, sums, sumsq)
    return torch.from_numpy(sums), torch.from_numpy(np.sqrt(sumsq))[:, None]
