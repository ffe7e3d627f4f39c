"""Capacity theory: LocMoE Theorem 1 (exact and asymptotic), ETR Remark 7, the Theorem 5 Monte-Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest

from etr_sim.cli import main
from etr_sim.routing import theory as T


@pytest.mark.parametrize("delta, tokens", [(0.03, 2.3), (0.04, 12.0), (0.05, 91.0)])
def test_locmoe_bound_reproduces_the_papers_numbers(delta, tokens):
    """etr-method.md: d=4096, n=8 gives about 2.3 tokens at delta=0.03, 12 at 0.04, 91 at 0.05."""
    c = float(T.locmoe_min_capacity(delta, 4096, 8))
    assert c == pytest.approx(tokens, rel=0.03)
    assert float(T.etr_remark7_capacity(delta, 4096, 8)) == c


def test_cap_probability_is_the_two_sided_cosine_tail():
    """p_delta = P(|cos| >= delta) for a uniform direction: check against sampling."""
    rng = np.random.default_rng(0)
    d, delta = 64, 0.2
    x = rng.standard_normal((200_000, d))
    cos = x[:, 0] / np.linalg.norm(x, axis=1)
    assert float(T.cap_probability(delta, d)) == pytest.approx(float((np.abs(cos) >= delta).mean()), abs=0.004)
    assert float(T.cos_tail(delta, d)) == pytest.approx(float((cos > delta).mean()), abs=0.004)
    assert float(T.cos_tail(-delta, d)) == pytest.approx(float((cos > -delta).mean()), abs=0.004)


def test_asymptotic_form_is_below_the_exact_bound_and_approaches_it_in_log():
    deltas = np.array([0.02, 0.03, 0.04, 0.05])
    exact, asym = T.locmoe_min_capacity(deltas, 4096, 8), T.locmoe_min_capacity_asymptotic(deltas, 4096, 8)
    assert (asym < exact).all()
    def log_ratio(delta):  # log(asymptotic) / log(exact): tends to 1 as delta^2 d grows
        return math.log(T.locmoe_min_capacity_asymptotic(delta, 4096, 8)) / math.log(T.locmoe_min_capacity(delta, 4096, 8))

    assert log_ratio(0.05) < log_ratio(0.08) < log_ratio(0.1)
    assert log_ratio(0.1) > 0.85


@pytest.fixture(scope="module")
def mc():
    return T.theorem5_sweep(d=512, n=8, s=256, rhos=(0.0, 0.0005, 0.002, 0.01, 0.03), trials=1500, seed=0)


def test_monte_carlo_respects_the_bounds(mc):
    tol = 3 * math.sqrt(0.25 / 1500)  # Monte-Carlo noise, 3 sigma
    upper = mc.dropna(subset=["ecr_upper_bound"])
    lower = mc.dropna(subset=["ecr_lower_bound"])
    assert len(upper) >= 10 and len(lower) >= 10
    assert (upper.ecr <= upper.ecr_upper_bound + tol).all()
    assert (lower.ecr >= lower.ecr_lower_bound - tol).all()


def test_monte_carlo_lands_in_the_predicted_regimes(mc):
    """Corollary 6: while q = Theta(1), TCR beats ECR at moderate C; once features cluster
    (s q << C), ECR wins and C = Theta(1) suffices."""
    early = mc[(mc.rho == 0.0005) & (mc.capacity == 16)].iloc[0]
    assert early.q_mean > 0.2
    assert early.tcr > early.ecr + 0.02
    late = mc[(mc.rho == 0.03) & (mc.capacity == 2)].iloc[0]
    assert late.q_mean * late.s < 1
    assert late.ecr > 0.95 > late.tcr + 0.5
    # TCR follows its Theta(C n p / s) shape before saturating at p
    tcr = mc[(mc.rho == 0.03) & (mc.capacity <= 16)]
    np.testing.assert_allclose(tcr.tcr, tcr.tcr_theta, atol=0.06)
    # ETR needs the token's own nomination, and with it is at least as good as ECR on the same trial
    assert (mc.etr <= mc.p_hat + 1e-12).all()
    clustered = mc[mc.rho >= 0.01]
    assert (clustered.etr >= np.minimum(clustered.ecr, clustered.p_hat) - 0.06).all()


def test_monte_carlo_is_deterministic():
    a = T.simulate_selection(128, 4, 64, 0.01, [1, 4, 16], 200, seed=3)
    b = T.simulate_selection(128, 4, 64, 0.01, [1, 4, 16], 200, seed=3)
    assert a.equals(b)


def test_theory_cli_writes_plot_and_tables(tmp_path):
    out = tmp_path / "theory"
    assert main(["theory", "--out", str(out), "--trials", "200"]) == 0
    for name in ("theory.png", "theory_capacity.csv", "theory_montecarlo.csv", "theory.md"):
        assert (out / name).stat().st_size > 0
    import pandas as pd

    cap = pd.read_csv(out / "theory_capacity.csv")
    row = cap[(cap.d == 4096) & (cap.n == 8) & (cap.delta == 0.04)].iloc[0]
    assert row.c_min_exact == pytest.approx(12.0, rel=0.03)
