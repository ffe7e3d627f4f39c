"""Capacity rules: how many tokens an expert accepts per capacity group, and the state some rules keep.

Rules (YAML ``capacity.rule``):
- ``fixed``: C = tokens.
- ``factor``: C = ceil(factor * s * l / E), s = tokens per capacity group, l = nominations per token
  (the maximum l under a nomination threshold) (the conventional GShard / LocMoE 3.2 capacity).
- ``locmoe_first_batch``: LocMoE Theorem 1, C = ceil(scale / (E * p_delta)) with
  p_delta = 1 - I_{delta^2}(1/2, (d-1)/2). delta is given, or measured on the first batch as a
  quantile of every token's best GrAP affinity (our reading of LocMoE's "angular deviation between
  a token and its gate"; the paper reports delta ~ 0.03 on PanGu-Sigma and does not say how it is
  estimated). Computed ONCE per MoE layer, on the first batch routed for that layer, then fixed.
- ``dynamic``: recomputed on every call (every training step) from affinity statistics, after ETR
  Theorem 5 / Corollary 6. Under the isotropic null (untrained features) a token's cosine to a gate
  is ~ N(0, 1/d), so a nomination whose affinity exceeds tau = Phi^-1((1 - alpha)^(1/E)) / sqrt(d)
  (the (1 - alpha) quantile of an isotropic token's best affinity) "resonates" with the expert.
  Per (capacity group g, expert i) with m nominators of which r resonate:
    * no significant resonance (r <= alpha m + k sqrt(alpha (1 - alpha) m)): the expert cannot tell
      discriminative tokens from irrelevant ones (q = Theta(1)), so Corollary 6 asks for token
      choice with C = Theta(s): keep every nominator, C_gi = m;
    * resonance: keep the r resonant tokens plus Corollary 6's allowance for irrelevant tokens that
      out-score them, C_gi = r + ceil(2 s q), q = mean over resonant nominators of the null
      probability Phi(-a sqrt(d)) that one isotropic token out-scores affinity a.
  C = clip(ceil(margin * max_gi C_gi), min_tokens, s). Untrained features give C = the largest
  nominator count (the expert-side cut never binds: TCR); as features align with the gates the
  resonant share grows, the stragglers (tokens that nominate i only by chance) stop counting, the
  cut binds and the capacity falls towards the resonant count (ECR). docs/routing.md derives it.

State is explicit: a ``CapacityState`` maps an MoE layer to the capacity fixed for it (and the delta
it came from), so "first batch" means "first call of ``route`` for that layer", calls are
reproducible, and ``reset()`` or ``calibrate()`` make the choice visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

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


def resonance_threshold(hidden_size: int, num_experts: int, alpha: float) -> float:
    """tau: the (1 - alpha) quantile of the best of E isotropic cosines ~ N(0, 1/d)."""
    from scipy.special import ndtri  # here, not at import: scipy costs every run ~0.06 s otherwise

    return float(ndtri((1.0 - alpha) ** (1.0 / num_experts))) / math.sqrt(hidden_size)


def dynamic_capacity(
    bucket: np.ndarray,
    score: np.ndarray,
    num_buckets: int,
    tokens_per_group: int,
    hidden_size: int,
    num_experts: int,
    rule,
) -> tuple[int, dict[str, float]]:
    """ETR dynamic rule (module docstring). Returns (C, statistics).

    Args: bucket [A] (group * E + expert) and score [A] cosine affinity of every nomination,
    s = tokens_per_group, d = hidden_size, rule a DynamicCapacity spec.
    """
    from scipy.special import ndtr

    if len(bucket) == 0:
        return max(1, rule.min_tokens), {"capacity_resonant_share": 0.0}
    tau = resonance_threshold(hidden_size, num_experts, rule.resonance_alpha)
    resonant = score > tau  # [A]
    m = np.bincount(bucket, minlength=num_buckets).astype(np.float64)  # [B]
    r = np.bincount(bucket[resonant], minlength=num_buckets).astype(np.float64)
    q_sum = np.bincount(bucket[resonant], weights=ndtr(-score[resonant] * math.sqrt(hidden_size)), minlength=num_buckets)
    q_sum = q_sum.astype(np.float64)  # bincount of no weights at all comes back as int64
    q = np.divide(q_sum, r, out=np.zeros_like(q_sum), where=r > 0)
    a = rule.resonance_alpha
    significant = r > a * m + rule.detection_sigmas * np.sqrt(a * (1.0 - a) * m)
    c_gi = np.where(significant, r + np.ceil(2.0 * tokens_per_group * q), m)  # [B]
    cap = math.ceil(rule.margin * float(c_gi.max()) - 1e-9)
    cap = int(min(max(cap, rule.min_tokens, 1), max(tokens_per_group, 1)))
    return cap, {
        "capacity_resonant_share": float(resonant.mean()),
        "capacity_resonant_experts": float(significant[m > 0].mean()) if (m > 0).any() else 0.0,
    }
