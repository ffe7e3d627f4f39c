"""Capacity rules: how many tokens an expert accepts per capacity group, and the state some rules keep.

Rules (YAML ``capacity.rule``):
- ``fixed``: C = tokens.
- ``factor``: C = ceil(factor * s * l / E), s = tokens per capacity group, l = mean nominations per
  token (the conventional GShard / LocMoE 3.2 capacity).
- ``locmoe_first_batch``: LocMoE Theorem 1, C = ceil(scale / (E * p_delta)) with
  p_delta = 1 - I_{delta^2}(1/2, (d-1)/2). delta is given, or measured on the first batch as a
  quantile of every token's best GrAP affinity (our reading of LocMoE's "angular deviation between
  a token and its gate"; the paper reports delta ~ 0.03 on PanGu-Sigma and does not say how it is
  estimated). Computed ONCE per MoE layer, on the first batch routed for that layer, then fixed.
- ``dynamic``: recomputed on every call (every training step) from affinity statistics, after ETR
  Corollary 6: ECR keeps the discriminative token when C >= 2 s q, q = P(an irrelevant token
  out-scores it). We estimate q per expert as the Mann-Whitney probability that a token which did
  NOT nominate expert i has a higher affinity to i than one that did (nominators stand in for
  "discriminative", the rest for "irrelevant"), combine experts by a nominator-weighted mean (or
  the max), and set C = clip(ceil(margin * 2 * s * q), min_tokens, s). With isotropic features the
  nominators barely stand out (q ~ 0.1-0.5), 2 s q exceeds the nominators an expert gets (~ s l/E) and
  the expert-side cut does not bind: pure token choice. As features cluster q falls towards 0, C
  shrinks to Theta(1) and the expert-side cut binds: expert choice. Full derivation: docs/routing.md.

State is explicit: a ``CapacityState`` maps an MoE layer to the capacity fixed for it (and the delta
it came from), so "first batch" means "first call of ``route`` for that layer", calls are
reproducible, and ``reset()`` or ``calibrate()`` make the choice visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from etr_sim.routing import functional as F
from etr_sim.routing.theory import locmoe_min_capacity


@dataclass(frozen=True)
class FixedForLayer:
    """A capacity fixed on the first batch of one MoE layer."""

    capacity: int
    delta: float
    step: int


@dataclass
class CapacityState:
    """Per-layer capacities fixed by stateful rules (``locmoe_first_batch``). Mutable on purpose."""

    fixed: dict[int, FixedForLayer] = field(default_factory=dict)

    def reset(self) -> None:
        self.fixed.clear()


def measured_delta(affinity: torch.Tensor, quantile: float) -> float:
    """``quantile`` of each token's best cosine affinity. affinity [N, E]."""
    if affinity.shape[0] == 0:
        return 0.0
    best = affinity.max(dim=-1).values.double()  # [N]
    return float(torch.quantile(best, quantile)) if best.numel() <= 16_000_000 else float(best.median())


def locmoe_capacity(delta: float, d: int, num_experts: int, scale: float) -> int:
    """ceil(scale * LocMoE Theorem 1 bound), at least 1."""
    bound = float(locmoe_min_capacity(max(delta, 0.0), d, num_experts))
    return max(1, math.ceil(scale * bound - 1e-9)) if math.isfinite(bound) else 1


def dynamic_capacity(
    affinity: torch.Tensor, nominated: torch.Tensor, tokens_per_group: int, margin: float, min_tokens: int, aggregate: str
) -> tuple[int, float]:
    """ETR dynamic rule: C = clip(ceil(margin * 2 * s * q), min_tokens, s). Returns (C, q).

    Args: affinity [N, E], nominated [N, E] bool, s = tokens_per_group.
    """
    q_i, m_i = F.outscore_probability(affinity, nominated)  # [E], [E]
    if m_i.sum() == 0:
        return max(1, min_tokens), 0.0
    q = float(q_i.max()) if aggregate == "max" else float((q_i * m_i).sum() / m_i.sum())
    c = math.ceil(margin * 2.0 * tokens_per_group * q - 1e-9)
    return int(min(max(c, min_tokens, 1), max(tokens_per_group, 1))), q
