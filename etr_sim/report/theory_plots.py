"""Plots of the capacity theory (``etr-sim theory``). matplotlib stays inside report/."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from etr_sim.routing.theory import locmoe_min_capacity, locmoe_min_capacity_asymptotic  # noqa: E402


def theory_plot(mc: pd.DataFrame, path: Path, d_bound: int = 4096, n_bound: int = 8) -> None:
    """Left: LocMoE Theorem 1 bound against delta (exact and asymptotic). Right panels: Monte-Carlo
    success of TCR / ECR / ETR against capacity C for each clustering strength rho, with the bounds."""
    rhos = sorted(mc.rho.unique())
    ncols = 3
    nrows = -(-(len(rhos) + 1) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    axes = grid.reshape(-1)
    for extra in axes[len(rhos) + 1 :]:
        extra.axis("off")
    ax = axes[0]
    delta = np.linspace(0.005, 0.06, 200)
    ax.semilogy(delta, locmoe_min_capacity(delta, d_bound, n_bound), label="exact (betainc)")
    ax.semilogy(delta, locmoe_min_capacity_asymptotic(delta, d_bound, n_bound), "--", label="asymptotic")
    ax.set_xlabel("delta (cosine)")
    ax.set_ylabel("C_min (tokens)")
    ax.set_title(f"LocMoE Thm 1, d={d_bound}, n={n_bound}", fontsize=9)
    ax.legend(fontsize=7)
    for ax, rho in zip(axes[1 : len(rhos) + 1], rhos):
        df = mc[mc.rho == rho].sort_values("capacity")
        c = df.capacity
        ax.semilogx(c, df.tcr, "o-", label="TCR (MC)")
        ax.semilogx(c, df.ecr, "s-", label="ECR (MC)")
        ax.semilogx(c, df.etr, "^-", label="ETR (MC)", alpha=0.7)
        ax.semilogx(c, df.tcr_theta, ":", color="C0", label="C n p / s")
        ax.semilogx(c, df.ecr_upper_bound, "v--", color="C1", ms=3, label="ECR upper bound")
        ax.semilogx(c, df.ecr_lower_bound, "^--", color="C1", ms=3, label="ECR lower bound")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("capacity C (tokens)")
        ax.set_title(f"rho={rho:g}, q={df.q_mean.iloc[0]:.3g}, p={df.p_hat.iloc[0]:.2f}", fontsize=9)
    axes[1].set_ylabel("P(discriminative token kept by its expert)")
    axes[len(rhos)].legend(fontsize=7, loc="lower right")
    s = int(mc.s.iloc[0])
    fig.suptitle(f"ETR Theorem 5 / Corollary 6 Monte-Carlo (d={int(mc.d.iloc[0])}, n={int(mc.n.iloc[0])}, s={s})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
