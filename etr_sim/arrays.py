"""Array helpers shared by the stages.

numpy 2.x's ``np.unique`` hashes before sorting and is ~50x slower than a plain sort on the large
integer key arrays routing and traffic build (one key per assignment), so those use ``distinct``.
"""

from __future__ import annotations

import numpy as np


def distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values of ``keys`` (= ``np.unique(keys)``)."""
    s = np.sort(np.asarray(keys).reshape(-1))
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if len(s) else s


def distinct_inverse(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, index of each key's value in them) = ``np.unique(keys, return_inverse=True)``."""
    flat = np.asarray(keys).reshape(-1)
    order = np.argsort(flat, kind="stable")
    s = flat[order]
    first = np.concatenate(([True], s[1:] != s[:-1])) if len(s) else np.zeros(0, dtype=bool)
    inverse = np.empty(len(flat), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return s[first], inverse
