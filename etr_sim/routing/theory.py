"""Capacity theory of LocMoE and ETR, as code: closed forms and a Monte-Carlo of ETR Theorem 5.

LocMoE Theorem 1 (tokens uniform on the unit sphere of R^d, n orthogonal equal-norm gates; a token
"belongs" to expert i when |cos(x, w_i)| >= delta):
    p_delta = 1 - I_{delta^2}(1/2, (d-1)/2)      (regularised incomplete beta: the two spherical caps)
    C_min  >= 1 / (n * p_delta)                   (exact)
    C_min  >  (1/n) * exp(delta^2 d / (2 - delta^2))   (large-d asymptotic form, a weaker bound)
ETR Remark 7 evaluates the same bound at the maximal angular deviation delta_max.

ETR Theorem 5 / Corollary 6, data model: a sample has s tokens, one class-discriminative token x*
among s-1 isotropic irrelevant ones. With GrAP gates u_1..u_n (orthonormal), irrelevant tokens are
g / sqrt(d), g ~ N(0, I_d), and the discriminative token of class c carries a FIXED signal along its
gate: x* = sqrt(rho) u_c + sqrt(1-rho) g_perp / sqrt(d), g_perp = g without its u_c component.
rho in [0, 1] is the clustering strength: rho = 0 is the untrained regime (x* does not stand out,
q = 1/2), rho >> 1/d the clustered one (q -> 0). Only the n gate projections and the norm matter, so
the simulation draws them exactly: projections N(0, 1) and the remaining squared norm chi^2_{d-n}.
  TCR (top-1 token choice, capacity C, arrival order): succeeds when x* picks c and fewer than C
      irrelevant nominators of c arrive before it (x* sits at a uniform random position).
  ECR (expert c takes its top-C of all s tokens): succeeds when fewer than C irrelevant tokens
      out-score x* at c.
  ETR (bidirectional): x* picks c, and fewer than C irrelevant NOMINATORS of c out-score it.
q_t = P(an irrelevant token out-scores x* at c | x*) is exact per trial (the cosine of a uniform
unit vector: P(cos > t) = (1 - sign(t) * I_{t^2}(1/2, (d-1)/2)) / 2), and the paper's bounds, which
hold for a fixed q, are averaged over trials (a valid bound on the mixture): ECR <= exp(-(s-1)q/8)
where C <= (s-1)q/2 (else the trivial 1), ECR >= 1 - exp(-3C/16) where C >= 2sq (else 0). The TCR
curve drawn is C * sum_i p_i / s = C n p / s (the Theta with constant 1, capped at 1).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from etr_sim.seeding import numpy_rng


def cap_probability(delta: float | np.ndarray, d: int) -> np.ndarray:
    """p_delta = P(|cos(x, w)| >= delta) for x uniform on the sphere of R^d (LocMoE Theorem 1)."""
    from scipy.special import betainc  # here, not at import: scipy costs every run ~0.06 s otherwise

    return 1.0 - betainc(0.5, (d - 1) / 2.0, np.square(delta))


def locmoe_min_capacity(delta: float | np.ndarray, d: int, n: int) -> np.ndarray:
    """LocMoE Theorem 1 exact lower bound on capacity, 1 / (n * p_delta), in tokens."""
    return 1.0 / (n * cap_probability(delta, d))


def locmoe_min_capacity_asymptotic(delta: float | np.ndarray, d: int, n: int) -> np.ndarray:
    """LocMoE Theorem 1 large-d form (1/n) * exp(delta^2 d / (2 - delta^2)), in tokens."""
    delta = np.asarray(delta, dtype=np.float64)
    return np.exp(np.square(delta) * d / (2.0 - np.square(delta))) / n


def etr_remark7_capacity(delta_max: float | np.ndarray, d: int, n: int) -> np.ndarray:
    """ETR Remark 7: the Theorem 1 bound at the maximal angular deviation delta_max, in tokens."""
    return locmoe_min_capacity(delta_max, d, n)


def capacity_table(ds=(512, 4096), ns=(8, 16, 64), deltas=(0.01, 0.02, 0.03, 0.04, 0.05)) -> pd.DataFrame:
    """One row per (d, n, delta): p_delta, the exact and asymptotic LocMoE bounds."""
    rows = []
    for d in ds:
        for n in ns:
            for delta in deltas:
                rows.append(
                    {
                        "d": d,
                        "n": n,
                        "delta": delta,
                        "p_delta": float(cap_probability(delta, d)),
                        "c_min_exact": float(locmoe_min_capacity(delta, d, n)),
                        "c_min_asymptotic": float(locmoe_min_capacity_asymptotic(delta, d, n)),
                    }
                )
    return pd.DataFrame(rows)


def cos_tail(t: np.ndarray, d: int) -> np.ndarray:
    """P(cos(x, u) > t) for x uniform on the unit sphere of R^d and a fixed unit u."""
    from scipy.special import betainc

    t = np.asarray(t, dtype=np.float64)
    half = 0.5 * betainc(0.5, (d - 1) / 2.0, np.square(np.clip(t, -1.0, 1.0)))
    return np.where(t >= 0, 0.5 - half, 0.5 + half)


def simulate_selection(
    d: int, n: int, s: int, rho: float, capacities: list[int], trials: int, seed: int
) -> pd.DataFrame:
    """Monte-Carlo of TCR / ECR / ETR success under ETR Theorem 5's data model (see module docstring).

    Returns one row per capacity C: success probabilities (tcr, ecr, etr), the estimated p (x* picks
    its class) and mean q (an irrelevant token out-scores x*), and the paper's bounds averaged over
    trials (NaN where no trial is in the bound's regime).
    """
    rng = numpy_rng(seed, "theory", "theorem5", d, n, s, int(round(rho * 1e9)))
    c = 0  # the class of x* (all classes are alike by symmetry)
    z_irr = rng.standard_normal((trials, s - 1, n))  # [T, s-1, n] gate projections of g
    norm_irr = np.sqrt(np.square(z_irr).sum(-1) + rng.chisquare(d - n, (trials, s - 1)))  # [T, s-1] |g|
    cos_irr = z_irr / norm_irr[..., None]  # [T, s-1, n]
    b = math.sqrt((1.0 - rho) / d)
    proj = b * rng.standard_normal((trials, n))  # [T, n]
    proj[:, c] = math.sqrt(rho)  # fixed signal along the class gate
    norm_star = np.sqrt(np.square(proj).sum(-1) + b * b * rng.chisquare(d - n, trials))  # [T]
    cos_star = proj / norm_star[:, None]  # [T, n]

    star_picks = cos_star.argmax(-1) == c  # [T]
    irr_nominates = cos_irr.argmax(-1) == c  # [T, s-1]
    beats = cos_irr[..., c] > cos_star[:, c : c + 1]  # [T, s-1] irrelevant out-scores x* at c
    position = rng.integers(0, s, trials)  # [T] arrival slot of x* among s tokens
    before = np.cumsum(irr_nominates, axis=1)  # [T, s-1]
    nominators_before = np.where(position > 0, before[np.arange(trials), np.maximum(position - 1, 0)], 0)
    outscore_all = beats.sum(-1)  # [T]
    outscore_nominators = (beats & irr_nominates).sum(-1)  # [T]
    q_t = cos_tail(cos_star[:, c], d)  # [T] exact conditional q
    p_hat = float(star_picks.mean())
    rows = []
    for cap in capacities:
        in_upper = cap <= (s - 1) * q_t / 2.0  # [T]
        in_lower = cap >= 2.0 * s * q_t
        upper = np.where(in_upper, np.exp(-(s - 1) * q_t / 8.0), 1.0).mean() if in_upper.any() else math.nan
        lower = np.where(in_lower, 1.0 - math.exp(-3.0 * cap / 16.0), 0.0).mean() if in_lower.any() else math.nan
        rows.append(
            {
                "d": d,
                "n": n,
                "s": s,
                "rho": rho,
                "capacity": cap,
                "tcr": float((star_picks & (nominators_before < cap)).mean()),
                "ecr": float((outscore_all < cap).mean()),
                "etr": float((star_picks & (outscore_nominators < cap)).mean()),
                "p_hat": p_hat,
                "q_mean": float(q_t.mean()),
                "tcr_theta": min(1.0, cap * n * p_hat / s),
                "ecr_upper_bound": float(upper),
                "ecr_lower_bound": float(lower),
            }
        )
    return pd.DataFrame(rows)


def theorem5_sweep(
    d: int = 512,
    n: int = 8,
    s: int = 256,
    rhos=(0.0, 0.0005, 0.002, 0.01, 0.03),
    capacities=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    trials: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """simulate_selection over clustering strengths rho; one row per (rho, C)."""
    return pd.concat(
        [simulate_selection(d, n, s, rho, list(capacities), trials, seed) for rho in rhos], ignore_index=True
    )
