"""Router registry keyed by the YAML ``routers[].kind``."""

from __future__ import annotations

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

ROUTERS: dict[str, type[Router]] = {
    cls.kind: cls for cls in (TokenChoice, ExpertChoice, Etr, LocMoE, Hash, RandomUniform, Balanced, NodeLimited)
}


def make_router(spec, model, ep: int, hidden_size: int, seed: int, locality: ExpertLocality | None = None) -> Router:
    """Build the router for ``spec.kind``.

    Args: spec (a RouterSpec), the simulated model (experts, top_k), ep, the CAPTURED hidden size the
    router sees, the scenario seed, and where experts live for locality-aware routers and the
    locality metric (None: contiguous placement, GPU->node map read from each batch; it can also be
    set later through ``router.locality``).
    """
    return ROUTERS[spec.kind](spec, model, ep, hidden_size, seed, locality)
