"""Load the simulator (``etr_sim.pipeline``: torch, pandas, SimPy, networkx, ...) fast: import this module.

Those imports create about a million objects, and with the cyclic garbage collector on, Python runs
full collections over them while importing: ~0.4 s of ~1.6 s measured on this project's CI machine
(``python -X importtime``). So the import runs with the collector paused, and the imported objects
are then frozen (``gc.freeze``): later collections skip them, and processes forked from this one
(sweep workers forked by the pool's fork server, which preloads this module) do not touch, and so
do not copy, their pages. Runs once per process, like any import.
"""

from __future__ import annotations

import gc


def _load() -> None:
    enabled = gc.isenabled()
    gc.disable()
    try:
        import etr_sim.pipeline  # noqa: F401
    finally:
        if enabled:
            gc.enable()
    gc.freeze()


_load()
