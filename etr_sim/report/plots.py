"""Plots. matplotlib is imported here and nowhere else (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

_PARTS = (("compute_s", "compute"), ("exposed_a2a_s", "all-to-all (exposed)"),
          ("exposed_other_comm_s", "other comm (exposed)"), ("idle_s", "idle / bubbles"))


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def comparison_plot(summary: pd.DataFrame, title: str, path: Path) -> None:
    """Step-time breakdown per router, and all-to-all bytes on each link tier."""
    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=(11, 4.2))
    routers = summary.router.tolist()
    bottom = np.zeros(len(summary))
    for col, label in _PARTS:
        vals = summary[col].to_numpy() * 1e3 if col in summary else np.zeros(len(summary))
        ax_t.bar(routers, vals, bottom=bottom, label=label)
        bottom += vals
    ax_t.set_ylabel("time per step (ms)")
    ax_t.set_title("Step time breakdown (mean over pipeline stages)")
    ax_t.legend(fontsize=8)
    x = np.arange(len(routers))
    ax_b.bar(x - 0.2, summary.intra_node_bytes / 1e9, width=0.4, label="intra-node")
    ax_b.bar(x + 0.2, summary.inter_node_bytes / 1e9, width=0.4, label="inter-node")
    ax_b.set_xticks(x, routers)
    ax_b.set_ylabel("all-to-all bytes per step (GB)")
    ax_b.set_title("Traffic by link tier")
    ax_b.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def speedup_plot(summary: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    base = summary.router.iloc[0]
    ax.bar(summary.router, summary.speedup_vs_first)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_ylabel(f"speed-up vs {base}")
    ax.set_title("Step-time speed-up")
    _save(fig, path)


def a2a_distribution_plot(ops: pd.DataFrame, path: Path) -> None:
    """All-to-all op durations per MoE layer (box per router and layer): spread across micro-batches."""
    a2a = ops[ops.category == "a2a"]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    routers = list(dict.fromkeys(a2a.router))
    layers = sorted(a2a.layer.unique())
    width = 0.8 / max(len(routers), 1)
    for i, r in enumerate(routers):
        data = [a2a[(a2a.router == r) & (a2a.layer == layer)].duration_s.to_numpy() * 1e3 for layer in layers]
        pos = np.arange(len(layers)) + i * width
        bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=False)
        for patch in bp["boxes"]:
            patch.set_facecolor(f"C{i}")
        ax.plot([], [], color=f"C{i}", lw=6, label=r)
    ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2, [str(x) for x in layers])
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("all-to-all op time (ms)")
    ax.legend(fontsize=8)
    ax.set_title("All-to-all time per layer (dispatch and combine, forward and backward)")
    _save(fig, path)


def link_heatmap(links: pd.DataFrame, path: Path, top: int = 24) -> None:
    """Utilisation of the hottest links (rows) per router (columns)."""
    first = links[links.training_stage == links.training_stage.min()]
    table = first.pivot_table(index=["link_class", "src", "dst"], columns="router", values="utilisation", sort=False)
    table = table.loc[table.max(axis=1).sort_values(ascending=False).index[:top]]
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(table) + 1.5))
    im = ax.imshow(table.to_numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=max(1e-9, float(np.nanmax(table.to_numpy()))))
    ax.set_yticks(range(len(table)), [f"{c}: {s}->{d}" for c, s, d in table.index], fontsize=7)
    ax.set_xticks(range(len(table.columns)), table.columns, fontsize=8, rotation=40, ha="right")
    fig.colorbar(im, ax=ax, label="mean utilisation over the step (blank: link not in that variant)")
    ax.set_title(f"Hottest {len(table)} links")
    _save(fig, path)


def expert_load_plot(load: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    first = load[load.training_stage == load.training_stage.min()]
    routers = list(dict.fromkeys(first.router))
    width = 0.8 / max(len(routers), 1)
    for i, r in enumerate(routers):
        d = first[first.router == r]
        share = d.tokens / max(d.tokens.mean(), 1e-12)
        ax.bar(d.expert + i * width, share, width=width, label=r)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("expert")
    ax.set_ylabel("tokens kept / mean")
    ax.set_title("Expert load (sampled layers and micro-batches)")
    ax.legend(fontsize=8)
    _save(fig, path)


def training_plot(steps: pd.DataFrame, path: Path) -> None:
    """Capacity and step time over training stages, one line per router."""
    fig, (ax_c, ax_t) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r, d in steps.groupby("router", sort=False):
        # Piecewise constant: stage i holds from its first step until the next stage (the last to the end).
        x = np.r_[d.step_from.to_numpy(), d.step_from.iloc[-1] + d.steps.iloc[-1]]
        cap = np.r_[d.capacity.to_numpy(), d.capacity.iloc[-1]] if "capacity" in d else np.zeros(len(x))
        ax_c.plot(x, cap, drawstyle="steps-post", marker="o", markevery=list(range(len(d))), label=r)
        ax_t.plot(x, np.r_[d.step_s.to_numpy(), d.step_s.iloc[-1]] * 1e3, drawstyle="steps-post", marker="o",
                  markevery=list(range(len(d))), label=r)
    ax_c.set_xlabel("training step")
    ax_c.set_ylabel("capacity C (slots per group and expert)")
    ax_t.set_xlabel("training step")
    ax_t.set_ylabel("step time (ms)")
    ax_c.legend(fontsize=8)
    ax_c.set_title("Capacity over training")
    ax_t.set_title("Step time over training")
    _save(fig, path)


def write_all(result, folder: Path) -> list[str]:
    """Every plot of a run. Returns the file names written."""
    name = result.loaded.scenario.name
    comparison_plot(result.summary, name, folder / "comparison.png")
    speedup_plot(result.summary, folder / "speedup.png")
    a2a_distribution_plot(result.ops, folder / "a2a_per_layer.png")
    link_heatmap(result.links, folder / "link_utilisation.png")
    expert_load_plot(result.expert_load, folder / "expert_load.png")
    training_plot(result.steps, folder / "training.png")
    return ["comparison.png", "speedup.png", "a2a_per_layer.png", "link_utilisation.png", "expert_load.png", "training.png"]
