"""Records -> pandas tables: per (router, layer) and per router."""

from __future__ import annotations

import pandas as pd

from etr_sim.sim.recorder import Recorder

# Columns of the comparison table, in order (units in the names).
SUMMARY_COLUMNS = [
    "router",
    "dispatch_s",
    "combine_s",
    "expert_compute_s",
    "layer_s",
    "inter_node_bytes",
    "intra_node_bytes",
    "dropped_fraction",
    "padding_fraction",
    "load_max_over_mean",
]


def phase_frame(rec: Recorder) -> pd.DataFrame:
    """One row per recorded span (collective phases have gpu = -1)."""
    return pd.DataFrame(rec.phases, columns=["router", "layer", "phase", "gpu", "start_s", "end_s"]).assign(
        duration_s=lambda d: d.end_s - d.start_s
    )


def layer_frame(phases: pd.DataFrame, layer_facts: pd.DataFrame) -> pd.DataFrame:
    """[router, layer] rows: phase durations joined with routing and traffic facts."""
    spans = phases[phases.gpu == -1].pivot_table(index=["router", "layer"], columns="phase", values="duration_s")
    spans = spans.rename(columns={p: f"{p}_s" for p in spans.columns}).reset_index()
    spans["layer_s"] = spans[["dispatch_s", "expert_compute_s", "combine_s"]].sum(axis=1)
    return layer_facts.merge(spans, on=["router", "layer"], how="left")


def summary_frame(layers: pd.DataFrame, router_order: list[str]) -> pd.DataFrame:
    """One row per router: times and bytes summed over MoE layers, fractions averaged."""
    sums = ["dispatch_s", "combine_s", "expert_compute_s", "layer_s", "inter_node_bytes", "intra_node_bytes"]
    means = ["dropped_fraction", "padding_fraction", "load_max_over_mean"]
    agg = layers.groupby("router", sort=False).agg({**{c: "sum" for c in sums}, **{c: "mean" for c in means}})
    return agg.reindex(router_order).reset_index()[SUMMARY_COLUMNS]
