"""Interval arithmetic on [start, end) spans, for time breakdowns."""

from __future__ import annotations

import numpy as np


def union(spans: np.ndarray) -> np.ndarray:
    """[K, 2] sorted disjoint union of [N, 2] spans."""
    if len(spans) == 0:
        return np.zeros((0, 2))
    spans = spans[np.argsort(spans[:, 0], kind="stable")]
    out = [list(spans[0])]
    for a, b in spans[1:]:
        if a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return np.asarray(out)


def length(spans: np.ndarray) -> float:
    u = union(spans)
    return float((u[:, 1] - u[:, 0]).sum()) if len(u) else 0.0


def intersection_length(a: np.ndarray, b: np.ndarray) -> float:
    """Length of (union of a) ∩ (union of b)."""
    ua, ub = union(a), union(b)
    total, i, j = 0.0, 0, 0
    while i < len(ua) and j < len(ub):
        lo, hi = max(ua[i, 0], ub[j, 0]), min(ua[i, 1], ub[j, 1])
        total += max(hi - lo, 0.0)
        if ua[i, 1] < ub[j, 1]:
            i += 1
        else:
            j += 1
    return total
