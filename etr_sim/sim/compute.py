"""Compute cost: roofline with a GEMM-shape efficiency, so padding and small GEMMs cost what they do."""

from __future__ import annotations

import numpy as np

from etr_sim.config.scenario import ComputeSpec, ModelSpec
from etr_sim.units import DTYPE_BYTES


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
        t = np.where(rows > 0, expert_ffn_flops(rows, model) / (spec.peak_flops(spec.expert_gemm_dtype) * eff), 0.0)
    return t.sum(axis=1)


def gemm_time_s(flops: float, rows: float, spec: ComputeSpec) -> float:
    """Seconds for a GEMM of ``flops`` whose M dimension is ``rows``."""
    if flops <= 0 or rows <= 0:
        return 0.0
    return float(flops / (spec.peak_flops(spec.gemm_dtype) * gemm_efficiency(rows, spec)))


def attention_params(model: ModelSpec) -> float:
    """Weights of one attention block: Q and O are h x h, K and V are h x (h * kv_heads / heads)."""
    h = model.hidden_size
    return 2.0 * h * h + 2.0 * h * h * model.num_kv_heads / model.num_attention_heads


def attention_forward_s(model: ModelSpec, tokens: int, seq_len: int, tp: int, spec: ComputeSpec) -> float:
    """Forward seconds of one attention block on one TP rank for ``tokens`` tokens (full sequences).

    Projections: 2 * tokens * attention_params / tp FLOPs as GEMMs with ``tokens`` rows. Scores and
    values (causal): 2 * tokens * seq_len * h / tp FLOPs at ``attention_efficiency`` of peak.
    """
    proj = gemm_time_s(2.0 * tokens * attention_params(model) / tp, tokens, spec)
    core_flops = 2.0 * tokens * seq_len * model.hidden_size / tp
    core = core_flops / (spec.peak_flops(spec.gemm_dtype) * spec.attention_efficiency)
    return proj + core


def dense_ffn_forward_s(model: ModelSpec, tokens: int, tp: int, spec: ComputeSpec) -> float:
    """Forward seconds of a dense (non-MoE) FFN on one TP rank."""
    ffn = model.dense_ffn_hidden_size or model.ffn_hidden_size
    return gemm_time_s(2.0 * tokens * model.hidden_size * ffn * model.ffn_matmuls / tp, tokens, spec)


def lm_head_forward_s(model: ModelSpec, tokens: int, tp: int, spec: ComputeSpec) -> float:
    return gemm_time_s(2.0 * tokens * model.hidden_size * model.vocab_size / tp, tokens, spec)


def router_cost_s(tokens: int, rows_out: float, model: ModelSpec, spec: ComputeSpec) -> float:
    """Gate GEMM plus memory-bound scoring, top-k and permutation on one GPU.

    Gate: 2 * tokens * h * E FLOPs. Memory traffic at HBM bandwidth: the [tokens, E] fp32 scores
    written and read twice (softmax, top-k), and each dispatched row read and written once by the
    permutation into send buffers (the same again to un-permute after the combine).
    """
    h, e = model.hidden_size, model.num_experts
    gate = gemm_time_s(2.0 * tokens * h * e, tokens, spec)
    moved = 3.0 * tokens * e * 4.0 + 2.0 * rows_out * h * DTYPE_BYTES[model.activation_dtype]
    return gate + moved / (spec.hbm_GBps * 1e9)
