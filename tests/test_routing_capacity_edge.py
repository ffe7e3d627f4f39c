"""Capacity rules on edge inputs."""

import numpy as np

from etr_sim.config.scenario import DynamicCapacity
from etr_sim.routing.capacity import dynamic_capacity


def test_dynamic_capacity_with_no_resonant_nomination_keeps_every_nominator():
    # Affinities far below the resonance threshold: no expert is significant -> C = nominators (TCR).
    bucket = np.array([0, 0, 0, 1])
    score = np.full(4, -0.5)
    cap, stats = dynamic_capacity(bucket, score, 2, 4, 64, 2, DynamicCapacity(rule="dynamic"))
    assert cap == 3
    assert stats["capacity_resonant_share"] == 0.0
