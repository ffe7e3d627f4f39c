"""Records -> DataFrames and summary numbers. No simpy processes, no plotting."""

from etr_sim.metrics.step import link_series, step_metrics

__all__ = ["link_series", "step_metrics"]
