"""Sweeps: grids of scenarios (axes over YAML paths), a content-hash result cache, and execution on
this process, a local process pool (default) or a Dask distributed cluster.

sweep file -> ``grid.load_sweep`` -> Sweep (points, each a validated LoadedScenario)
           -> ``run.run_sweep`` (cache + executor) -> SweepOutcome (tidy table) -> files, plots.
"""

from etr_sim.sweep.cache import ResultCache
from etr_sim.sweep.execute import DaskExecutor, PoolExecutor, SerialExecutor, execute_point, make_executor, run_scenario
from etr_sim.sweep.grid import Point, Sweep, expand, load_sweep, point_key
from etr_sim.sweep.run import SweepOutcome, default_out_dir, results_table, run_sweep, write_tables

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
