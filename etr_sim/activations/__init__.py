"""Router inputs per MoE layer: captured from torch models, bundled real captures, synthetic generators."""

from __future__ import annotations

import numpy as np

from etr_sim.activations import captured, synthetic
from etr_sim.activations.batch import TokenBatch

# One entry per YAML ``activations.kind``.
SOURCES = {"synthetic": synthetic.generate, "captured": captured.generate}


def make_batch(spec, tokens_per_gpu: int, gpu_node: np.ndarray, seed: int, layer: int = 0, step: int = 0,
               sample: int = 0) -> TokenBatch:
    """Router inputs of every GPU for one MoE layer and micro-batch ``sample``, from ``spec.kind``'s source.

    Deterministic in (seed, layer, step, sample); all layers of one sample carry the same tokens."""
    return SOURCES[spec.kind](spec, tokens_per_gpu, gpu_node, seed, layer, step, sample)


__all__ = ["SOURCES", "TokenBatch", "make_batch"]
