"""TokenBatch: the router inputs of one MoE layer for every token of the simulated step."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch


@dataclass(frozen=True)
class TokenBatch:
    """Router inputs in the CAPTURED hidden size (bytes on the wire use the simulated model's size).

    hidden:   [N, d] float tensor, the router input of each token; or, when ``rows`` is given,
              [U, d] distinct router inputs that the tokens share.
    src_gpu:  [N] int64, GPU that holds the token before dispatch.
    src_node: [N] int64, server of that GPU.
    position: [N] int64, position of the token in its sequence.
    token_id: [N] int64 vocabulary ids, or None when unknown (synthetic data).
    sequence: [N] int64 id of the source sequence (captured data), or None (synthetic data).
    rows:     [N] int64 row of ``hidden`` holding each token's input, or None (one row per token).
              Captured data repeats a few thousand real tokens across the simulated GPUs; routers
              score each distinct input once and ``expand`` row-wise results to the tokens,
              instead of copying every input N / U times.
    """

    hidden: torch.Tensor
    src_gpu: np.ndarray
    src_node: np.ndarray
    position: np.ndarray
    layer: int = 0
    step: int = 0
    token_id: np.ndarray | None = None
    sequence: np.ndarray | None = None
    rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.src_gpu)
        assert self.hidden.dim() == 2, "hidden must be [N, d] (or [U, d] with rows)"
        if self.rows is None:
            assert self.hidden.shape[0] == n, "hidden must have one row per token when rows is None"
        for name in ("src_node", "position", "rows"):
            assert getattr(self, name) is None or len(getattr(self, name)) == n, f"{name} must have one entry per token"

    @property
    def num_tokens(self) -> int:
        return len(self.src_gpu)

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """A result with one row per distinct input (``hidden``), [U, ...] -> one row per token [N, ...]."""
        return x if self.rows is None else x.index_select(0, torch.from_numpy(self.rows))

    def inputs(self) -> torch.Tensor:
        """[N, d] each token's router input, materialised (for inspection; routers work on ``hidden``)."""
        return self.expand(self.hidden)

    def without_inputs(self) -> TokenBatch:
        """This batch with its router inputs dropped (hidden [N, 0]): what is kept after routing."""
        return replace(self, hidden=torch.empty(self.num_tokens, 0), rows=None)

    @property
    def hidden_size(self) -> int:
        return int(self.hidden.shape[1])
