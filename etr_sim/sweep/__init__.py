"""Sweeps: grids of scenarios (axes over YAML paths), a content-hash result cache, and execution on
this process, a local process pool (default) or a Dask distributed cluster.

sweep file -> ``grid.load_sweep`` -> Sweep (points, each a validated LoadedScenario)
           -> ``run.run_sweep`` (cache + executor) -> SweepOutcome (tidy table) -> files, plots.
"""

from importlib import import_module

# name -> module; imported on first use, so ``etr_sim.sweep.execute`` can start worker processes
# before this process pays for pandas and the rest (see cli._cmd_sweep)
_WHERE = {
    "ResultCache": "cache",
    **dict.fromkeys(["DaskExecutor", "PoolExecutor", "SerialExecutor", "execute_point", "make_executor", "run_scenario"],
                    "execute"),
    **dict.fromkeys(["Point", "Sweep", "expand", "load_sweep", "point_key"], "grid"),
    **dict.fromkeys(["SweepOutcome", "default_out_dir", "results_table", "run_sweep", "write_tables"], "run"),
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'etr_sim.sweep' has no attribute {name!r}")
    return getattr(import_module(f"etr_sim.sweep.{_WHERE[name]}"), name)


__all__ = [
    "DaskExecutor",
    "Point",
    "PoolExecutor",
    "ResultCache",
    "SerialExecutor",
    "Sweep",
    "SweepOutcome",
    "default_out_dir",
    "execute_point",
    "expand",
    "load_sweep",
    "make_executor",
    "point_key",
    "results_table",
    "run_scenario",
    "run_sweep",
    "write_tables",
]
