"""Routers (token choice, expert choice, ETR, LocMoE, hash, balanced, node-limited, ...) from token batches to RoutingDecisions.

torch stops here: a RoutingDecision holds numpy arrays only, and importing it does not import
torch (the routers load on first use of ``ROUTERS``/``make_router``), so traffic/ and sim/ run
without torch.
"""

from __future__ import annotations

from etr_sim.routing.decision import RoutingDecision
from etr_sim.routing.locality import ExpertLocality

_LAZY = {"ROUTERS", "Router", "make_router"}


def __getattr__(name: str):
    if name in _LAZY:
        from etr_sim.routing import registry, routers

        return getattr(registry, name, None) or getattr(routers, name)
    raise AttributeError(name)


__all__ = ["ROUTERS", "ExpertLocality", "Router", "RoutingDecision", "make_router"]
