"""Fit the synthetic generator's ``stage`` knob to the in-project training series.

For every stage of data/activations/etr-stages/stages.json we find the cluster_strength s for
which the synthetic Gaussian mixture, measured with the SAME estimator, has the same
within-cluster token-token correlation as the real router inputs at that stage:
  estimator: centre and normalise each token (Pearson geometry), spherical k-means with k = 32,
  mean correlation over pairs of tokens that share a cluster (etr_sim.activations.stats);
  synthetic data: d = 64, 2048 tokens, 32 clusters, popularity skew 1 (the generator defaults
  except d, which is the trained model's width), averaged over 3 seeds.
The estimator is monotone in s, so s is found by bisection. A stage whose correlation is below
what k-means finds in pure noise (s = 0) gets s = 0. Output: data/activations/stage-calibration.json.

    python scripts/calibrate_synthetic_stage.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from etr_sim.activations.stats import spherical_kmeans, unit_rows, within_cluster_correlation  # noqa: E402
from etr_sim.activations.synthetic import generate  # noqa: E402
from etr_sim.config.scenario import SyntheticActivations  # noqa: E402

D, TOKENS, CLUSTERS, SEEDS = 64, 2048, 32, (0, 1, 2)


def synthetic_within(s: float) -> float:
    vals = []
    for seed in SEEDS:
        spec = SyntheticActivations(kind="synthetic", hidden_size=D, num_clusters=CLUSTERS, cluster_strength=s)
        z = unit_rows(generate(spec, TOKENS, np.zeros(1, dtype=np.int64), seed).hidden)
        vals.append(within_cluster_correlation(z, spherical_kmeans(z, CLUSTERS, seed)))
    return float(np.mean(vals))


def solve(target: float) -> float:
    lo, hi = 0.0, 1.0
    if target <= synthetic_within(lo):
        return 0.0
    if target >= synthetic_within(hi):
        return 1.0
    for _ in range(14):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if synthetic_within(mid) < target else (lo, mid)
    return round((lo + hi) / 2, 4)


def main() -> None:
    series = json.loads((ROOT / "data" / "activations" / "etr-stages" / "stages.json").read_text())
    points = []
    for st in series["stages"]:
        target = st["within_cluster_correlation"]
        s = solve(target)
        check = synthetic_within(s)
        points.append({"step": st["step"], "cluster_strength": s, "real_within_cluster_correlation": round(target, 4),
                       "synthetic_within_cluster_correlation": round(check, 4),
                       "real_mean_token_correlation": round(st["mean_token_correlation"], 4)})
        print(f"step {st['step']:5d}  real {target:.3f}  ->  cluster_strength {s:.3f}  (synthetic gives {check:.3f})")
    out = ROOT / "data" / "activations" / "stage-calibration.json"
    out.write_text(json.dumps({
        "description": "synthetic cluster_strength per training step, fitted by scripts/calibrate_synthetic_stage.py",
        "estimator": f"within-cluster Pearson correlation, spherical k-means k={CLUSTERS}",
        "synthetic": {"hidden_size": D, "tokens": TOKENS, "num_clusters": CLUSTERS, "popularity_skew": 1.0, "seeds": list(SEEDS)},
        "noise_floor": round(synthetic_within(0.0), 4),
        "points": points,
    }, indent=1) + "\n")
    print(out)


if __name__ == "__main__":
    main()
