"""Plots. matplotlib is imported here and nowhere else (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def comparison_plot(summary: pd.DataFrame, title: str, path: Path) -> None:
    """Stacked layer time per router (dispatch, expert compute, combine) and bytes on each link tier."""
    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=(11, 4.2))
    routers = summary.router.tolist()
    bottom = pd.Series(0.0, index=summary.index)
    for col, label in (("dispatch_s", "dispatch"), ("expert_compute_s", "expert compute"), ("combine_s", "combine")):
        ax_t.bar(routers, summary[col] * 1e3, bottom=bottom * 1e3, label=label)
        bottom = bottom + summary[col]
    ax_t.set_ylabel("time per step, all MoE layers (ms)")
    ax_t.set_title("MoE layer time")
    ax_t.legend(fontsize=8)
    x = range(len(routers))
    ax_b.bar([i - 0.2 for i in x], summary.intra_node_bytes / 1e9, width=0.4, label="intra-node")
    ax_b.bar([i + 0.2 for i in x], summary.inter_node_bytes / 1e9, width=0.4, label="inter-node")
    ax_b.set_xticks(list(x), routers)
    ax_b.set_ylabel("all-to-all bytes (GB)")
    ax_b.set_title("Traffic by link tier")
    ax_b.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
