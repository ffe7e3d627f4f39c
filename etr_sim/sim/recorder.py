"""Observe during the run, analyse after it: the recorder only appends named tuples."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class PhaseRecord(NamedTuple):
    """One timed span. gpu = -1 for a collective phase spanning all GPUs."""

    router: str
    layer: int
    phase: str  # "dispatch" | "expert_compute" | "combine"
    gpu: int
    start_s: float
    end_s: float


class FlowStageRecord(NamedTuple):
    """The flows of one collective stage, as arrays [F]."""

    router: str
    layer: int
    phase: str
    stage: int
    start_s: float
    src: np.ndarray
    dst: np.ndarray
    size_bytes: np.ndarray
    delivered_s: np.ndarray


class Recorder:
    def __init__(self) -> None:
        self.phases: list[PhaseRecord] = []
        self.flows: list[FlowStageRecord] = []
