"""Records -> DataFrames and summary numbers. No simpy processes, no plotting."""

from etr_sim.metrics.summary import SUMMARY_COLUMNS, layer_frame, phase_frame, summary_frame

__all__ = ["SUMMARY_COLUMNS", "layer_frame", "phase_frame", "summary_frame"]
