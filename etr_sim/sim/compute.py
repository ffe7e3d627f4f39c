"""Compute cost: roofline with a GEMM-shape efficiency, so padding and small GEMMs cost what they do."""

from __future__ import annotations

import numpy as np

from etr_sim.config.scenario import ComputeSpec, ModelSpec
from etr_sim.units import tflops_to_flops


def gemm_efficiency(rows: np.ndarray, spec: ComputeSpec) -> np.ndarray:
    """Fraction of peak a GEMM with ``rows`` rows reaches: max_eff * m / (m + m_half)."""
    rows = np.asarray(rows, dtype=np.float64)
    return spec.max_efficiency * rows / (rows + spec.half_efficiency_rows)


def expert_ffn_flops(rows: np.ndarray, model: ModelSpec) -> np.ndarray:
    """Forward FLOPs of expert FFNs on ``rows`` tokens: 2 * rows * hidden * ffn per GEMM."""
    return 2.0 * np.asarray(rows, dtype=np.float64) * model.hidden_size * model.ffn_hidden_size * model.ffn_matmuls


def expert_ffn_time_s(rows: np.ndarray, model: ModelSpec, spec: ComputeSpec) -> np.ndarray:
    """[G] seconds each GPU spends on its local experts, run one after another.

    rows: [G, experts per GPU] GEMM rows per local expert (padded rows count: they are computed).
    """
    rows = np.asarray(rows, dtype=np.float64)
    eff = gemm_efficiency(rows, spec)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(rows > 0, expert_ffn_flops(rows, model) / (tflops_to_flops(spec.peak_tflops) * eff), 0.0)
    return t.sum(axis=1)
