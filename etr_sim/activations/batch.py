"""TokenBatch: the router inputs of one MoE layer for every token of the simulated step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TokenBatch:
    """Router inputs in the CAPTURED hidden size (bytes on the wire use the simulated model's size).

    hidden:   [N, d] float tensor, the router input of each token.
    src_gpu:  [N] int64, GPU that holds the token before dispatch.
    src_node: [N] int64, server of that GPU.
    position: [N] int64, position of the token in its sequence.
    token_id: [N] int64 vocabulary ids, or None when unknown (synthetic data).
    sequence: [N] int64 id of the source sequence (captured data), or None (synthetic data).
    """

    hidden: torch.Tensor
    src_gpu: np.ndarray
    src_node: np.ndarray
    position: np.ndarray
    layer: int = 0
    step: int = 0
    token_id: np.ndarray | None = None
    sequence: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.hidden.shape[0]
        assert self.hidden.dim() == 2, "hidden must be [N, d]"
        for name in ("src_gpu", "src_node", "position"):
            assert len(getattr(self, name)) == n, f"{name} must have one entry per token"

    @property
    def num_tokens(self) -> int:
        return int(self.hidden.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.hidden.shape[1])
