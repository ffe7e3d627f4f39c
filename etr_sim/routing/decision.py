"""RoutingDecision: the torch/numpy boundary. Everything downstream runs without torch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RoutingDecision:
    """Which experts each token reaches.

    token, expert, weight: [A] kept (token, expert) assignments and their combine weights.
    dropped_token, dropped_expert: [D] nominated but not kept (the token skips that expert and
        rides the residual path).
    group: [N] capacity group of each token (the source GPU, or 0 for the whole EP group).
    capacity: slots per (group, expert) when a capacity applies, else None (dropless).
    padded: expert buffers are padded to ``capacity`` (compute and bytes charged for empty slots).
    """

    num_tokens: int
    num_experts: int
    token: np.ndarray
    expert: np.ndarray
    weight: np.ndarray
    dropped_token: np.ndarray
    dropped_expert: np.ndarray
    group: np.ndarray
    capacity: int | None
    padded: bool
    stats: dict[str, float] = field(default_factory=dict)
    # stats: quality metrics (etr_sim.routing.metrics) and how the capacity was set; floats only.

    @property
    def num_groups(self) -> int:
        return int(self.group.max()) + 1 if len(self.group) else 0

    @property
    def num_kept(self) -> int:
        return len(self.token)

    @property
    def num_dropped(self) -> int:
        return len(self.dropped_token)

    @property
    def num_nominated(self) -> int:
        return self.num_kept + self.num_dropped

    def expert_load(self) -> np.ndarray:
        """[E] tokens kept by each expert."""
        return np.bincount(self.expert, minlength=self.num_experts)

    def group_expert_load(self) -> np.ndarray:
        """[num_groups, E] tokens kept per (capacity group, expert)."""
        flat = self.group[self.token] * self.num_experts + self.expert
        return np.bincount(flat, minlength=self.num_groups * self.num_experts).reshape(self.num_groups, self.num_experts)

    def expert_padding(self) -> np.ndarray:
        """[num_groups, E] empty slots per (capacity group, expert) buffer; zeros when not padded."""
        load = self.group_expert_load()
        if not self.padded or self.capacity is None:
            return np.zeros_like(load)
        return (self.capacity - load).clip(min=0)

    def padding_slots(self) -> int:
        """Empty slots computed (and, for per-GPU buffers, sent) because buffers are padded."""
        if not self.padded or self.capacity is None:
            return 0
        return int((self.capacity - self.group_expert_load()).clip(min=0).sum())
