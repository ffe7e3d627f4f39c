"""Routers (token choice, expert choice, ETR, LocMoE, hash, ...) from token batches to RoutingDecisions.

torch stops here: a RoutingDecision holds numpy arrays only.
"""

from __future__ import annotations

from etr_sim.routing.decision import RoutingDecision
from etr_sim.routing.locality import ExpertLocality
from etr_sim.routing.routers import (
    Balanced,
    Etr,
    ExpertChoice,
    Hash,
    LocMoE,
    NodeLimited,
    RandomUniform,
    Router,
    TokenChoice,
)

# One entry per YAML ``routers[].kind``.
ROUTERS: dict[str, type[Router]] = {
    cls.kind: cls for cls in (TokenChoice, ExpertChoice, Etr, LocMoE, Hash, RandomUniform, Balanced, NodeLimited)
}


def make_router(spec, model, ep: int, hidden_size: int, seed: int, locality: ExpertLocality | None = None) -> Router:
    """Build the router for ``spec.kind``.

    Args: spec (a RouterSpec), the simulated model (experts, top_k), ep, the CAPTURED hidden size the
    router sees, the scenario seed, and where experts live (None: contiguous placement, GPU->node map
    read from each batch).
    """
    return ROUTERS[spec.kind](spec, model, ep, hidden_size, seed, locality)


__all__ = ["ROUTERS", "ExpertLocality", "Router", "RoutingDecision", "make_router"]
