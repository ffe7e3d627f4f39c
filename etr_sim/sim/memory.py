"""Per-GPU memory estimate: weights, gradients, optimizer state, activations and MoE buffers.

An estimate from formulas (documented in MemorySpec), not a simulation: it says whether a layout
fits and how much of it the capacity buffers of each router take.
"""

from __future__ import annotations

from dataclasses import dataclass

from etr_sim.config.scenario import ModelSpec, ParallelismSpec
from etr_sim.config.step import MemorySpec
from etr_sim.sim.compute import attention_params
from etr_sim.units import DTYPE_BYTES


@dataclass(frozen=True)
class StageParams:
    """Parameters one GPU of a pipeline stage holds. dense: TP-sharded, replicated over DP; expert: per EP rank."""

    dense: float
    expert: float


def stage_params(model: ModelSpec, par: ParallelismSpec, layers: list[int], first: bool, last: bool,
                 experts_per_gpu: float | None = None) -> StageParams:
    """Parameters per GPU; ``experts_per_gpu`` counts replicas of hot experts (default E/ep)."""
    h, tp = model.hidden_size, par.tp
    local_experts = experts_per_gpu if experts_per_gpu is not None else model.num_experts / par.ep
    dense_ffn = (model.dense_ffn_hidden_size or model.ffn_hidden_size) * h * model.ffn_matmuls
    expert_ffn = model.ffn_hidden_size * h * model.ffn_matmuls
    dense = expert = 0.0
    for layer in layers:
        dense += attention_params(model) / tp
        if model.is_moe_layer(layer):
            dense += h * model.num_experts + model.shared_experts * expert_ffn / tp
            expert += expert_ffn * local_experts
        else:
            dense += dense_ffn / tp
    if first:
        dense += model.vocab_size * h / tp
    if last:
        dense += model.vocab_size * h / tp
    return StageParams(dense, expert)


def activation_bytes_per_layer(model: ModelSpec, par: ParallelismSpec, moe_rows_ratio: float, moe: bool,
                               flash_attention: bool = True) -> float:
    """Korthikanti et al. (2022) with sequence parallelism: s*b*h*(34 + 5*a*s/h)/t bytes per layer.

    The MLP's share of the 34 (19 s*b*h) scales with the rows an expert GPU holds relative to its
    own tokens (``moe_rows_ratio``: top-k fan-out, padding, imbalance).
    """
    s, b, h, a, t = par.seq_len, par.micro_batch_size, model.hidden_size, model.num_attention_heads, par.tp
    attn = s * b * h * (15.0 + (0.0 if flash_attention else 5.0 * a * s / h)) / t
    mlp = 19.0 * s * b * h / t
    return attn + (mlp * moe_rows_ratio if moe else mlp)


def gpu_memory_bytes(
    model: ModelSpec,
    par: ParallelismSpec,
    mem: MemorySpec,
    params: StageParams,
    dp: int,
    layers: list[int],
    in_flight: int,
    moe_rows_ratio: float,
    buffer_rows: float,
) -> dict[str, float]:
    """Memory of one GPU of a stage, by component (bytes).

    buffer_rows: rows of the largest dispatch receive buffer on the GPU (padded capacity or actual);
    dispatch and combine buffers are both held during the MoE block.
    """
    total_params = params.dense + params.expert
    opt_shard = dp if mem.distributed_optimizer else 1
    expert_shard = max(dp // par.ep, 1) if mem.distributed_optimizer else 1
    act_bytes = DTYPE_BYTES[model.activation_dtype] / 2.0  # the formula counts 16-bit activations
    if mem.activation_recompute == "full":
        per_mb = len(layers) * 2.0 * par.seq_len * par.micro_batch_size * model.hidden_size / par.tp
        acts = per_mb * in_flight + activation_bytes_per_layer(model, par, moe_rows_ratio, True, mem.flash_attention)
    else:
        per_mb = sum(activation_bytes_per_layer(model, par, moe_rows_ratio, model.is_moe_layer(i), mem.flash_attention)
                     for i in layers)
        acts = per_mb * in_flight
    return {
        "weights_bytes": total_params * mem.param_bytes,
        "grads_bytes": total_params * mem.grad_bytes,
        "optimizer_bytes": mem.optimizer_bytes * (params.dense / opt_shard + params.expert / expert_shard),
        "activations_bytes": acts * act_bytes,
        "moe_buffers_bytes": 2.0 * buffer_rows * model.hidden_size * DTYPE_BYTES[model.activation_dtype],
    }
