"""Quality metrics of one routing decision (what the papers use to compare routers).

All are plain functions of the decision's arrays (numpy), except the Calinski-Harabasz index which
needs the token features (torch, computed on a deterministic sample for speed).
- dropped_fraction: nominated (token, expert) pairs that were not kept.
- padding_fraction: empty slots / all slots when buffers are padded to capacity.
- load_max_over_mean, load_cv (std / mean), load_gini: imbalance of tokens per expert.
- load_entropy: entropy of the expert-load distribution divided by log(E) (1 = perfectly even).
- locality_share: kept assignments whose expert sits on the token's own node.
- calinski_harabasz: between-expert / within-expert dispersion of the tokens each expert keeps
  (ETR's measure of expert homogenisation); a token kept by several experts counts once per expert.
  It needs the features and costs a GEMM, so routers do not compute it: the pipeline adds it to each
  sampled decision with ``add_feature_stats`` (routing throughput measures routing alone).
"""

from __future__ import annotations

import numpy as np
import torch

from etr_sim.activations.stats import calinski_harabasz as feature_ch

CH_SAMPLE = 1024  # assignments used for the Calinski-Harabasz index


def gini(x: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 = all equal, -> 1 = one holds everything)."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total <= 0:
        return 0.0
    return float((2.0 * np.arange(1, n + 1) - n - 1) @ x / (n * total))


def load_stats(load: np.ndarray) -> dict[str, float]:
    """Imbalance statistics of [E] tokens per expert."""
    load = np.asarray(load, dtype=np.float64)
    mean = load.mean() if len(load) else 0.0
    if mean <= 0:
        return {"load_max_over_mean": 0.0, "load_cv": 0.0, "load_gini": 0.0, "load_entropy": 0.0}
    p = load / load.sum()
    nz = p[p > 0]
    entropy = float(-(nz * np.log(nz)).sum() / np.log(len(load))) if len(load) > 1 else 1.0
    return {
        "load_max_over_mean": float(load.max() / mean),
        "load_cv": float(load.std() / mean),
        "load_gini": gini(load),
        "load_entropy": entropy,
    }


def locality_share(is_local: np.ndarray) -> float:
    """Fraction of kept assignments that stay on the token's node. is_local [A] bool."""
    return float(is_local.mean()) if len(is_local) else 0.0


def calinski_harabasz(hidden: torch.Tensor, token: np.ndarray, expert: np.ndarray, sample: int = CH_SAMPLE) -> float:
    """Calinski-Harabasz index of the kept tokens, clustered by the expert that keeps them.

    Tokens are L2-normalised first (routing looks at directions); an evenly strided sample of
    ``sample`` assignments is used (deterministic). The index itself is
    ``activations.stats.calinski_harabasz``. Returns NaN when fewer than two experts or no
    within-expert spread. Args: hidden [N, d]; token, expert [A].
    """
    a = len(token)
    if a == 0:
        return float("nan")
    pick = np.arange(a) if a <= sample else np.linspace(0, a - 1, sample).astype(np.int64)
    _, lab = np.unique(expert[pick], return_inverse=True)
    x = hidden.index_select(0, torch.from_numpy(token[pick])).double()  # [m, d] (index_select: fast gather)
    x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-30)
    ch = feature_ch(x, torch.from_numpy(lab.astype(np.int64)))
    return ch if 0.0 < ch < float("inf") else float("nan")


def add_feature_stats(decision, batch) -> None:
    """Add the feature-based metrics (Calinski-Harabasz) to ``decision.stats`` (batch: the routed TokenBatch)."""
    rows = decision.token if batch.rows is None else batch.rows[decision.token]  # [A] row of batch.hidden
    decision.stats["calinski_harabasz"] = calinski_harabasz(batch.hidden, rows, decision.expert)
