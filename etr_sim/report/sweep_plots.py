"""Sweep plots: a metric against each axis, one line per router (matplotlib lives only in report/).

When other axes vary too (a product sweep), each combination of their values gets its own line,
labelled ``router (other=value)``. With ``relative_to`` a router label, the plotted value is that
router's metric divided by each router's at the same point: a speedup over the baseline for time
metrics (the baseline's own line is 1).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


_STYLES = ["-", "--", ":", "-."]
_MARKERS = ["o", "s", "^", "D", "v", "x"]


def relative_values(table: pd.DataFrame, metric: str, baseline: str) -> pd.Series:
    """[rows] baseline router's ``metric`` at the same point divided by each row's ``metric``."""
    ok = table[table.status == "ok"]
    base = ok[ok.router == baseline].set_index("point")[metric]
    return table["point"].map(base) / table[metric]


def sweep_plots(table: pd.DataFrame, axes: list[str], metric: str, out_dir: Path,
                relative_to: str | None = None, log_x: bool = False, title: str = "") -> list[Path]:
    """One PNG per axis: ``metric`` (or speedup over ``relative_to``) vs the axis. Returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = table[table.status == "ok"].copy()
    if ok.empty:
        return []
    y = relative_values(ok, metric, relative_to) if relative_to else ok[metric]
    ok["_y"] = y
    ylabel = f"{relative_to} {metric} / router's {metric}" if relative_to else metric
    files: list[Path] = []
    for axis in axes:
        others = [a for a in axes if a != axis and ok[a].nunique() > 1 and not _moves_with(ok, axis, a)]
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        numeric = pd.api.types.is_numeric_dtype(ok[axis])
        group_cols = ["router", *others]
        # Colour says the router; line style and marker say the other axes' values.
        routers = list(dict.fromkeys(ok.router))
        combos = list(dict.fromkeys(map(tuple, ok[others].to_numpy()))) if others else [()]
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for keys, g in ok.groupby(group_cols, sort=False):
            keys = keys if isinstance(keys, tuple) else (keys,)
            c = combos.index(tuple(keys[1:])) if others else 0
            style = {"color": colours[routers.index(keys[0]) % len(colours)],
                     "linestyle": _STYLES[c % len(_STYLES)], "marker": _MARKERS[c % len(_MARKERS)]}
            label = str(keys[0]) + (" (" + ", ".join(f"{o}={v}" for o, v in zip(others, keys[1:])) + ")" if others else "")
            g = g.sort_values(axis) if numeric else g
            x = g[axis] if numeric else g[axis].astype(str)
            ax.plot(x, g["_y"] * (1e3 if metric.endswith("_s") and not relative_to else 1), label=label, **style)
        if log_x and numeric:
            ax.set_xscale("log", base=2)
        if numeric and ok[axis].nunique() <= 12:
            ticks = sorted(ok[axis].unique())
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel(axis)
        ax.set_ylabel(ylabel.replace(metric, f"{metric[:-2]}_ms") if metric.endswith("_s") and not relative_to else ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(title or f"{metric} vs {axis}")
        fig.tight_layout()
        path = out_dir / f"{metric}{'_rel_' + relative_to if relative_to else ''}_vs_{axis}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


def _moves_with(table: pd.DataFrame, a: str, b: str) -> bool:
    """True when axis ``b`` is a function of axis ``a`` (zipped axes): no separate lines for it."""
    return bool((table.groupby(a)[b].nunique() <= 1).all())
