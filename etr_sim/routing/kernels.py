"""Compiled one-pass kernels (numba) for GrAP routing on large CPU batches.

GrAP routing needs, for every token, the sum of each of its E channel blocks and its L2 norm, and
then each token's best experts. Eager torch reads the activations twice for the statistics (strided
block sums ~1.6x a plain read, the norm ~1.1x) and makes one more pass over [N, E] per top-k step.
This kernel reads each row once, widening bf16 to float32 in registers (a bf16 is the top half of
a float32: two per 32-bit word), accumulates block sums and the sum of squares in float32, scales
the row to cosines when asked, and picks the row's top-k experts while the row is still in cache.

Rows are split into fixed blocks of ``ROWS_PER_TASK`` and the blocks run in parallel on
``torch.get_num_threads()`` threads (one thread in sweep workers). A row's results do not depend on
which thread computes it, so output is identical at any thread count.

numba is imported on first use only: importing it and loading the cached machine code costs
~0.5 s per process, which pays off only on large batches (``functional.FUSED_MIN_ELEMENTS``).
Compiled code is cached on disk (numba ``cache=True``).
"""

from __future__ import annotations

import os

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

if "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
    # OpenMP first: with torch loaded it is torch's own runtime (the same libgomp.so.1), so the kernel
    # runs on torch's threads instead of a second pool competing with them for the cores
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]

ROWS_PER_TASK = 64  # rows per parallel task: fixed, so results never depend on the thread count
# reassociation lets the float32 reductions vectorise; no 'nnan'/'ninf' (the top-k compares stay IEEE)
_FAST = {"reassoc", "contract", "nsz", "arcp"}
_JIT = dict(cache=True, nogil=True, fastmath=_FAST, boundscheck=False)
_STRICT = dict(cache=True, nogil=True, boundscheck=False)  # rankings: the same float32 ops as torch


@intrinsic
def _as_f32(typingctx, word):
    """Reinterpret the bits of a uint32 as a float32 (free in registers)."""
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _f32_bits(typingctx, value):
    """The bits of a float32 as an int32."""
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@numba.njit(**_JIT)
def _bf16_row(words, t, g2, vals):
    """Block sums of bf16 row t into vals[t]; returns its float32 sum of squares.
    words [N, d/2] uint32: two bf16 per word, element 2j in the low half (little endian).
    (Rows are addressed by index, not sliced: a slice is a refcounted view, an atomic op per row.)"""
    ss = np.float32(0.0)
    for e in range(vals.shape[1]):
        acc = np.float32(0.0)
        sq = np.float32(0.0)
        base = e * g2
        for j in range(g2):
            w = words[t, base + j]
            lo = _as_f32(w << np.uint32(16))
            hi = _as_f32(w & np.uint32(0xFFFF0000))
            acc += lo + hi
            sq += lo * lo + hi * hi
        vals[t, e] = acc
        ss += sq
    return ss


@numba.njit(**_JIT)
def _f32_row(x, t, g, vals):
    """Block sums of float32 row t into vals[t]; returns its sum of squares."""
    ss = np.float32(0.0)
    for e in range(vals.shape[1]):
        acc = np.float32(0.0)
        sq = np.float32(0.0)
        base = e * g
        for j in range(g):
            v = x[t, base + j]
            acc += v
            sq += v * v
        vals[t, e] = acc
        ss += sq
    return ss


@numba.njit(**_STRICT)
def _finish_row(vals, t, ss, g, cosine, top_idx, rank_scale, bonus, b, keys):
    """Scale vals[t] to cosines (when asked), then fill top_idx[t] with the row's k best experts by
    vals[t] * rank_scale + bonus[b], descending, ties to the lower index (as successive torch.max).

    Branch-free: each expert gets an int64 key, (its score's IEEE bits made monotone) << 32 |
    (E - 1 - e), so one integer max (vectorised) finds the best score and, among equals, the
    lowest expert; k such passes give the top-k (inputs are finite)."""
    n_exp = vals.shape[1]
    if cosine:
        scale = np.float32(1.0) / (np.float32(np.sqrt(g)) * max(np.sqrt(ss), np.float32(1e-12)))
        for e in range(n_exp):
            vals[t, e] *= scale
    if top_idx.shape[1] == 0:
        return
    for e in range(n_exp):
        bits = _f32_bits(vals[t, e] * rank_scale + bonus[b, e] + np.float32(0.0))  # + 0: -0.0 ties +0.0
        monotone = bits ^ ((bits >> np.int32(31)) & np.int32(0x7FFFFFFF))  # float order as int32
        keys[e] = (np.int64(monotone) << np.int64(32)) | np.int64(n_exp - 1 - e)
    below = np.iinfo(np.int64).max  # keys are distinct: pass j takes the largest key below pass j-1's
    for j in range(top_idx.shape[1]):
        best = np.iinfo(np.int64).min
        for e in range(n_exp):
            key = keys[e]
            best = max(best, key if key < below else np.iinfo(np.int64).min)
        top_idx[t, j] = n_exp - 1 - (best & np.int64(0xFFFFFFFF))
        below = best


@numba.njit(cache=True, nogil=True, fastmath={"contract"}, boundscheck=False)
def _expf(x):
    """e^x in float32 for finite x <= 88 (Cody-Waite reduction + degree-6 polynomial, the Cephes
    expf coefficients; within 1.4 ulp, vectorisable); 0 below -87.3. torch's exp agrees to 1 ulp."""
    x = max(x, np.float32(-87.33654))
    n = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
    r = x - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)  # x - n ln2, in two parts
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    y = p * (r * r) + r + np.float32(1.0)
    return y * _as_f32(np.uint32(np.int32(n) + np.int32(127)) << np.uint32(23))  # y * 2^n


@numba.njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def _softmax_row(vals, t, rank_scale, choice, buf, prob_choice, prob_sum, task):
    """Softmax of row t's logits vals[t] * rank_scale: the probability of expert ``choice`` into
    prob_choice[t], every probability added to prob_sum[task] (float64; inputs are finite)."""
    n_exp = vals.shape[1]
    m = vals[t, 0] * rank_scale
    for e in range(1, n_exp):
        m = max(m, vals[t, e] * rank_scale)
    total = np.float32(0.0)
    for e in range(n_exp):
        buf[e] = _expf(vals[t, e] * rank_scale - m)
        total += buf[e]
    inv = np.float32(1.0) / total
    prob_choice[t] = buf[choice] * inv
    for e in range(n_exp):
        prob_sum[task, e] += buf[e] * inv


@numba.njit(parallel=True, **_JIT)
def _grap_bf16(words, g, cosine, vals, sumsq, top_idx, rank_scale, bonus, bonus_row, prob_choice, prob_sum):
    n = words.shape[0]
    for task in numba.prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        keys = np.empty(vals.shape[1], dtype=np.int64)
        buf = np.empty(vals.shape[1], dtype=np.float32)
        for t in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            ss = _bf16_row(words, t, g // 2, vals)
            sumsq[t] = ss
            _finish_row(vals, t, ss, g, cosine, top_idx, rank_scale, bonus, bonus_row[t], keys)
            if len(prob_choice):  # softmax statistics of the untilted logits
                _softmax_row(vals, t, rank_scale, top_idx[t, 0], buf, prob_choice, prob_sum, task)


@numba.njit(parallel=True, **_JIT)
def _grap_f32(x, g, cosine, vals, sumsq, top_idx, rank_scale, bonus, bonus_row, prob_choice, prob_sum):
    n = x.shape[0]
    for task in numba.prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        keys = np.empty(vals.shape[1], dtype=np.int64)
        buf = np.empty(vals.shape[1], dtype=np.float32)
        for t in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            ss = _f32_row(x, t, g, vals)
            sumsq[t] = ss
            _finish_row(vals, t, ss, g, cosine, top_idx, rank_scale, bonus, bonus_row[t], keys)
            if len(prob_choice):  # softmax statistics of the untilted logits
                _softmax_row(vals, t, rank_scale, top_idx[t, 0], buf, prob_choice, prob_sum, task)


def grap_rows(
    hidden: torch.Tensor,
    num_experts: int,
    cosine: bool = False,
    top: int = 0,
    rank_scale: float = 1.0,
    bonus: torch.Tensor | None = None,
    bonus_row: np.ndarray | None = None,
    softmax: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """GrAP statistics and top experts of a CPU bf16 or float32 [N, d] tensor (d % (2E) == 0 for bf16).

    Returns (values [N, E] float32: block sums, or the cosine affinity block / (sqrt(d/E) |x|) when
    ``cosine``; norms [N, 1] float32; top [N, top] int64: each row's best experts by
    values * rank_scale + bonus[bonus_row], descending, ties to the lower index; and, when
    ``softmax`` (needs top >= 1), over the logits values * rank_scale: top1_prob [N] float32, the
    probability of each row's first pick, and mean_prob [E] float64, the mean probability of each
    expert over the rows; else None, None).
    bonus: [R, E] float32 per-row additive tilt, picked per row by bonus_row [N] (default none).
    """
    x = hidden.contiguous()
    n, d = x.shape
    g = d // num_experts
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    vals = np.empty((n, num_experts), dtype=np.float32)
    sumsq = np.empty(n, dtype=np.float32)
    top_idx = np.empty((n, top), dtype=np.int64)
    if bonus is None:
        table = np.zeros((1, num_experts), dtype=np.float32)
        rows = np.zeros(n, dtype=np.int64)
    else:
        table = np.ascontiguousarray(bonus.numpy(), dtype=np.float32)
        rows = np.ascontiguousarray(bonus_row, dtype=np.int64)
    assert top >= 1 or not softmax, "softmax statistics are taken for the first pick"
    tasks = -(-n // ROWS_PER_TASK)
    prob_choice = np.empty(n if softmax else 0, dtype=np.float32)
    prob_sum = np.zeros((tasks if softmax else 0, num_experts), dtype=np.float64)  # per task: fixed order
    args = (g, cosine, vals, sumsq, top_idx, np.float32(rank_scale), table, rows, prob_choice, prob_sum)
    if x.dtype == torch.bfloat16 and g % 2 == 0:
        _grap_bf16(x.view(torch.int16).numpy().view(np.uint32), *args)  # [N, d/2] words
    else:
        _grap_f32(x.float().numpy(), *args)
    if torch.get_num_threads() != threads:  # starting numba's OpenMP pool resets the shared runtime's count
        torch.set_num_threads(threads)
    out = torch.from_numpy(vals), torch.from_numpy(np.sqrt(sumsq))[:, None], torch.from_numpy(top_idx)
    if not softmax:
        return (*out, None, None)
    return (*out, torch.from_numpy(prob_choice), torch.from_numpy(prob_sum.sum(0) / max(n, 1)))
