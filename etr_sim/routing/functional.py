"""Pure routing maths. Vocabulary: hidden -> logits/affinity -> probs/scores -> top-k -> kept.

Token choice and expert choice are the same top-k taken along different axes of [N, E] scores.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def grap_affinity(hidden: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Cosine affinity to the fixed GrAP gates (ETR eq. 4).

    Gate i is n/d on the i-th block of d/n channels and 0 elsewhere, so <x, w_i> is the block mean
    and |w_i| = sqrt(n/d): delta[t, i] = blocksum_i(x_t) / (sqrt(d/n) * |x_t|).

    Args: hidden [N, d] with d % num_experts == 0. Returns [N, E] float32 in [-1, 1].
    """
    n_tok, d = hidden.shape
    x = hidden.float()
    block_sum = x.view(n_tok, num_experts, d // num_experts).sum(-1)  # [N, E]
    norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # [N, 1]
    return block_sum / (math.sqrt(d / num_experts) * norm)  # [N, E]


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


def keep_best_per_bucket(bucket: np.ndarray, priority: np.ndarray, capacity: int) -> np.ndarray:
    """Keep the ``capacity`` highest-priority candidates of each bucket (ties: lower index first).

    Args: bucket [A] int (e.g. group * E + expert), priority [A] float. Returns keep [A] bool.
    """
    a = len(bucket)
    if a == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((np.arange(a), -priority, bucket))  # by bucket, priority desc, index
    sorted_bucket = bucket[order]
    first = np.flatnonzero(np.r_[True, sorted_bucket[1:] != sorted_bucket[:-1]])  # bucket starts
    run_start = np.repeat(first, np.diff(np.r_[first, a]))
    rank = np.arange(a) - run_start  # [A] rank within the bucket
    keep = np.zeros(a, dtype=bool)
    keep[order] = rank < capacity
    return keep


def capacity_from_factor(factor: float, tokens_per_group: int, k: int, num_experts: int) -> int:
    """Conventional capacity ceil(factor * tokens * k / E) (GShard; LocMoE 3.2 per EP rank)."""
    return max(1, math.ceil(factor * tokens_per_group * k / num_experts))


def switch_aux_loss(probs: torch.Tensor, top1: torch.Tensor) -> float:
    """Switch load-balancing loss E * sum_i f_i P_i (without alpha). probs [N, E], top1 [N]."""
    num_experts = probs.shape[1]
    f = torch.bincount(top1, minlength=num_experts).double() / max(len(top1), 1)  # [E]
    p = probs.double().mean(0)  # [E]
    return float(num_experts * (f * p).sum())
