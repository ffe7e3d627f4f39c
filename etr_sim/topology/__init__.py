"""Topology spec -> graph of GPUs, switches and NICs; path selection. No torch, no simpy."""

from etr_sim.topology.graph import Topology, build_topology

__all__ = ["Topology", "build_topology"]
