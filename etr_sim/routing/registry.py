"""Router registry keyed by the YAML ``routers[].kind``."""

from __future__ import annotations

from etr_sim.routing.routers import Etr, ExpertChoice, Router, TokenChoice

ROUTERS: dict[str, type[Router]] = {cls.kind: cls for cls in (TokenChoice, ExpertChoice, Etr)}


def make_router(spec, model, ep: int, hidden_size: int, seed: int) -> Router:
    return ROUTERS[spec.kind](spec, model, ep, hidden_size, seed)
