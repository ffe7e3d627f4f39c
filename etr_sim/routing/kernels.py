"""Compiled one-pass kernels (numba) for routing large CPU batches: GrAP statistics with top-k
(``grap_rows``: etr, locmoe) and softmax with top-k (``softmax_top_k``: token choice's gate output).

GrAP routing needs, for every token, the sum of each of its E channel blocks and its L2 norm, and
then each token's best experts. Eager torch reads the activations twice for the statistics (strided
block sums ~1.6x a plain read, the norm ~1.1x) and makes one more pass over [N, E] per top-k step.
This kernel reads each row once, widening bf16 to float32 in registers (a bf16 is the top half of
a float32: two per 32-bit word), accumulates block sums and the sum of squares in float32, scales
the row to cosines when asked, and picks the row's top-k experts while the row is still in cache
(and, for LocMoE, the softmax of its logits: the choice's probability and the per-expert mean).
Softmax uses its own vectorisable ``_expf`` (within 1.4 ulp), so probabilities agree with torch's
to ~1e-7; scores and top-k orders use the same float32 operations as the torch path.

The statistics of bf16 rows with E and d/(2E) multiples of 16 (the usual shapes) are written
directly in LLVM vector IR (``_bf16_row_v16``): 16 block sums come out of one transpose-and-add
tree instead of 16 horizontal sums, and the sum of squares is reduced once per row, not per block.
On one Zen4 core that brings the statistics from ~1.35x to ~1.05x the time of a plain read of the
rows (they are then bound by memory); other shapes take plain loops that LLVM vectorises.

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
from numba.core import cgutils
from numba.extending import intrinsic, overload

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


_LANES = 16  # float32 lanes of a 512-bit vector
_FLAGS = tuple(sorted(_FAST))  # the same fast-math flags on the hand-written IR below


def _transpose_add(builder, vecs):
    """The lane sums of 16 <16 x float> vectors, as one vector (lane b: the sum of vecs[b]).
    A transpose-and-add tree: each step pairs up the vectors and, for each pair (a, b), adds the two
    halves of each of their segments, a's segments packed before b's (segments of 16, 8, 4, 2 lanes
    in, half that out). 15 adds and 30 shuffles in all, where 16 horizontal sums take 64 + 64."""
    half = _LANES // 2
    while len(vecs) > 1:
        segs = _LANES // (2 * half)  # segments per input vector
        # lane indices into the concatenation (a, b): the first half of each segment of a, then of b
        pick = [(_LANES if s >= segs else 0) + s % segs * 2 * half + i for s in range(2 * segs) for i in range(half)]
        first, second = (ir.Constant(ir.VectorType(ir.IntType(32), _LANES), [k + h for k in pick]) for h in (0, half))
        vecs = [
            builder.fadd(builder.shuffle_vector(a, b, first), builder.shuffle_vector(a, b, second), flags=_FLAGS)
            for a, b in zip(vecs[::2], vecs[1::2])
        ]
        half //= 2
    return vecs[0]


@intrinsic
def _bf16_row_v16(typingctx, words, t, g2, vals):
    """_bf16_row when E and g2 are multiples of 16, in explicit 16-word vectors (LLVM's own
    vectorisation of the loops below ends every block with two horizontal sums, half the work).
    Blocks go in groups of 16: each block's lane partial sums stay a vector, and _transpose_add
    turns the group's 16 vectors into its 16 block sums, stored at once. The sum of squares stays
    in vectors for the whole row (8 of them, by block, so that the FMA chains do not bound the
    loop) and is reduced once."""
    sig = types.float32(words, t, g2, vals)

    def codegen(context, builder, signature, args):
        words_ty, t_ty, g2_ty, vals_ty = signature.args
        arr = context.make_array(words_ty)(context, builder, args[0])
        out = context.make_array(vals_ty)(context, builder, args[3])
        t = context.cast(builder, args[1], t_ty, types.intp)
        chunks = builder.udiv(context.cast(builder, args[2], g2_ty, types.intp), t.type(_LANES))  # vectors per block
        vi, vf = ir.VectorType(ir.IntType(32), _LANES), ir.VectorType(ir.FloatType(), _LANES)
        row_start = [t, t.type(0)]
        src = builder.bitcast(cgutils.get_item_pointer(context, builder, words_ty, arr, row_start), vi.as_pointer())
        dst = builder.bitcast(cgutils.get_item_pointer(context, builder, vals_ty, out, row_start), vf.as_pointer())
        zero = vf([0.0] * _LANES)
        acc = cgutils.alloca_once(builder, vf)  # stack slots: LLVM keeps them in registers
        sq = [cgutils.alloca_once_value(builder, zero) for _ in range(8)]
        def add(a, b):
            return builder.fadd(a, b, flags=_FLAGS)

        def mul(a, b):
            return builder.fmul(a, b, flags=_FLAGS)

        groups = builder.udiv(cgutils.unpack_tuple(builder, out.shape)[1], t.type(_LANES))
        with cgutils.for_range(builder, groups) as group:
            parts = []
            for b in range(_LANES):  # block e = 16 * group + b starts at vector e * chunks of the row
                e = builder.add(builder.mul(group.index, t.type(_LANES)), t.type(b))
                block = builder.gep(src, [builder.mul(e, chunks)])
                builder.store(zero, acc)
                with cgutils.for_range(builder, chunks) as chunk:
                    w = builder.load(builder.gep(block, [chunk.index]), align=1)
                    lo = builder.bitcast(builder.shl(w, vi([16] * _LANES)), vf)
                    hi = builder.bitcast(builder.and_(w, vi([0xFFFF0000] * _LANES)), vf)
                    builder.store(add(builder.load(acc), add(lo, hi)), acc)
                    builder.store(add(add(builder.load(sq[b % 8]), mul(lo, lo)), mul(hi, hi)), sq[b % 8])
                parts.append(builder.load(acc))
            builder.store(_transpose_add(builder, parts), builder.gep(dst, [group.index]), align=4)
        total = builder.load(sq[0])
        for s in sq[1:]:
            total = add(total, builder.load(s))
        for h in (8, 4, 2, 1):  # then lane 0 holds the sum of all lanes
            total = add(total, builder.shuffle_vector(total, total, vi([(i + h) % _LANES for i in range(_LANES)])))
        return builder.extract_element(total, t.type(0))

    return sig, codegen


@numba.njit(**_JIT)
def _bf16_row(words, t, g2, vals):
    """Block sums of bf16 row t into vals[t]; returns its float32 sum of squares.
    words [N, d/2] uint32: two bf16 per word, element 2j in the low half (little endian).
    (Rows are addressed by index, not sliced: a slice is a refcounted view, an atomic op per row.)"""
    if g2 % _LANES == 0 and vals.shape[1] % _LANES == 0:
        return _bf16_row_v16(words, t, g2, vals)
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
def _top_k(score, top_idx, t, keys):
    """Fill top_idx[t] with the k best entries of score [E], descending, ties to the lower index
    (as successive torch.max; inputs are finite).

    Branch-free: each expert gets an int64 key, (its score's IEEE bits made monotone) << 32 |
    (E - 1 - e), so one integer max (vectorised) finds the best score and, among equals, the
    lowest expert; pass j takes the largest key below pass j-1's."""
    n_exp = len(score)
    for e in range(n_exp):
        bits = _f32_bits(score[e] + np.float32(0.0))  # + 0: -0.0 ties +0.0
        monotone = bits ^ ((bits >> np.int32(31)) & np.int32(0x7FFFFFFF))  # float order as int32
        keys[e] = (np.int64(monotone) << np.int64(32)) | np.int64(n_exp - 1 - e)
    below = np.iinfo(np.int64).max
    for j in range(top_idx.shape[1]):
        best = np.iinfo(np.int64).min
        for e in range(n_exp):
            key = keys[e]
            best = max(best, key if key < below else np.iinfo(np.int64).min)
        top_idx[t, j] = n_exp - 1 - (best & np.int64(0xFFFFFFFF))
        below = best


@numba.njit(**_STRICT)
def _finish_row(vals, t, ss, g, cosine, top_idx, rank_scale, bonus, b, keys, buf):
    """Scale vals[t] to cosines (when asked), then fill top_idx[t] with the row's k best experts by
    vals[t] * rank_scale + bonus[b] (the same float32 ops as torch on the tensors)."""
    n_exp = vals.shape[1]
    if cosine:
        scale = np.float32(1.0) / (np.float32(np.sqrt(g)) * max(np.sqrt(ss), np.float32(1e-12)))
        for e in range(n_exp):
            vals[t, e] *= scale
    if top_idx.shape[1] == 0:
        return
    for e in range(n_exp):
        buf[e] = vals[t, e] * rank_scale + bonus[b, e]
    _top_k(buf, top_idx, t, keys)


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
def _softmax(logits, t, scale, probs, prob_sum, task):
    """probs [E] = softmax of row t's logits * scale, each also added to prob_sum[task] (float64;
    inputs are finite)."""
    n_exp = logits.shape[1]
    m = logits[t, 0] * scale
    for e in range(1, n_exp):
        m = max(m, logits[t, e] * scale)
    total = np.float32(0.0)
    for e in range(n_exp):
        probs[e] = _expf(logits[t, e] * scale - m)
        total += probs[e]
    inv = np.float32(1.0) / total
    for e in range(n_exp):
        probs[e] *= inv
        prob_sum[task, e] += probs[e]


def _row_stats(src, t, g, vals):
    """Block sums of row t of ``src`` into vals[t]; returns its sum of squares (compiled only:
    ``src`` is bf16 words [N, d/2] uint32 or float32 [N, d]; the overload below picks the loop)."""
    raise NotImplementedError


@overload(_row_stats)
def _row_stats_for(src, t, g, vals):
    if src.dtype == types.uint32:
        return lambda src, t, g, vals: _bf16_row(src, t, g // 2, vals)
    return lambda src, t, g, vals: _f32_row(src, t, g, vals)


@numba.njit(parallel=True, **_JIT)
def _grap(src, g, cosine, vals, sumsq, top_idx, rank_scale, bonus, bonus_row, prob_choice, prob_sum):
    n = src.shape[0]
    for task in numba.prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        keys = np.empty(vals.shape[1], dtype=np.int64)
        buf = np.empty(vals.shape[1], dtype=np.float32)
        for t in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            ss = _row_stats(src, t, g, vals)
            sumsq[t] = ss
            _finish_row(vals, t, ss, g, cosine, top_idx, rank_scale, bonus, bonus_row[t], keys, buf)
            if len(prob_choice):  # softmax statistics of the untilted logits
                _softmax(vals, t, rank_scale, buf, prob_sum, task)
                prob_choice[t] = buf[top_idx[t, 0]]


@numba.njit(parallel=True, **_JIT)
def _softmax_top_k(logits, top_idx, top_val, prob_sum):
    n = logits.shape[0]
    for task in numba.prange((n + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        keys = np.empty(logits.shape[1], dtype=np.int64)
        probs = np.empty(logits.shape[1], dtype=np.float32)
        for t in range(task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK)):
            _softmax(logits, t, np.float32(1.0), probs, prob_sum, task)
            _top_k(probs, top_idx, t, keys)
            for j in range(top_idx.shape[1]):
                top_val[t, j] = probs[top_idx[t, j]]


def _threads() -> int:
    """Run numba's parallel loops on torch's thread count; returns that count."""
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    return threads


def _restore(threads: int) -> None:
    if torch.get_num_threads() != threads:  # starting numba's OpenMP pool resets the shared runtime's count
        torch.set_num_threads(threads)


def softmax_top_k(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k of softmax(logits) per row of a CPU float32 [N, E] tensor, in one pass: (top_p [N, k]
    float32, top_e [N, k] int64, descending, ties to the lower expert; mean_prob [E] float64, each
    expert's mean probability over the rows). The kernel's exp is within 1.4 ulp: probabilities
    agree with torch.softmax to ~1e-7."""
    x = logits.float().contiguous().numpy()
    n, n_exp = x.shape
    top_e = np.empty((n, k), dtype=np.int64)
    top_p = np.empty((n, k), dtype=np.float32)
    prob_sum = np.zeros((-(-n // ROWS_PER_TASK), n_exp), dtype=np.float64)  # per task: a fixed order
    threads = _threads()
    _softmax_top_k(x, top_e, top_p, prob_sum)
    _restore(threads)
    return torch.from_numpy(top_p), torch.from_numpy(top_e), torch.from_numpy(prob_sum.sum(0) / max(n, 1))


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
    threads = _threads()
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
        _grap(x.view(torch.int16).numpy().view(np.uint32), *args)  # [N, d/2] words
    else:
        _grap(x.float().numpy(), *args)
    _restore(threads)
    out = torch.from_numpy(vals), torch.from_numpy(np.sqrt(sumsq))[:, None], torch.from_numpy(top_idx)
    if not softmax:
        return (*out, None, None)
    return (*out, torch.from_numpy(prob_choice), torch.from_numpy(prob_sum.sum(0) / max(n, 1)))
