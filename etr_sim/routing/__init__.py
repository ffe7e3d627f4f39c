"""Routers (token choice, expert choice, ETR, ...) from token batches to RoutingDecisions.

torch stops here: a RoutingDecision holds numpy arrays only.
"""

from __future__ import annotations

from etr_sim.routing.decision import RoutingDecision
from etr_sim.routing.routers import Etr, ExpertChoice, Router, TokenChoice

# One entry per YAML ``routers[].kind``.
ROUTERS: dict[str, type[Router]] = {cls.kind: cls for cls in (TokenChoice, ExpertChoice, Etr)}


def make_router(spec, model, ep: int, hidden_size: int, seed: int) -> Router:
    return ROUTERS[spec.kind](spec, model, ep, hidden_size, seed)


__all__ = ["ROUTERS", "Router", "RoutingDecision", "make_router"]
