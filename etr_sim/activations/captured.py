"""Router inputs from a capture folder, laid out on the simulated GPUs.

Layout: each GPU holds whole sequences (a data-parallel rank holds its micro-batch), so a GPU is
filled by drawing captured sequences until it has ``tokens_per_gpu`` tokens; the last one is cut
to fit (a prefix of a real sequence). Sequences are drawn from seeded shuffles of all captured
sequences, reshuffled when exhausted: when the scenario needs more tokens than were captured, the
same real sequences appear again (on other GPUs). Nothing is synthesised, so no structure is
invented; the price is exact duplicates, which the routers see as identical tokens.

The draw depends on (seed, step) and not on the layer, so every simulated MoE layer sees the same
tokens, as in a real forward pass; simulated layer i reads captured layer ``layers[i % len]``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from etr_sim.activations.batch import TokenBatch
from etr_sim.activations.store import Capture, load_capture
from etr_sim.config.scenario import CapturedActivations
from etr_sim.seeding import numpy_rng


@lru_cache(maxsize=8)
def _cached(folder: str, mtime_ns: int, layers: tuple[int, ...]) -> Capture:
    return load_capture(folder, list(layers))


def open_cached(folder: Path, layers: tuple[int, ...]) -> Capture:
    """Load the used layers of a capture once per process (keyed by folder, capture.json mtime, layers)."""
    return _cached(str(folder), (folder / "capture.json").stat().st_mtime_ns, tuple(sorted(set(layers))))


def layout_sequences(offsets: np.ndarray, num_gpus: int, tokens_per_gpu: int, rng: np.random.Generator):
    """Token rows of the capture for each GPU, whole sequences first.

    Args: offsets [S + 1] sequence boundaries. Returns (rows [G * T] int64 into the capture,
    position [G * T] int64 position within the simulated sequence slot, seq [G * T] sequence id).
    """
    lengths = np.diff(offsets)  # [S]
    order: list[int] = []
    rows, pos, seq = [], [], []
    for _gpu in range(num_gpus):
        need = tokens_per_gpu
        while need > 0:
            if not order:
                order = list(rng.permutation(len(lengths)))
            s = order.pop()
            take = min(int(lengths[s]), need)
            rows.append(np.arange(offsets[s], offsets[s] + take, dtype=np.int64))
            pos.append(np.arange(take, dtype=np.int64))
            seq.append(np.full(take, s, dtype=np.int64))
            need -= take
    return np.concatenate(rows), np.concatenate(pos), np.concatenate(seq)


def generate(
    spec: CapturedActivations,
    tokens_per_gpu: int,
    gpu_node: np.ndarray,
    seed: int,
    layer: int = 0,
    step: int = 0,
    sample: int = 0,
) -> TokenBatch:
    """Router inputs of simulated MoE layer ``layer`` for ``len(gpu_node)`` GPUs x ``tokens_per_gpu`` tokens.

    ``sample`` numbers micro-batches: each draws its own sequences; every layer of one sample sees them."""
    use = spec.use_layers
    cap = open_cached(spec.index.folder, use)
    num_gpus = len(gpu_node)
    rows, position, seq = layout_sequences(cap.offsets, num_gpus, tokens_per_gpu, numpy_rng(seed, "activations", "captured", step, sample))
    captured_layer = use[layer % len(use)]
    src_gpu = np.repeat(np.arange(num_gpus, dtype=np.int64), tokens_per_gpu)
    return TokenBatch(
        hidden=cap.hidden[captured_layer].float(),  # [U, d]: every captured token of the layer, once
        rows=rows,  # [N] token -> captured row
        src_gpu=src_gpu,
        src_node=np.asarray(gpu_node, dtype=np.int64)[src_gpu],
        position=position,
        layer=layer,
        step=step,
        token_id=cap.token_ids[rows],
        sequence=seq,
    )
