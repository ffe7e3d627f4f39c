"""Records -> DataFrames and summary numbers. No simpy processes, no plotting."""

from etr_sim.metrics.step import step_metrics

__all__ = ["step_metrics"]
