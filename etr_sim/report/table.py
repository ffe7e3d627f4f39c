"""Human-readable comparison table (plain text, no plotting dependency)."""

from __future__ import annotations

import pandas as pd

_FORMATS = {
    "dispatch_s": ("dispatch ms", lambda v: f"{v * 1e3:.3f}"),
    "combine_s": ("combine ms", lambda v: f"{v * 1e3:.3f}"),
    "expert_compute_s": ("experts ms", lambda v: f"{v * 1e3:.3f}"),
    "layer_s": ("layer ms", lambda v: f"{v * 1e3:.3f}"),
    "inter_node_bytes": ("inter GB", lambda v: f"{v / 1e9:.3f}"),
    "intra_node_bytes": ("intra GB", lambda v: f"{v / 1e9:.3f}"),
    "dropped_fraction": ("dropped", lambda v: f"{v:.1%}"),
    "padding_fraction": ("padding", lambda v: f"{v:.1%}"),
    "load_max_over_mean": ("load max/mean", lambda v: f"{v:.2f}"),
}


def format_table(summary: pd.DataFrame) -> str:
    cols = {"router": ("router", str)} | {k: v for k, v in _FORMATS.items() if k in summary.columns}
    head = [name for name, _ in cols.values()]
    body = [[fmt(row[c]) for c, (_, fmt) in cols.items()] for _, row in summary.iterrows()]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    fmt_row = lambda r: "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt_row(head), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in body])
