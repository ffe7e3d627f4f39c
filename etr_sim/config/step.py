"""Schema of what a run simulates: scope (MoE layers or a whole training step), overlap, memory, training.

Each field is a modelling assumption with its default explained; nothing here is hidden in code.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from etr_sim.config.base import Strict

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNeg = Annotated[float, Field(ge=0.0)]


class StepSpec(Strict):
    """What one simulated step contains.

    scope: ``moe_layers`` times only the MoE blocks' forward pass (dispatch, experts, combine) of one
        micro-batch; ``training_step`` times a full step: every layer forward and backward for every
        micro-batch under the pipeline schedule, TP and DP collectives included.
    sampled_layers: routing is computed for this many distinct MoE layers (fresh activations each)
        and reused cyclically for the others, so routing cost does not grow with depth.
    sampled_microbatches: likewise for micro-batches (micro-batch m uses sample m % this).
    """

    scope: Literal["moe_layers", "training_step"] = "moe_layers"
    sampled_layers: PosInt = 4
    sampled_microbatches: PosInt = 1
    pipeline_schedule: Literal["1f1b", "gpipe"] = "1f1b"
    include_router_cost: bool = Field(True, description="charge gate scores, top-k and token permutation at HBM speed")


class OverlapSpec(Strict):
    """Compute/communication overlap, as mechanisms rather than hidden fractions.

    moe_chunks: split each MoE block's tokens into K chunks whose dispatch, expert GEMMs and combine
        pipeline on separate communication and compute streams (LocMoE, Tutel); 1 = no overlap. Smaller
        chunks also run smaller, less efficient GEMMs, which the compute model charges.
    tp_overlap: TP all-gather/reduce-scatter run concurrently with the GEMM they feed (fused
        matmul+collective kernels, as ETR uses); False = they run before/after it.
    dp_grad_reduce: ``after_backward`` starts each stage's DP gradient reduction after its last
        backward; ``with_last_microbatch`` starts it when the last backward starts (bucketed overlap).
    """

    moe_chunks: PosInt = 1
    tp_overlap: bool = False
    dp_grad_reduce: Literal["after_backward", "with_last_microbatch"] = "after_backward"


class MemorySpec(Strict):
    """Per-GPU memory estimate (mixed precision with Adam, Megatron-style).

    Bytes per parameter: ``param_bytes`` (bf16 weights) + ``grad_bytes`` (fp32 main grads) +
    ``optimizer_bytes`` (fp32 master, Adam m and v), the last sharded over the data-parallel replicas
    when ``distributed_optimizer``. Activations per layer and micro-batch follow Korthikanti et al.
    (2022) with sequence parallelism: s*b*h*(34 + 5*a*s/h)/t bytes (the 5*a*s/h term only without
    FlashAttention-style kernels), times the micro-batches in flight.
    """

    param_bytes: NonNeg = 2.0
    grad_bytes: NonNeg = 4.0
    optimizer_bytes: NonNeg = 12.0
    distributed_optimizer: bool = True
    activation_recompute: Literal["none", "full"] = "none"
    flash_attention: bool = Field(
        True, description="attention kernels keep no s x s score matrix (drops the 5*a*s/h term of the formula)"
    )


class TrainingStage(Strict):
    """From training step ``step`` on, the activations are the scenario's with ``activations`` merged in."""

    step: NonNegInt
    activations: dict[str, Any] = Field(default_factory=dict)


class TrainingSpec(Strict):
    """Integrate over training: step time is piecewise constant between stages (stage i covers steps
    [step_i, step_{i+1}) and the last one up to ``steps``). No stages = one stage from step 0."""

    steps: PosInt = 1
    stages: list[TrainingStage] = Field(default_factory=list)
