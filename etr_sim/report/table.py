"""Human-readable comparison tables (plain text)."""

from __future__ import annotations

import pandas as pd

_ms = lambda v: f"{v * 1e3:.3f}"  # noqa: E731
_gb = lambda v: f"{v / 1e9:.3f}"  # noqa: E731
_pct = lambda v: f"{v:.1%}"  # noqa: E731
_FORMATS = {
    "dispatch_s": ("dispatch ms", _ms),
    "combine_s": ("combine ms", _ms),
    "expert_compute_s": ("experts ms", _ms),
    "layer_s": ("layer ms", _ms),
    "step_s": ("step ms", _ms),
    "compute_s": ("compute ms", _ms),
    "exposed_a2a_s": ("a2a exp. ms", _ms),
    "exposed_other_comm_s": ("other comm ms", _ms),
    "idle_s": ("idle ms", _ms),
    "tokens_per_s_per_gpu": ("tok/s/GPU", lambda v: f"{v:,.0f}"),
    "mfu": ("MFU", _pct),
    "speedup_vs_first": ("speed-up", lambda v: f"{v:.3f}x"),
    "inter_node_bytes": ("inter GB", _gb),
    "intra_node_bytes": ("intra GB", _gb),
    "scale_out_bytes": ("scale-out GB", _gb),
    "dropped_fraction": ("dropped", _pct),
    "padding_fraction": ("padding", _pct),
    "load_max_over_mean": ("load max/mean", lambda v: f"{v:.2f}"),
    "memory_bytes": ("mem GB", _gb),
}
LAYER_VIEW = ["dispatch_s", "combine_s", "expert_compute_s", "layer_s", "inter_node_bytes", "intra_node_bytes",
              "scale_out_bytes", "dropped_fraction", "padding_fraction", "load_max_over_mean"]
STEP_VIEW = ["step_s", "speedup_vs_first", "compute_s", "exposed_a2a_s", "exposed_other_comm_s", "idle_s",
             "tokens_per_s_per_gpu", "mfu", "inter_node_bytes", "scale_out_bytes", "dropped_fraction", "padding_fraction",
             "load_max_over_mean", "memory_bytes"]


def format_table(summary: pd.DataFrame, columns: list[str] | None = None) -> str:
    columns = columns or LAYER_VIEW
    cols = {"router": ("router", str)} | {k: _FORMATS[k] for k in columns if k in summary.columns}
    head = [name for name, _ in cols.values()]
    body = [[fmt(row[c]) for c, (_, fmt) in cols.items()] for _, row in summary.iterrows()]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]

    def fmt_row(r):
        return "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths)))

    return "\n".join([fmt_row(head), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in body])


def view_for(scope: str) -> list[str]:
    return STEP_VIEW if scope == "training_step" else LAYER_VIEW
