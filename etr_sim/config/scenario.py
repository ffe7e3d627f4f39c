"""The scenario schema: what is simulated (model, parallel layout, activations, routers, cluster).

Every modelling choice the papers leave open is a field here with a documented default.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from etr_sim.config.base import Strict
from etr_sim.config.capture_meta import (
    CaptureIndex,
    is_stage_series,
    open_capture,
    read_capture_index,
    read_stage_steps,
    resolve_capture_path,
    strength_for_stage,
)
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


# -- activations (owned by the activations package; see docs/activations.md) -------------------


class SyntheticActivations(Strict):
    """Seeded Gaussian-mixture token features (see etr_sim.activations.synthetic)."""

    kind: Literal["synthetic"]
    hidden_size: PosInt = Field(512, description="router-input width d of the generated features")
    num_clusters: PosInt = Field(32, description="mixture components (token 'topics')")
    cluster_strength: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        None,
        description="share s of a token's variance that is its cluster centre (0 = isotropic noise, "
        "1 = identical tokens per cluster); null = from 'stage', or 0.5 without a stage",
    )
    stage: Annotated[int, Field(ge=0)] | None = Field(
        None,
        description="training step whose clustering to imitate: s comes from the calibration table "
        "fitted to the in-project training series (data/activations/stage-calibration.json, linear in "
        "log(1 + step), held after the last step); cannot be combined with cluster_strength",
    )
    popularity_skew: NonNeg = Field(1.0, description="Zipf exponent of cluster popularity")

    @model_validator(mode="after")
    def _stage_or_strength(self):
        if self.stage is not None and self.cluster_strength is not None:
            raise ValueError("set either 'stage' or 'cluster_strength', not both (set the other to null)")
        if self.stage is not None:
            strength_for_stage(self.stage)  # the calibration table must be readable now, not mid-run
        return self

    @property
    def strength(self) -> float:
        """The cluster strength s the generator uses (explicit, from the stage table, or 0.5)."""
        if self.cluster_strength is not None:
            return self.cluster_strength
        if self.stage is not None:
            return strength_for_stage(self.stage)
        return 0.5


class CapturedActivations(Strict):
    """Router inputs recorded from a real model by ``etr-sim capture`` (see etr_sim.activations.captured).

    Routing happens in the captured hidden size; bytes on the wire use model.hidden_size. When the
    scenario needs more tokens than were captured, whole captured sequences are drawn again
    (seeded shuffles, never synthesised tokens); the last sequence on a GPU is cut to fit.
    """

    kind: Literal["captured"]
    path: str = Field(
        description="capture folder (or stage-series folder); relative paths are looked up in the "
        "working directory, then in the etr-sim repository (shipped data under data/)"
    )
    stage: Annotated[int, Field(ge=0)] | None = Field(
        None, description="training step to use when path is a stage series (stages.json)"
    )
    layers: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | None = Field(
        None,
        description="captured layers to use; simulated MoE layer i uses layers[i % len(layers)] "
        "(default: every captured layer in order)",
    )
    _index: Any = PrivateAttr(None)

    @field_validator("path")
    @classmethod
    def _path_readable(cls, v: str) -> str:
        folder = resolve_capture_path(v)
        if not folder.exists():
            raise ValueError("no such capture folder (relative paths: working directory, then the etr-sim repo)")
        if not folder.is_dir():
            raise ValueError("not a folder (give the capture folder, not a file inside it)")
        if is_stage_series(folder):
            read_stage_steps(folder)
        else:
            read_capture_index(folder)
        return v

    @field_validator("stage")
    @classmethod
    def _stage_known(cls, v: int | None, info: ValidationInfo) -> int | None:
        if "path" in info.data:
            open_capture(info.data["path"], v)
        return v

    @field_validator("layers")
    @classmethod
    def _layers_captured(cls, v: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if v is not None and "path" in info.data and "stage" in info.data:
            have = open_capture(info.data["path"], info.data["stage"]).layers
            missing = [x for x in v if x not in have]
            if missing:
                raise ValueError(f"layer(s) {missing} were not captured; the capture has layers {list(have)}")
        return v

    def model_post_init(self, context: Any) -> None:
        self._index = open_capture(self.path, self.stage)

    @property
    def index(self) -> CaptureIndex:
        return self._index

    @property
    def hidden_size(self) -> int:
        """Router-input width of the capture (GrAP divisibility is checked against it)."""
        return self._index.hidden_size

    @property
    def use_layers(self) -> tuple[int, ...]:
        return tuple(self.layers) if self.layers is not None else self._index.layers


ActivationSpec = Annotated[Union[SyntheticActivations, CapturedActivations], Field(discriminator="kind")]

# -- end of activations section ------------------------------------------------------------------


# ---- Routers (owned by the routing package; see docs/routing.md) ---------------------------------


class GateFile(Strict):
    """Router weights captured from a real model: a ``.safetensors`` or ``.pt`` file holding an
    [E, d] (torch ``nn.Linear`` layout) or [d, E] tensor per MoE layer. When d == E the [E, d]
    layout is assumed."""

    file: str = Field(
        description="path to the .safetensors / .pt file, or a capture folder (uses its router.safetensors); "
        "relative to the working directory"
    )
    tensor: str = Field(
        "router_weight.layer{layer}",
        description="tensor name inside the file; '{layer}' is replaced by the MoE layer index",
    )


Gate = Union[Literal["random", "grap"], GateFile]
GATE_DESCRIPTION = (
    "router weight: 'random' (seeded N(0, 1/d) init, one per layer), 'grap' (LocMoE/ETR fixed "
    "grouped-average-pooling gates) or {file, tensor} (a captured model's router)"
)


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
    gate: Gate = Field("random", description=GATE_DESCRIPTION)
    capacity_factor: PosFloat | None = Field(1.25, description="C = ceil(cf * tokens_per_group * k / E); null = dropless")
    padded: bool = Field(True, description="expert buffers padded to C (fixed-shape all-to-all, no grouped GEMM)")
    drop_policy: Literal["arrival", "probs"] = Field(
        "probs",
        description="over capacity, keep by arrival (GShard/Switch: all 1st choices, then 2nd, in sequence "
        "order) or by highest gate probability",
    )
    normalize_weights: bool = Field(True, description="renormalise the top-k probabilities to sum to 1")


class ExpertChoiceRouter(RouterBase):
    """Each expert takes its top-C tokens of the group, C = capacity_factor * N * k / E (Zhou et al.)."""

    kind: Literal["expert_choice"]
    top_k: PosInt | None = Field(None, description="k in C = cf*N*k/E; defaults to model.top_k")
    gate: Gate = Field("random", description=GATE_DESCRIPTION)
    capacity_factor: PosFloat = 1.0


class FactorCapacity(Strict):
    """Conventional C = ceil(factor * tokens_per_group * l / E); l = nominations per token (its maximum
    when a nomination threshold makes l vary, so chunking a batch does not change C)."""

    rule: Literal["factor"]
    factor: PosFloat = 1.0


class FixedCapacity(Strict):
    """C = ``tokens`` per (capacity group, expert), whatever the batch."""

    rule: Literal["fixed"]
    tokens: PosInt


class LocMoEFirstBatchCapacity(Strict):
    """LocMoE Theorem 1 lower bound C = ceil(scale / (E * p_delta)), p_delta = 1 - I_{delta^2}(1/2, (d-1)/2),
    computed once on the FIRST batch each MoE layer sees and then fixed for that layer."""

    rule: Literal["locmoe_first_batch"]
    delta: Annotated[float, Field(gt=0.0, lt=1.0)] | None = Field(
        None,
        description="angular deviation delta (cosine). null = measured on the first batch as the "
        "delta_quantile of every token's best GrAP affinity (LocMoE measured ~0.03 on PanGu-Sigma)",
    )
    delta_quantile: Fraction = Field(0.5, description="quantile of the best affinities used when delta is measured")
    scale: PosFloat = Field(1.0, description="safety multiplier on the bound (1 = the bound itself)")
    floor_factor: PosFloat | None = Field(
        None,
        description="optional lower clip at the conventional capacity ceil(floor_factor * s * l / E). LocMoE "
        "does not say whether its bound replaces or floors the usual capacity; taken alone the bound is a "
        "few tokens per expert and drops most tokens of a large group. null = the bound alone",
    )


class DynamicCapacity(Strict):
    """Recomputed on every call from affinity statistics (ETR Corollary 6; derivation in docs/routing.md).

    Per (capacity group, expert): nominators whose affinity beats the isotropic-null threshold are
    "resonant" (r of m). Without significant resonance every nominator is kept (C_gi = m: token
    choice); with it C_gi = r + 2 * s * q, q = mean null probability that an isotropic token out-scores
    a resonant one. C = clip(ceil(margin * max C_gi), min_tokens, s)."""

    rule: Literal["dynamic"]
    resonance_alpha: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        0.01, description="false-resonance rate: the threshold is the (1 - alpha) quantile of an isotropic token's best affinity"
    )
    detection_sigmas: NonNeg = Field(
        3.0, description="resonance is significant when r exceeds its null mean alpha*m by this many binomial sigmas"
    )
    margin: PosFloat = Field(1.0, description="multiplier on the computed capacity")
    min_tokens: PosInt = Field(1, description="lower clip of C")


CapacityRule = Annotated[
    Union[FactorCapacity, FixedCapacity, LocMoEFirstBatchCapacity, DynamicCapacity], Field(discriminator="rule")
]


class EtrRouter(RouterBase):
    """Expert-Token Resonance: GrAP cosine affinity, top-l nominations, experts keep best C nominators."""

    kind: Literal["etr"]
    nominations: PosInt | None = Field(
        None,
        description="l, experts nominated per token (defaults to model.top_k); with nomination_threshold "
        "set, the maximum l",
    )
    nomination_threshold: Fraction | None = Field(
        None,
        description="per-token l: the fewest experts whose share of the token's positive affinity mass "
        "reaches this threshold (the paper's 'threshold on the sum of affinity scores'); null = fixed l",
    )
    capacity: CapacityRule = FactorCapacity(rule="factor", factor=1.0)
    padded: bool = Field(False, description="pad every expert buffer to C (no grouped GEMM)")
    combine_weights: Literal["softmax", "affinity", "uniform"] = Field(
        "softmax",
        description="not specified by the paper: softmax of the kept affinities, the raw cosine, or 1/kept",
    )
    locality_bias: NonNeg = Field(
        0.0,
        description="added to the affinity z-score (cosine * sqrt(d)) of experts on the token's own node "
        "when ranking nominations; 0 = none",
    )


class LocMoERouter(RouterBase):
    """LocMoE: GrAP top-1 with a node-locality preference, capacity fixed from the first-batch bound."""

    kind: Literal["locmoe"]
    locality_mu: NonNeg = Field(
        1.0,
        description="routing-time form of the KL locality loss: local experts get +mu on their GrAP logit "
        "(nats). The paper does not publish mu; 0 = plain GrAP top-1",
    )
    capacity: CapacityRule = LocMoEFirstBatchCapacity(rule="locmoe_first_batch")
    padded: bool = Field(True, description="LocMoE buffers are padded to C")


class HashRouter(RouterBase):
    """Hash layers (Roller et al. 2021): experts fixed by a seeded hash of the token id or position."""

    kind: Literal["hash"]
    top_k: PosInt | None = Field(None, description="defaults to model.top_k")
    key: Literal["token_id", "position"] = Field(
        "token_id", description="what is hashed; token_id falls back to position when ids are unknown"
    )


class RandomUniformRouter(RouterBase):
    """k distinct experts uniformly at random per token (seeded per token, so chunking does not matter)."""

    kind: Literal["random_uniform"]
    top_k: PosInt | None = Field(None, description="defaults to model.top_k")


class BalancedRouter(RouterBase):
    """The perfectly balanced traffic other simulators assume: round robin over experts inside each group."""

    kind: Literal["balanced"]
    top_k: PosInt | None = Field(None, description="defaults to model.top_k")


class NodeLimitedRouter(RouterBase):
    """DeepSeek-V3 style: each token picks at most ``max_nodes`` nodes by their best expert score, then top-k inside."""

    kind: Literal["node_limited"]
    top_k: PosInt | None = Field(None, description="defaults to model.top_k")
    max_nodes: PosInt = Field(4, description="M, nodes a token may reach (DeepSeek-V3: 4)")
    gate: Gate = Field("random", description=GATE_DESCRIPTION)
    node_score: Literal["max", "top2_sum"] = Field(
        "max", description="score of a node: its best expert score, or the sum of its two best (DeepSeek-V3)"
    )
    capacity_factor: PosFloat | None = Field(None, description="null = dropless (DeepSeek-V3)")
    padded: bool = False
    normalize_weights: bool = True


RouterSpec = Annotated[
    Union[
        TokenChoiceRouter,
        ExpertChoiceRouter,
        EtrRouter,
        LocMoERouter,
        HashRouter,
        RandomUniformRouter,
        BalancedRouter,
        NodeLimitedRouter,
    ],
    Field(discriminator="kind"),
]

# ---- end of the router section ---------------------------------------------------------------------


class TopologyRef(Strict):
    """A topology from the library by ``name`` or from a ``file``, resized and overridden."""

    name: str | None = None
    file: str | None = None
    nodes: PosInt | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)


class PlacementSpec(Strict):
    """Where experts live inside an EP group (same on every group).

    contiguous: E/ep consecutive experts per rank; round_robin: expert e on rank e mod ep; explicit:
    ``expert_ranks[e]`` per expert; locality_aware: experts go to the node whose tokens route to them
    most (from a calibration routing pass on the first sampled batch). ``replicate_hot`` adds one
    replica of each of the R most loaded experts on another rank (more weight memory, less
    imbalance); each source uses one replica, chosen by ``replica_choice``.
    """

    kind: Literal["contiguous", "round_robin", "explicit", "locality_aware"] = "contiguous"
    expert_ranks: list[Annotated[int, Field(ge=0)]] | None = None
    replicate_hot: Annotated[int, Field(ge=0)] = 0
    replica_choice: Literal["local_first", "spread"] = "local_first"


class CollectiveSpec(Strict):
    """All-to-all algorithm and flow-network solver settings (docs/network.md)."""

    algorithm: Literal["direct", "pairwise", "pxn", "hierarchical", "deepep"] = Field(
        "direct",
        description="direct (NCCL grouped send/recv), pairwise (G-1 rounds), pxn (NVLink to the destination "
        "rail first), hierarchical (Tutel 2DH), deepep (one network copy per destination node, NVLink fan-out)",
    )
    dedup: Literal["gpu", "none"] = Field(
        "gpu", description="a token bound for several experts on one GPU is sent once (gpu) or once per expert"
    )
    coalesce_rel: Annotated[float, Field(ge=0.0, le=0.5)] = Field(
        0.01,
        description="flow-network event coalescing: rates are held for max(next finish, coalesce_rel x the projected "
        "time of the youngest collective); 0 = exact max-min at every finish (slow beyond ~100k flows); the error "
        "is conservative and about +coalesce_rel (docs/network.md)",
    )
    rate_tol_rel: Annotated[float, Field(ge=0.0, le=0.1)] = Field(
        0.0, description="progressive filling freezes links within (1 + tol) of the lowest share together; 0 = exact"
    )
    tp_algorithm: Literal["direct", "ring"] = Field(
        "direct",
        description="TP all-gather/reduce-scatter: direct (every rank to every peer at once: NCCL/HCCL mesh on a "
        "switch or full mesh) or a pipelined ring",
    )
    dp_algorithm: Literal["ring_allreduce", "tree_allreduce"] = Field(
        "ring_allreduce", description="data-parallel gradient all-reduce (pipelined ring, or binary tree)"
    )


class ComputeSpec(Strict):
    """Roofline with a GEMM-shape efficiency: eff(m) = max_efficiency * m / (m + half_efficiency_rows).

    Defaults: H100 SXM BF16 dense peak 989 TFLOPS, best measured 80% (calibration.md); a 64-row
    dense GEMM reaches 17% of peak, which gives half_efficiency_rows = 64 * (0.80/0.17 - 1) = 237.
    Memory-bound work (router scores, top-k, token permutation) runs at ``hbm_GBps``.
    """

    peak_tflops: PosFloat = Field(989.0, description="dense peak in BF16/FP16 (TFLOP/s)")
    peak_tflops_by_dtype: dict[Literal["fp8", "fp32"], PosFloat] = Field(
        default_factory=dict, description="peaks of other GEMM dtypes, e.g. {fp8: 1979} on H100"
    )
    gemm_dtype: Literal["bf16", "fp16", "fp8"] = Field("bf16", description="dtype of attention and dense GEMMs")
    expert_gemm_dtype: Literal["bf16", "fp16", "fp8"] = Field(
        "bf16", description="dtype of expert GEMMs (DeepSeek-V3 runs them in FP8)"
    )
    max_efficiency: Fraction = 0.80
    half_efficiency_rows: NonNeg = 237.0
    hbm_GBps: PosFloat = Field(3350.0, description="HBM bandwidth (H100 SXM 3.35 TB/s)")
    hbm_capacity_GB: PosFloat = Field(80.0, description="device memory, for the memory report")
    attention_efficiency: Fraction = Field(0.5, description="fraction of peak reached by the attention score/softmax/value kernels (FlashAttention-2 class)")

    def peak_flops(self, dtype: str) -> float:
        """FLOP/s peak for GEMMs in ``dtype`` (BF16/FP16 use peak_tflops)."""
        tflops = self.peak_tflops if dtype in ("bf16", "fp16") else self.peak_tflops_by_dtype[dtype]
        return tflops * 1e12


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
