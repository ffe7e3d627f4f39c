"""The parallel layout: which GPU holds which (tensor, data, pipeline) rank and which EP group.

Megatron numbering: ranks vary fastest in the first dimension of ``order`` (``tp-dp-pp``: the TP
ranks of one model replica are neighbours, so a TP group fills a node). An EP group is ``ep``
consecutive data-parallel ranks with the same (tp, pp) coordinates.

Stage-local index: the GPUs of one pipeline stage are listed so that each EP group is a contiguous
block of ``ep`` entries: local = (tp_i * (dp // ep) + dp_block) * ep + ep_rank. Routing, placement
and traffic matrices of a stage work in this index space; ``stage_gpus(s)[local]`` is the GPU id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    tp: int
    pp: int
    dp: int
    ep: int
    order: str = "tp-dp-pp"

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def gpus_per_stage(self) -> int:
        return self.tp * self.dp

    def gpu(self, tp_i, dp_i, pp_i) -> np.ndarray:
        """Global GPU id of rank coordinates (broadcasts over arrays)."""
        tp_i, dp_i, pp_i = (np.asarray(x, dtype=np.int64) for x in (tp_i, dp_i, pp_i))
        if self.order == "tp-dp-pp":
            return tp_i + self.tp * (dp_i + self.dp * pp_i)
        return tp_i + self.tp * (pp_i + self.pp * dp_i)  # tp-pp-dp

    def stage_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """[tp*dp] (tp_i, dp_i) of each stage-local index (EP groups contiguous)."""
        local = np.arange(self.gpus_per_stage)
        ep_rank = local % self.ep
        dp_block = (local // self.ep) % (self.dp // self.ep)
        tp_i = local // self.dp
        return tp_i, dp_block * self.ep + ep_rank

    def stage_gpus(self, stage: int) -> np.ndarray:
        """[tp*dp] global GPU id of each stage-local index."""
        tp_i, dp_i = self.stage_coords()
        return self.gpu(tp_i, dp_i, stage)

    def tp_groups(self, stage: int) -> list[np.ndarray]:
        """GPUs of each tensor-parallel group of the stage (one per data-parallel rank)."""
        return [self.gpu(np.arange(self.tp), d, stage) for d in range(self.dp)]

    def dp_groups(self, stage: int) -> list[np.ndarray]:
        """GPUs that all-reduce dense gradients: same (tp, pp), every dp rank."""
        return [self.gpu(t, np.arange(self.dp), stage) for t in range(self.tp)]

    def expert_dp_groups(self, stage: int) -> list[np.ndarray]:
        """GPUs holding the same experts (same tp, pp and ep rank): expert-gradient all-reduce."""
        blocks = np.arange(self.dp // self.ep)
        return [self.gpu(t, blocks * self.ep + r, stage) for t in range(self.tp) for r in range(self.ep)]
