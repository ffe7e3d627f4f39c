"""The scenario schema: what is simulated (model, parallel layout, activations, routers, cluster).

Every modelling choice the papers leave open is a field here with a documented default.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field

from etr_sim.config.base import Strict
from etr_sim.config.step import MemorySpec, OverlapSpec, StepSpec, TrainingSpec

PosInt = Annotated[int, Field(ge=1)]
PosFloat = Annotated[float, Field(gt=0.0)]
NonNeg = Annotated[float, Field(ge=0.0)]
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
WireDtype = Literal["fp32", "bf16", "fp16", "fp8"]


class ModelSpec(Strict):
    """The SIMULATED model: its sizes set bytes on the wire and FLOPs (not the captured model's).

    ``moe_layers`` of the ``num_layers`` transformer layers are MoE layers, spread evenly (every
    num_layers/moe_layers-th layer, the last one included); the others have a dense FFN.
    """

    name: str = "mixtral-like"
    num_layers: PosInt | None = Field(None, description="transformer layers; defaults to moe_layers")
    moe_layers: PosInt = 1
    hidden_size: PosInt = 4096
    ffn_hidden_size: PosInt = Field(14336, description="FFN width of one routed expert")
    dense_ffn_hidden_size: PosInt | None = Field(None, description="FFN width of non-MoE layers; defaults to ffn_hidden_size")
    num_experts: PosInt = 8
    top_k: PosInt = 2
    shared_experts: Annotated[int, Field(ge=0)] = Field(0, description="always-active experts per token (DeepSeek)")
    num_attention_heads: PosInt = 32
    num_kv_heads: PosInt = 8
    vocab_size: PosInt = 32000
    ffn_matmuls: PosInt = Field(3, description="GEMMs per expert FFN: 3 for SwiGLU (Mixtral), 2 for GELU MLPs")
    dispatch_dtype: WireDtype = "bf16"
    combine_dtype: WireDtype = "bf16"
    activation_dtype: WireDtype = "bf16"

    @property
    def layers(self) -> int:
        return self.num_layers or self.moe_layers

    def is_moe_layer(self, layer: int) -> bool:
        """Layer indices 0..layers-1; MoE layers are spread evenly and include the last layer."""
        return (layer + 1) * self.moe_layers // self.layers > layer * self.moe_layers // self.layers


class ParallelismSpec(Strict):
    """The parallel layout (Megatron conventions).

    Ranks are numbered with ``order`` from fastest to slowest varying (``tp-dp-pp``: tensor-parallel
    ranks are neighbours, so a TP group sits inside a node). ``ep`` divides ``dp``: an EP group is ``ep``
    data-parallel ranks with the same (tp, pp) coordinates and holds every expert once. With sequence
    parallelism each TP rank routes and dispatches its 1/tp share of the micro-batch's tokens and
    experts are not tensor-sharded (expert tensor parallelism 1).
    """

    tp: PosInt = 1
    pp: PosInt = 1
    dp: PosInt | None = Field(None, description="defaults to GPUs / (tp * pp)")
    ep: PosInt
    micro_batch_size: PosInt = Field(1, description="sequences per micro-batch")
    seq_len: PosInt = 4096
    global_batch: PosInt | None = Field(None, description="sequences per step; defaults to micro_batch_size * dp")
    order: Literal["tp-dp-pp", "tp-pp-dp"] = "tp-dp-pp"
    sequence_parallel: bool = True

    @property
    def tokens_per_gpu(self) -> int:
        """Tokens each GPU routes per micro-batch."""
        tokens = self.micro_batch_size * self.seq_len
        return tokens // self.tp if self.sequence_parallel else tokens


class SyntheticActivations(Strict):
    """Seeded Gaussian-mixture token features (see etr_sim.activations.synthetic)."""

    kind: Literal["synthetic"]
    hidden_size: PosInt = 512
    num_clusters: PosInt = 32
    cluster_strength: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    popularity_skew: NonNeg = 1.0


ActivationSpec = Annotated[Union[SyntheticActivations], Field(discriminator="kind")]


class RouterBase(Strict):
    name: str | None = Field(None, description="label in reports; defaults to the kind")
    capacity_scope: Literal["gpu", "global"] = Field(
        "gpu",
        description="who competes for an expert's capacity: the tokens of one source GPU "
        "(GShard/Megatron: capacity buffers per rank) or all tokens of the EP group",
    )

    @property
    def label(self) -> str:
        return self.name or self.kind  # type: ignore[attr-defined]


class TokenChoiceRouter(RouterBase):
    """Top-k of a softmax gate, with capacity factor and dropping (GShard/Switch/Mixtral)."""

    kind: Literal["token_choice"]
    top_k: PosInt | None = Field(None, description="defaults to model.top_k")
    gate: Literal["random", "grap"] = "random"
    capacity_factor: PosFloat | None = Field(1.25, description="null = dropless")
    padded: bool = True
    drop_policy: Literal["arrival", "probs"] = "probs"
    normalize_weights: bool = True


class ExpertChoiceRouter(RouterBase):
    """Each expert takes its top-C tokens of the group, C = capacity_factor * N * k / E (Zhou et al.)."""

    kind: Literal["expert_choice"]
    top_k: PosInt | None = Field(None, description="k in C = cf*N*k/E; defaults to model.top_k")
    gate: Literal["random", "grap"] = "random"
    capacity_factor: PosFloat = 1.0


class FactorCapacity(Strict):
    rule: Literal["factor"]
    factor: PosFloat = 1.0


class FixedCapacity(Strict):
    rule: Literal["fixed"]
    tokens: PosInt


CapacityRule = Annotated[Union[FactorCapacity, FixedCapacity], Field(discriminator="rule")]


class EtrRouter(RouterBase):
    """Expert-Token Resonance: GrAP cosine affinity, top-l nominations, experts keep best C nominators."""

    kind: Literal["etr"]
    nominations: PosInt | None = Field(None, description="l, experts nominated per token; defaults to model.top_k")
    capacity: CapacityRule = FactorCapacity(rule="factor", factor=1.0)
    padded: bool = Field(False, description="pad every expert buffer to C (no grouped GEMM)")
    combine_weights: Literal["softmax", "affinity", "uniform"] = "softmax"


RouterSpec = Annotated[Union[TokenChoiceRouter, ExpertChoiceRouter, EtrRouter], Field(discriminator="kind")]


class TopologyRef(Strict):
    """A topology from the library by ``name`` or from a ``file``, resized and overridden."""

    name: str | None = None
    file: str | None = None
    nodes: PosInt | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)


class PlacementSpec(Strict):
    kind: Literal["contiguous"] = "contiguous"


class CollectiveSpec(Strict):
    algorithm: Literal["direct"] = "direct"
    dedup: Literal["gpu", "none"] = Field(
        "gpu", description="a token bound for several experts on one GPU is sent once (gpu) or once per expert"
    )


class ComputeSpec(Strict):
    """Roofline with a GEMM-shape efficiency: eff(m) = max_efficiency * m / (m + half_efficiency_rows).

    Defaults: H100 SXM BF16 dense peak 989 TFLOPS, best measured 80% (calibration.md); a 64-row
    dense GEMM reaches 17% of peak, which gives half_efficiency_rows = 64 * (0.80/0.17 - 1) = 237.
    Memory-bound work (router scores, top-k, token permutation) runs at ``hbm_GBps``.
    """

    peak_tflops: PosFloat = 989.0
    max_efficiency: Fraction = 0.80
    half_efficiency_rows: NonNeg = 237.0
    hbm_GBps: PosFloat = Field(3350.0, description="HBM bandwidth (H100 SXM 3.35 TB/s)")
    hbm_capacity_GB: PosFloat = Field(80.0, description="device memory, for the memory report")
    attention_efficiency: Fraction = Field(0.5, description="fraction of peak reached by the attention score/softmax/value kernels (FlashAttention-2 class)")


class Variant(Strict):
    """A what-if: ``overrides`` deep-merge into the scenario (e.g. another topology or NIC speed)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    overrides: dict[str, Any] = Field(default_factory=dict)


class Scenario(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    seed: int = 0
    model: ModelSpec = ModelSpec()
    parallelism: ParallelismSpec
    activations: ActivationSpec
    routers: Annotated[list[RouterSpec], Field(min_length=1)]
    topology: TopologyRef
    placement: PlacementSpec = PlacementSpec()
    collective: CollectiveSpec = CollectiveSpec()
    compute: ComputeSpec = ComputeSpec()
    step: StepSpec = StepSpec()
    overlap: OverlapSpec = OverlapSpec()
    memory: MemorySpec = MemorySpec()
    training: TrainingSpec = TrainingSpec()
    variants: list[Variant] = Field(default_factory=list, description="compared side by side; rows are labelled variant/router")
