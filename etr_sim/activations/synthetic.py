"""Seeded synthetic router inputs: a Gaussian mixture with clustering strength and popularity skew.

Each token belongs to one of ``num_clusters`` clusters with probability proportional to
``(rank + 1) ** -popularity_skew`` (Zipf), and is ``sqrt(s) * center + sqrt(1 - s) * noise`` with
unit-variance Gaussian center and noise, s = ``cluster_strength``. Two tokens of one cluster then
have expected cosine similarity about s, tokens of different clusters about 0: s is the knob that
stands for "how far training has clustered the features" (ETR: near 0 before training, > 0.8 after).
``stage`` picks s from the table calibrated on the in-project training series (docs/activations.md).
"""

from __future__ import annotations

import numpy as np
import torch

from etr_sim.activations.batch import TokenBatch
from etr_sim.config.scenario import SyntheticActivations
from etr_sim.seeding import seed_for


def generate(
    spec: SyntheticActivations,
    tokens_per_gpu: int,
    gpu_node: np.ndarray,
    seed: int,
    layer: int = 0,
    step: int = 0,
    sample: int = 0,
) -> TokenBatch:
    """Router inputs for ``len(gpu_node)`` GPUs x ``tokens_per_gpu`` tokens.

    The cluster centres depend on (seed, layer) only: every micro-batch ``sample`` of a layer shares
    the layer's feature structure and draws its own tokens from it."""
    num_gpus = len(gpu_node)
    n, d = num_gpus * tokens_per_gpu, spec.hidden_size
    layer_gen = torch.Generator().manual_seed(seed_for(seed, "activations", "synthetic", layer))
    centers = torch.randn(spec.num_clusters, d, generator=layer_gen)  # [K, d]
    gen = torch.Generator().manual_seed(seed_for(seed, "activations", "synthetic", layer, "tokens", step, sample))
    popularity = (torch.arange(spec.num_clusters, dtype=torch.float64) + 1.0) ** -spec.popularity_skew
    cluster = torch.multinomial(popularity / popularity.sum(), n, replacement=True, generator=gen)  # [N]
    s = spec.strength
    hidden = torch.randn(n, d, generator=gen).mul_((1.0 - s) ** 0.5)  # [N, d] noise part, in place
    hidden.add_(centers.mul_(s**0.5)[cluster])  # [N, d] plus the scaled centre of each token's cluster
    src_gpu = np.repeat(np.arange(num_gpus, dtype=np.int64), tokens_per_gpu)
    position = np.tile(np.arange(tokens_per_gpu, dtype=np.int64), num_gpus)
    return TokenBatch(hidden, src_gpu, np.asarray(gpu_node, dtype=np.int64)[src_gpu], position, layer, step)
