"""Clustering statistics of router inputs: token-token correlation, k-means, Calinski-Harabasz.

Vocabulary: hidden [N, d] -> z (each token centred over its channels and scaled to unit norm, so
z_a . z_b is the Pearson correlation of tokens a and b across channels) -> statistics.

- mean_token_correlation: the ETR papers' "token-token correlation" of a sample: the mean
  off-diagonal Pearson correlation between the tokens of one sequence, averaged over sequences.
- within_cluster_correlation: the mean correlation between two tokens of the same k-means
  cluster (clusters found on z with spherical k-means). For the synthetic Gaussian mixture this is
  its ``cluster_strength`` (plus the small bias of fitting clusters to finite data, which the stage
  calibration cancels by applying the same estimator to both; see docs/activations.md).
- calinski_harabasz: between-cluster over within-cluster dispersion, each per degree of freedom
  (Calinski and Harabasz 1974): CH = [B / (K - 1)] / [W / (N - K)], on the raw hidden vectors.
"""

from __future__ import annotations

import numpy as np
import torch


def unit_rows(hidden: torch.Tensor) -> torch.Tensor:
    """[N, d] -> [N, d] rows centred over channels and scaled to unit norm (Pearson geometry)."""
    x = hidden.double()
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def mean_token_correlation(hidden: torch.Tensor, offsets: np.ndarray) -> float:
    """Mean off-diagonal token-token correlation within sequences (sequences of 1 token skipped).

    Args: hidden [N, d]; offsets [S + 1] sequence boundaries.
    """
    z = unit_rows(hidden)
    vals = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        n = int(b - a)
        if n < 2:
            continue
        c = z[a:b] @ z[a:b].T  # [n, n]
        vals.append(float((c.sum() - c.diagonal().sum()) / (n * (n - 1))))
    return float(np.mean(vals)) if vals else 0.0


def spherical_kmeans(z: torch.Tensor, k: int, seed: int, iters: int = 50) -> torch.Tensor:
    """[N] cluster labels of unit rows ``z`` [N, d] (k-means++ seeding, cosine assignment)."""
    g = torch.Generator().manual_seed(seed)
    n = z.shape[0]
    k = min(k, n)
    centers = [z[int(torch.randint(n, (1,), generator=g))]]
    for _ in range(1, k):
        d2 = (2 - 2 * (z @ torch.stack(centers).T)).clamp_min(0).min(dim=1).values  # [N]
        p = d2 / d2.sum() if d2.sum() > 0 else torch.full((n,), 1.0 / n, dtype=z.dtype)
        centers.append(z[int(torch.multinomial(p.float(), 1, generator=g))])
    c = torch.stack(centers)  # [K, d]
    labels = torch.full((n,), -1, dtype=torch.long)
    for _ in range(iters):
        new = (z @ c.T).argmax(dim=1)  # [N]
        if torch.equal(new, labels):
            break
        labels = new
        sums = torch.zeros_like(c).index_add_(0, labels, z)  # [K, d]
        empty = sums.norm(dim=1) == 0
        c = torch.where(empty[:, None], c, sums / sums.norm(dim=1, keepdim=True).clamp_min(1e-12))
    return labels


def within_cluster_correlation(z: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean correlation over all pairs of distinct tokens that share a cluster. z [N, d] unit rows."""
    k = int(labels.max()) + 1
    sums = torch.zeros(k, z.shape[1], dtype=z.dtype).index_add_(0, labels, z)  # [K, d]
    counts = torch.bincount(labels, minlength=k).to(z.dtype)  # [K]
    pair_sum = (sums * sums).sum(dim=1) - counts  # sum over ordered pairs a != b of z_a . z_b
    pairs = counts * (counts - 1)
    return float(pair_sum.sum() / pairs.sum().clamp_min(1))


def calinski_harabasz(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Calinski-Harabasz index of ``labels`` on x [N, d] (higher = tighter, better separated)."""
    x = x.double()
    n, k = x.shape[0], int(labels.max()) + 1
    used = torch.bincount(labels, minlength=k) > 0
    k_used = int(used.sum())
    if k_used < 2 or n <= k_used:
        return 0.0
    x = x - x.mean(dim=0)  # centred: total dispersion T = sum |x|^2 splits as T = B + W
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype).index_add_(0, labels, x)[used]  # [K, d]
    counts = torch.bincount(labels, minlength=k).to(x.dtype)[used]
    between = float(((sums * sums).sum(dim=1) / counts).sum())  # sum_k n_k |c_k - mean|^2
    total = float(torch.linalg.vector_norm(x) ** 2)
    within = total - between  # float64; below 1e-12 of the total it is rounding: no spread (inf)
    return (between / (k_used - 1)) / (within / (n - k_used)) if within > 1e-12 * total else float("inf")


def clustering_stats(hidden: torch.Tensor, offsets: np.ndarray, k: int, seed: int) -> dict[str, float]:
    """The per-stage numbers reported for a capture: correlation, within-cluster correlation, CH."""
    z = unit_rows(hidden)
    labels = spherical_kmeans(z, k, seed)
    return {
        "mean_token_correlation": mean_token_correlation(hidden, offsets),
        "within_cluster_correlation": within_cluster_correlation(z, labels),
        "calinski_harabasz": calinski_harabasz(hidden, labels),
        "kmeans_clusters": k,
    }
