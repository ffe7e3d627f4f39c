"""Topology files: a node template (GPUs, scale-up domain, PCIe, NICs) and a scale-out fabric.

Bandwidths are per direction. ``efficiency`` is the fraction of the signalling rate that collectives
achieve on that link class (protocol headers, flow control); it is a property of the link class,
documented per topology file with its source, never a tuning knob. Latencies are per link
traversal; a flow pays the sum over its path once (cut-through), plus ``message_overhead_us``.

A node may start from a named template (``node.template``, see ``NODE_TEMPLATES``) whose fields
the file then overrides. The full schema is documented in docs/topology.md.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from etr_sim.config.base import Strict

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
PosFloat = Annotated[float, Field(gt=0.0)]
NonNeg = Annotated[float, Field(ge=0.0)]
PosInt = Annotated[int, Field(ge=1)]


class _Link(Strict):
    latency_us: NonNeg = Field(0.0, description="latency of one traversal of this link class (us)")
    efficiency: Fraction = Field(1.0, description="achievable fraction of the signalling rate (protocol overhead)")


class ScaleUpSwitch(_Link):
    """Every GPU has one port of ``bandwidth_GBps`` into a non-blocking switch (NVSwitch, NVL72).

    ``domain_gpus`` > node.gpus makes one switch domain span several nodes (GB200 NVL72: 18 trays
    of 4 GPUs share one NVLink domain); it must be a multiple of node.gpus.
    """

    kind: Literal["switch"]
    bandwidth_GBps: PosFloat = Field(description="per GPU per direction into the switch (GB/s)")
    domain_gpus: PosInt | None = Field(None, description="GPUs in one scale-up domain; default: one node")


class ScaleUpFullMesh(_Link):
    """A dedicated link between every pair of GPUs in the node (Ascend 910B HCCS: 56 GB/s per peer)."""

    kind: Literal["full_mesh"]
    peer_bandwidth_GBps: PosFloat = Field(description="per ordered GPU pair per direction (GB/s)")


class ScaleUpGroups(_Link):
    """Full-mesh groups of ``group_size`` GPUs; traffic between groups crosses the node's PCIe switch
    (Atlas 800 with Ascend 910A: two HCCS groups of four)."""

    kind: Literal["groups"]
    group_size: PosInt
    peer_bandwidth_GBps: PosFloat = Field(description="per ordered GPU pair inside a group (GB/s)")


class ScaleUpNone(Strict):
    """No scale-up links: GPUs of a node talk through PCIe and the NICs (PCIe-only servers)."""

    kind: Literal["none"]


ScaleUpSpec = Annotated[
    Union[ScaleUpSwitch, ScaleUpFullMesh, ScaleUpGroups, ScaleUpNone], Field(discriminator="kind")
]


class PcieSpec(_Link):
    """PCIe link of each GPU (and each NIC) to its PCIe switch. GPU-to-GPU traffic without a scale-up
    link (across Ascend 910A groups, PCIe-only servers sharing a NIC) crosses these links."""

    bandwidth_GBps: PosFloat


class NicSpec(_Link):
    """Scale-out NICs: one per ``gpus_per_nic`` GPUs (1 on DGX/HGX), port speed in gigabits per second."""

    bandwidth_gbps: PosFloat
    gpus_per_nic: PosInt = Field(1, description="GPUs sharing one NIC through a PCIe switch")


class NodeSpec(Strict):
    template: str | None = Field(None, description="start from NODE_TEMPLATES[template]; other fields override it")
    gpus: PosInt
    scale_up: ScaleUpSpec
    pcie: PcieSpec
    nic: NicSpec

    @model_validator(mode="after")
    def _divisible(self) -> "NodeSpec":
        if self.gpus % self.nic.gpus_per_nic:
            raise ValueError(f"nic.gpus_per_nic={self.nic.gpus_per_nic} does not divide gpus={self.gpus}")
        su = self.scale_up
        if isinstance(su, ScaleUpGroups) and self.gpus % su.group_size:
            raise ValueError(f"scale_up.group_size={su.group_size} does not divide gpus={self.gpus}")
        if isinstance(su, ScaleUpSwitch) and su.domain_gpus is not None and su.domain_gpus % self.gpus:
            raise ValueError(f"scale_up.domain_gpus={su.domain_gpus} is not a multiple of gpus={self.gpus}")
        return self


class _Fabric(Strict):
    switch_latency_us: NonNeg = Field(0.0, description="added per switch hop on the scale-out fabric (us)")


class SingleSwitchFabric(_Fabric):
    """Every NIC of the cluster plugs into one non-blocking switch."""

    kind: Literal["single_switch"]


Oversub = Annotated[float, Field(ge=1.0, description="downlink / uplink bandwidth of a switch (1 = non-blocking)")]


class FatTreeFabric(_Fabric):
    """Leaf-spine (two tiers) or leaf-pod-core (three tiers) fat-tree; NICs fill leaves in order.

    ecmp ``split``: every flow is spread evenly over all equal-cost uplinks (packet spraying /
    adaptive routing), so a leaf's uplinks act as one trunk of their total bandwidth. ``hash``: each
    flow is pinned to one spine chosen by a seeded hash of (src, dst) (static ECMP, collisions
    happen); two tiers only.
    """

    kind: Literal["fat_tree"]
    tiers: Literal[2, 3] = 2
    nics_per_leaf: PosInt = Field(32, description="NIC ports on each leaf switch (half of a 64-port switch)")
    leaves_per_pod: PosInt = Field(32, description="leaves under one pod's aggregation layer (three tiers)")
    oversubscription: Oversub = 1.0
    pod_oversubscription: Oversub = 1.0
    ecmp: Literal["split", "hash"] = "split"
    spines: PosInt = Field(32, description="spine switches (uplinks per leaf) in hash mode")
    ecmp_seed: int = 0


class RailOptimizedFabric(_Fabric):
    """NVIDIA SuperPOD style: NIC of local rank r in every node of a scalable unit goes to rail leaf r;
    leaves join through spines. ``routing: rail_aligned`` forwards cross-rail traffic over scale-up to
    the source-node GPU on the destination's rail first (what PXN does); ``shortest`` crosses spines."""

    kind: Literal["rail_optimized"]
    nodes_per_leaf: PosInt = Field(32, description="nodes in one scalable unit (one rail leaf per rank)")
    oversubscription: Oversub = 1.0
    ecmp: Literal["split", "hash"] = "split"
    spines: PosInt = Field(32, description="spine switches in hash mode")
    ecmp_seed: int = 0
    routing: Literal["shortest", "rail_aligned"] = "shortest"


class MultiPlaneFabric(_Fabric):
    """DeepSeek-style multi-plane fat-tree: NIC index p of every node is in plane p, a separate two-tier
    fat-tree; planes are not connected, so cross-plane traffic is forwarded over scale-up first."""

    kind: Literal["multi_plane"]
    nics_per_leaf: PosInt = Field(32, description="NIC ports per leaf inside one plane")
    oversubscription: Oversub = 1.0


FabricSpec = Annotated[
    Union[SingleSwitchFabric, FatTreeFabric, RailOptimizedFabric, MultiPlaneFabric], Field(discriminator="kind")
]


class TopologySpec(Strict):
    name: str
    description: str = ""
    nodes: PosInt = Field(description="servers (trays) in the cluster")
    node: NodeSpec
    fabric: FabricSpec
    message_overhead_us: NonNeg = Field(
        0.0, description="software cost per flow (kernel launch, RDMA post), paid once like latency"
    )

    @property
    def num_gpus(self) -> int:
        return self.nodes * self.node.gpus


# Named node templates a file may start from (``node: {template: dgx-h100}``). Sources in
# calibration.md: NVLink 3/4/5 per-GPU bandwidth, one CX-7 / HDR NIC per GPU, PCIe 4/5 x16.
NODE_TEMPLATES: dict[str, dict] = {
    "dgx-a100": {
        "gpus": 8,
        "scale_up": {"kind": "switch", "bandwidth_GBps": 300, "latency_us": 1.65, "efficiency": 0.77},
        "pcie": {"bandwidth_GBps": 31.5, "latency_us": 0.3, "efficiency": 0.87},
        "nic": {"bandwidth_gbps": 200, "latency_us": 1.0, "efficiency": 0.95},
    },
    "dgx-h100": {
        "gpus": 8,
        "scale_up": {"kind": "switch", "bandwidth_GBps": 450, "latency_us": 1.65, "efficiency": 0.82},
        "pcie": {"bandwidth_GBps": 63, "latency_us": 0.3, "efficiency": 0.87},
        "nic": {"bandwidth_gbps": 400, "latency_us": 1.0, "efficiency": 0.95},
    },
    "hgx-h800": {
        "gpus": 8,
        "scale_up": {"kind": "switch", "bandwidth_GBps": 200, "latency_us": 1.65, "efficiency": 0.80},
        "pcie": {"bandwidth_GBps": 63, "latency_us": 0.3, "efficiency": 0.87},
        "nic": {"bandwidth_gbps": 400, "latency_us": 1.0, "efficiency": 0.95},
    },
    "gb200-tray": {
        "gpus": 4,
        "scale_up": {"kind": "switch", "bandwidth_GBps": 900, "latency_us": 1.65, "efficiency": 0.82,
                     "domain_gpus": 72},
        "pcie": {"bandwidth_GBps": 121, "latency_us": 0.3, "efficiency": 0.87},
        "nic": {"bandwidth_gbps": 400, "latency_us": 1.0, "efficiency": 0.95},
    },
    "atlas-800t-a2": {
        "gpus": 8,
        "scale_up": {"kind": "full_mesh", "peer_bandwidth_GBps": 56, "latency_us": 1.65, "efficiency": 0.977},
        "pcie": {"bandwidth_GBps": 63, "latency_us": 0.3, "efficiency": 0.87},
        "nic": {"bandwidth_gbps": 200, "latency_us": 1.5, "efficiency": 0.95},
    },
    "atlas-800-910a": {
        "gpus": 8,
        "scale_up": {"kind": "groups", "group_size": 4, "peer_bandwidth_GBps": 30, "latency_us": 1.65,
                     "efficiency": 0.9},
        "pcie": {"bandwidth_GBps": 31.5, "latency_us": 0.3, "efficiency": 0.87},
        "nic": {"bandwidth_gbps": 100, "latency_us": 1.5, "efficiency": 0.95},
    },
    "pcie-8gpu": {
        "gpus": 8,
        "scale_up": {"kind": "none"},
        "pcie": {"bandwidth_GBps": 31.5, "latency_us": 0.3, "efficiency": 0.87},
        "nic": {"bandwidth_gbps": 200, "latency_us": 1.0, "efficiency": 0.95, "gpus_per_nic": 2},
    },
}
