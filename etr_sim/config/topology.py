"""Topology files: a node template (GPUs, scale-up domain, PCIe, NICs) and a scale-out fabric.

Bandwidths are per GPU and per direction. ``efficiency`` is the fraction of the signalling rate
that collectives achieve on that link class (protocol headers, flow control); it is a property of
the link class, documented per topology file with its source, never a tuning knob.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from etr_sim.config.base import Strict

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
PosFloat = Annotated[float, Field(gt=0.0)]
NonNeg = Annotated[float, Field(ge=0.0)]


class ScaleUpSwitch(Strict):
    """Every GPU of the node has one port of ``bandwidth_GBps`` into a non-blocking switch (NVSwitch)."""

    kind: Literal["switch"]
    bandwidth_GBps: PosFloat
    latency_us: NonNeg = 0.0
    efficiency: Fraction = 1.0


ScaleUpSpec = Annotated[Union[ScaleUpSwitch], Field(discriminator="kind")]


class PcieSpec(Strict):
    """Link between a GPU and its NIC (through the node's PCIe switch)."""

    bandwidth_GBps: PosFloat
    latency_us: NonNeg = 0.0
    efficiency: Fraction = 1.0


class NicSpec(Strict):
    """One NIC per GPU, port speed in gigabits per second."""

    bandwidth_gbps: PosFloat
    latency_us: NonNeg = 0.0
    efficiency: Fraction = 1.0


class NodeSpec(Strict):
    gpus: Annotated[int, Field(ge=1)]
    scale_up: ScaleUpSpec
    pcie: PcieSpec
    nic: NicSpec


class SingleSwitchFabric(Strict):
    """Every NIC of the cluster plugs into one non-blocking switch."""

    kind: Literal["single_switch"]
    switch_latency_us: NonNeg = 0.0


FabricSpec = Annotated[Union[SingleSwitchFabric], Field(discriminator="kind")]


class TopologySpec(Strict):
    name: str
    description: str = ""
    nodes: Annotated[int, Field(ge=1)]
    node: NodeSpec
    fabric: FabricSpec
