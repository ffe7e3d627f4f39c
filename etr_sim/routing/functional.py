"""Pure routing maths. Vocabulary: hidden -> logits/affinity -> probs/scores -> top-k -> kept.

Token choice and expert choice are the same top-k taken along different axes of [N, E] scores.
Everything here is a pure function of its arguments (no RNG state, no globals): the seeded
routers derive their randomness from counter-based hashes of (seed, token identity), so a token
gets the same experts whichever chunk it is routed in.

Precision and memory: hidden states may arrive in bf16/fp16 (captures, the benchmark). A linear
gate then runs in that dtype with float32 accumulation and a rounded output, which is what a bf16
model's own router computes (e.g. a bf16 nn.Linear gate), without a float32 copy of the chunk.
GrAP statistics (block sums, norms) are accumulated and kept in float32 whatever the input dtype:
on large CPU batches by a one-pass compiled kernel (``kernels.py``) that widens each row in
registers and takes the row's top-k while it is in cache (no float32 copy, rows in parallel on
torch's threads), otherwise by torch on a float32 copy (small batches; fp16 or GPU tensors of any
size). Softmax and top-k run in float32.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from etr_sim.arrays import splitmix64

_HALF = (torch.bfloat16, torch.float16)


FUSED_MIN_ELEMENTS = 1 << 24  # batches of at least N * d = 16M inputs use the compiled GrAP kernel


def uses_kernel(hidden: torch.Tensor) -> bool:
    """Whether GrAP statistics of ``hidden`` go through the compiled kernel (large CPU bf16/float32)."""
    return hidden.device.type == "cpu" and hidden.dtype in (torch.bfloat16, torch.float32) and hidden.numel() >= FUSED_MIN_ELEMENTS


def grap_stats(hidden: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, E] block sums, [N, 1] L2 norms), float32 accumulated and kept: block i is channels
    [i d/E, (i+1) d/E) of each token; hidden [N, d], d % E == 0.

    Large CPU bf16/float32 batches (>= FUSED_MIN_ELEMENTS) go through ``kernels.grap_rows``, one
    pass over the data; smaller ones through torch on a float32 copy. Both accumulate in float32,
    in different orders (results agree to ~1e-6 relative).
    """
    rows = grap_top(hidden, num_experts, 0)
    return rows.values, rows.norms


def grap_affinity(hidden: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Cosine affinity to the fixed GrAP gates (ETR eq. 4).

    Gate i is n/d on the i-th block of d/n channels and 0 elsewhere, so <x, w_i> is the block mean
    and |w_i| = sqrt(n/d): delta[t, i] = blocksum_i(x_t) / (sqrt(d/n) * |x_t|).

    Args: hidden [N, d] with d % num_experts == 0. Returns [N, E] float32 in [-1, 1].
    """
    return grap_top(hidden, num_experts, 0, cosine=True).values


class GrapRows(NamedTuple):
    """What ``grap_top`` computes for each input row (softmax fields are None unless asked for)."""

    values: torch.Tensor  # [N, E] float32 block sums, or cosine affinities
    norms: torch.Tensor  # [N, 1] float32 L2 norms
    top: torch.Tensor  # [N, k] int64 best experts, descending
    top1_prob: torch.Tensor | None  # [N] float32 softmax probability of each row's first pick
    mean_prob: torch.Tensor | None  # [E] mean softmax probability of each expert over the rows


def grap_top(
    hidden: torch.Tensor,
    num_experts: int,
    k: int,
    cosine: bool = False,
    rank_scale: float = 1.0,
    bonus: torch.Tensor | None = None,
    bonus_row: np.ndarray | None = None,
    softmax: bool = False,
) -> GrapRows:
    """GrAP statistics of each row of ``hidden`` and its k best experts, in one pass when fused.

    values: block sums, or the cosine affinity when ``cosine``; top: the experts ranked by
    values * rank_scale + bonus[bonus_row], descending, ties to the lower index, as ``topk``.
    bonus: [R, E] float32 additive tilt (e.g. a locality preference per source GPU), bonus_row [N]
    its row for each input; None for no tilt. softmax (k >= 1): also the softmax of the untilted
    logits values * rank_scale, as the probability of each row's first pick and the mean per expert
    (the fused kernel's exp is within 1.4 ulp of torch's; probabilities agree to ~1e-7).
    """
    n, d = hidden.shape
    if uses_kernel(hidden):  # one read of each row; top-k and softmax are taken while the row is in cache
        from etr_sim.routing import kernels  # numba: imported only when a batch is this large

        return GrapRows(*kernels.grap_rows(hidden, num_experts, cosine, k, rank_scale, bonus, bonus_row, softmax))
    x = hidden.float()
    values = x.view(n, num_experts, d // num_experts).sum(-1)  # [N, E]
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # [N, 1]
    if cosine:
        values = values / (math.sqrt(d / num_experts) * norms.clamp_min(1e-12))
    if k == 0:
        return GrapRows(values, norms, torch.zeros((n, 0), dtype=torch.int64), None, None)
    logits = values * rank_scale if rank_scale != 1.0 else values
    ranking = logits
    if bonus is not None:
        ranking = bonus.index_select(0, torch.from_numpy(np.asarray(bonus_row, dtype=np.int64))).add_(logits)
    top = topk(ranking, k)[1]
    if not softmax:
        return GrapRows(values, norms, top, None, None)
    probs = torch.softmax(logits, dim=-1)  # [N, E]
    return GrapRows(values, norms, top, probs.gather(1, top[:, :1])[:, 0], probs.mean(0))


def softmax_top_k(logits: torch.Tensor, k: int, compiled: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top_p [N, k], top_e [N, k], mean_prob [E]): the k largest softmax probabilities of each row of
    logits [N, E] and their experts (descending, ties to the lower expert, as ``topk``), and each
    expert's mean probability over the rows. ``compiled`` (large CPU batches, see ``uses_kernel``):
    one parallel pass of the compiled kernel, with no [N, E] probabilities kept (its exp agrees
    with torch's to ~1e-7); else torch."""
    if compiled and logits.device.type == "cpu":
        from etr_sim.routing import kernels

        return kernels.softmax_top_k(logits, k)
    probs = torch.softmax(logits, dim=-1)  # [N, E]
    top_p, top_e = topk(probs, k)
    return top_p, top_e, probs.mean(0)


def grap_logits(hidden: torch.Tensor, num_experts: int) -> torch.Tensor:
    """[N, E] GrAP gate outputs <x_t, w_i> = mean of block i of x_t (LocMoE's router logits)."""
    return grap_stats(hidden, num_experts)[0] * (num_experts / hidden.shape[1])


def linear_logits(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """[N, E] float32 = hidden [N, d] @ weight [d, E] (in the hidden dtype when it is bf16/fp16)."""
    if hidden.dtype in _HALF:
        return (hidden @ weight.to(hidden.dtype)).float()
    return hidden.float() @ weight.float()


def topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) [N, k] of the k largest scores per row, descending, ties to the lower
    expert index (torch.topk leaves the order of ties unspecified). scores [N, E].

    For k <= 4 it takes k successive row maxima (several times faster than torch.topk on CPU for
    narrow rows); for larger k, torch.topk, then a stable descending sort of the rows where a tie
    touches the top k (their order or membership is torch's choice otherwise).
    """
    if k >= scores.shape[1]:
        return scores.sort(dim=-1, descending=True, stable=True)
    if k > 4:
        values, indices = scores.topk(k + 1, dim=-1)  # [N, k + 1] descending: one past the cut
        tied = (values[:, 1:] == values[:, :-1]).any(-1)  # [N] rows with a tie in or at the top k
        if bool(tied.any()):
            rows = tied.nonzero()[:, 0]
            values[rows], indices[rows] = (t[:, : k + 1] for t in scores[rows].sort(dim=-1, descending=True, stable=True))
        return values[:, :k], indices[:, :k]
    vals, idxs = [], []
    work = scores
    for j in range(k):
        v, i = work.max(dim=-1)  # [N]
        vals.append(v)
        idxs.append(i)
        if j + 1 < k:
            work = work.clone() if j == 0 else work
            work.scatter_(1, i[:, None], -math.inf)
    return torch.stack(vals, 1), torch.stack(idxs, 1)


def grap_weight(hidden_size: int, num_experts: int) -> torch.Tensor:
    """[d, E] the explicit GrAP gate matrix (for tests and for gate='grap' in softmax routers)."""
    w = torch.zeros(hidden_size, num_experts)
    block = hidden_size // num_experts
    for i in range(num_experts):
        w[i * block : (i + 1) * block, i] = num_experts / hidden_size
    return w


def random_gate(hidden_size: int, num_experts: int, seed: int) -> torch.Tensor:
    """[d, E] seeded router weight, N(0, 1/d) like a freshly initialised linear gate."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(hidden_size, num_experts, generator=gen) / math.sqrt(hidden_size)


def _descending_order_key(priority: np.ndarray) -> np.ndarray | None:
    """[A] int64 in [0, 2^32) that sorts ascending as ``priority`` descends (equal priorities, equal
    keys), or None when some priority is not exactly a float32 (router scores always are)."""
    p32 = priority.astype(np.float32) + np.float32(0.0)  # + 0.0: -0.0 becomes +0.0, its equal
    if not np.array_equal(p32, priority):
        return None
    bits = p32.view(np.uint32).astype(np.int64)
    ascending = np.where(bits >= 0x80000000, bits ^ 0xFFFFFFFF, bits | 0x80000000)  # IEEE order as integers
    return 0xFFFFFFFF - ascending


def keep_best_per_bucket(bucket: np.ndarray, priority: np.ndarray, capacity: int) -> np.ndarray:
    """Keep the ``capacity`` highest-priority candidates of each bucket (ties: lower index first).

    Buckets within capacity keep everything; only the candidates of overflowing buckets are sorted
    (bucket-major, priority descending, index) and kept when their rank inside the bucket is below
    ``capacity``. When the priorities are float32 values, the order is one sort of 64-bit
    (bucket offset, priority, index) keys (unique, so numpy's SIMD value sort; ~15x faster than two
    stable numpy sorts), or, when the three do not fit in 64 bits, one stable radix sort of
    (bucket offset, priority); otherwise two stable sorts.

    Args: bucket [A] int >= 0 (e.g. group * E + expert), priority [A] float. Returns keep [A] bool.
    """
    a = len(bucket)
    if a == 0:
        return np.zeros(0, dtype=bool)
    over = np.bincount(bucket)[bucket] > capacity  # [A] candidate sits in an overflowing bucket
    keep = ~over
    idx = np.flatnonzero(over)
    if len(idx) == 0:
        return keep
    b, p = bucket[idx], priority[idx]
    desc = _descending_order_key(p)
    rel = b - b.min()  # bucket offsets: one chunk's buckets span a narrow range
    bucket_bits, index_bits = int(rel.max()).bit_length(), max(len(idx) - 1, 1).bit_length()
    if desc is not None and bucket_bits + 32 + index_bits <= 64:  # unique keys: a plain (SIMD) value sort
        key = (rel.astype(np.uint64) << np.uint64(32 + index_bits)) | (desc.astype(np.uint64) << np.uint64(index_bits))
        key |= np.arange(len(idx), dtype=np.uint64)
        order = (np.sort(key) & np.uint64((1 << index_bits) - 1)).astype(np.int64)
    elif desc is not None and int(rel.max()) < 2**31:
        order = torch.sort(torch.from_numpy((rel.astype(np.int64) << 32) | desc), stable=True).indices.numpy()
    else:
        by_priority = np.argsort(-p, kind="stable")
        order = by_priority[np.argsort(b[by_priority], kind="stable")]  # bucket-major, priority desc, index
    sorted_b = b[order]
    starts = np.flatnonzero(np.r_[True, sorted_b[1:] != sorted_b[:-1]])
    rank = np.arange(len(idx)) - np.repeat(starts, np.diff(np.r_[starts, len(idx)]))
    keep[idx[order]] = rank < capacity
    return keep


def capacity_from_factor(factor: float, tokens_per_group: int, k: float, num_experts: int) -> int:
    """Conventional capacity ceil(factor * tokens * k / E) (GShard; LocMoE 3.2 per EP rank)."""
    return max(1, math.ceil(factor * tokens_per_group * k / num_experts - 1e-9))


def switch_aux_loss(mean_prob: torch.Tensor, top1: torch.Tensor) -> float:
    """Switch load-balancing loss E * sum_i f_i P_i (without alpha): mean_prob [E] is P (each
    expert's mean router probability over the tokens), top1 [N] each token's first choice (f)."""
    num_experts = mean_prob.shape[0]
    f = torch.bincount(top1, minlength=num_experts).double() / max(len(top1), 1)  # [E]
    return float(num_experts * (f * mean_prob.double()).sum())


def threshold_nominations(affinity: torch.Tensor, threshold: float, max_l: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token nominations by cumulative affinity share.

    Each token nominates its fewest top experts whose share of the token's positive affinity mass
    relu(delta) / sum relu(delta) reaches ``threshold``, at least 1 and at most ``max_l``.

    Args: affinity [N, E]. Returns (top_a [N, L], top_e [N, L], valid [N, L] bool), L = max_l.
    """
    top_a, top_e = affinity.topk(max_l, dim=-1)  # [N, L]
    pos = affinity.clamp_min(0.0)
    mass = pos.sum(-1, keepdim=True).clamp_min(1e-12)  # [N, 1]
    share_before = (top_a.clamp_min(0.0) / mass).cumsum(-1) - top_a.clamp_min(0.0) / mass  # [N, L]
    valid = share_before < threshold - 1e-7  # nominate while the share so far is short of the threshold
    valid[:, 0] = True
    return top_a, top_e, valid


def top_per_row(values: np.ndarray, c: int) -> np.ndarray:
    """[..., n] bool mask of the ``c`` largest entries along the last axis; ties at the cut go to the
    lower index. Linear-time selection (np.partition): ~5x faster than torch.topk for the large c of
    expert choice, and single-threaded like the rest of a sweep worker."""
    n = values.shape[-1]
    if c >= n:
        return np.ones(values.shape, dtype=bool)
    kth = np.partition(values, n - c, axis=-1)[..., n - c : n - c + 1]  # [..., 1] the c-th largest
    take = values > kth
    tie = values == kth
    short = c - take.sum(-1, keepdims=True)  # [..., 1] ties to take at the cut
    crowded = (tie.sum(-1, keepdims=True) > short)[..., 0]  # rows with more ties than places
    take |= tie & ~crowded[..., None]
    if crowded.any():  # lower index first among the tied (only these rows pay for the running count)
        take[crowded] |= tie[crowded] & (np.cumsum(tie[crowded], axis=-1) <= short[crowded])
    return take


def group_topk(scores: torch.Tensor, group: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expert choice: each expert takes the top-min(C, N_g) tokens of every group (ties: lower token first).

    Groups are gathered into a [Gs, g_max, E] array (padded with -inf when sizes differ; a plain
    view when the batch is already grouped contiguously in equal sizes, the usual case).
    Args: scores [N, E], group [N] int, capacity C. Returns (token, expert, score) [A], token-major.
    """
    n, n_exp = scores.shape
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    x = scores.numpy()
    sizes = np.bincount(group)
    sizes = sizes[sizes > 0]
    g_max = int(sizes.max())
    c = min(capacity, g_max)
    if bool((sizes == g_max).all() and (np.diff(group) >= 0).all()):  # contiguous equal groups
        grouped = x.reshape(len(sizes), g_max, n_exp)  # [Gs, g_max, E] view
        take = top_per_row(grouped.transpose(0, 2, 1), c).transpose(0, 2, 1)  # [Gs, g_max, E]
        gs, slot, expert = np.nonzero(take)  # token-major, experts ascending
        token = gs * g_max + slot
        return token, expert.astype(np.int64), x[token, expert]
    order = np.argsort(group, kind="stable")  # [N] tokens grouped
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    slot = np.arange(n) - np.repeat(starts, sizes)  # [N] position inside the sorted group
    row = np.repeat(np.arange(len(sizes)), sizes)
    index = np.full((len(sizes), g_max), -1, dtype=np.int64)  # [Gs, g_max] token or -1 (pad)
    index[row, slot] = order
    grouped = np.full((len(sizes), g_max, n_exp), -np.inf, dtype=x.dtype)  # [Gs, g_max, E]
    grouped[row, slot] = x[order]
    take = top_per_row(grouped.transpose(0, 2, 1), c).transpose(0, 2, 1)
    gs, slot, expert = np.nonzero(take)
    token = index[gs, slot]
    ok = token >= 0  # groups smaller than c pick padding slots: drop them
    token, expert = token[ok], expert[ok]
    order = np.lexsort((expert, token))  # token-major like the other routers
    token, expert = token[order], expert[order].astype(np.int64)
    return token, expert, x[token, expert]


_MAX64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def hash_keys(*keys: np.ndarray | int) -> np.ndarray:
    """Combine integer key arrays (broadcast) into one uint64 hash per element."""
    h = np.asarray(np.uint64(0))
    for k in keys:
        with np.errstate(over="ignore"):
            h = splitmix64(np.asarray(k).astype(np.uint64) ^ (h * np.uint64(31)))
    return h


def hashed_topk(key: np.ndarray, num_experts: int, k: int, seed: int) -> np.ndarray:
    """[N, k] k distinct experts per key, uniformly at random given a seeded hash of (key, expert).

    Each (key, expert) gets a uint64 hash; the experts with the k smallest, in ascending order, are a
    uniform random k-subset (ties, i.e. 64-bit collisions, go to the lower expert). For k <= 4 they
    are taken by k row minima (~20x faster than a partition over [N, E]).
    Args: key [N] uint64 identity of each token (hashed already). Returns experts [N, k] int64.
    """
    u = hash_keys(np.uint64(seed & 0xFFFFFFFFFFFFFFFF), key[:, None], np.arange(num_experts, dtype=np.uint64)[None, :])  # [N, E]
    if k <= 4 and k < num_experts:
        out = np.empty((len(key), k), dtype=np.int64)
        rows = np.arange(len(key))
        for j in range(k):
            out[:, j] = u.argmin(axis=1)
            u[rows, out[:, j]] = _MAX64
        return out
    order = np.argsort(u, axis=1, kind="stable")  # ties to the lower expert, as above
    return order[:, :k].astype(np.int64)


def node_limited_mask(scores: torch.Tensor, expert_node: torch.Tensor, max_nodes: int, node_score: str) -> torch.Tensor:
    """[N, E] bool: experts on the ``max_nodes`` best nodes of each token (DeepSeek-V3 node-limited routing).

    Args: scores [N, E]; expert_node: compact node index (0..K-1) of each expert, [E] when it is the
    same for every token (the usual layout) or [N, E]; node_score 'max' (best expert per node) or
    'top2_sum' (sum of the two best; when experts tie for a node's best, the second is the next
    lower score). With [E] indices grouping the experts contiguously in equal numbers per node, the
    node scores are reductions over a [N, K, E/K] view (no scatter over [N, E]).
    """
    n, n_exp = scores.shape
    k_nodes = int(expert_node.max()) + 1 if expert_node.numel() else 0
    if k_nodes <= max_nodes:
        return torch.ones_like(scores, dtype=torch.bool)
    grouped = expert_node.dim() == 1 and n_exp % k_nodes == 0 and bool(
        (expert_node == torch.arange(n_exp) // (n_exp // k_nodes)).all())
    if grouped:
        view = scores.view(n, k_nodes, n_exp // k_nodes)  # [N, K, E/K]
        best = view.amax(-1)  # [N, K]
        if node_score == "top2_sum":
            rest = view.masked_fill(view == best[..., None], -math.inf)
            second = rest.amax(-1)
            best = best + torch.where(torch.isfinite(second), second, torch.zeros_like(second))
    else:
        expert_node = expert_node.expand(n, n_exp)
        best = torch.full((n, k_nodes), -math.inf).scatter_reduce(1, expert_node, scores, "amax")  # [N, K]
        if node_score == "top2_sum":
            is_best = scores == best.gather(1, expert_node)  # [N, E] (ties: every tied expert counts as best)
            rest = torch.where(is_best, torch.full_like(scores, -math.inf), scores)
            second = torch.full((n, k_nodes), -math.inf).scatter_reduce(1, expert_node, rest, "amax")  # [N, K]
            best = best + torch.where(torch.isfinite(second), second, torch.zeros_like(second))
    top_nodes = best.topk(max_nodes, dim=-1).indices  # [N, M]
    chosen = torch.zeros((n, k_nodes), dtype=torch.bool).scatter_(1, top_nodes, True)  # [N, K]
    if grouped:
        return chosen.repeat_interleave(n_exp // k_nodes, dim=1)  # [N, E]
    return chosen.gather(1, expert_node)  # [N, E]
