"""Array helpers shared by the stages: distinct keys and counter-based hashing.

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


_GAMMA64 = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (a bijective 64-bit mixer), in place on a uint64 array; returns it.
    uint64 arithmetic wraps modulo 2^64."""
    t = np.empty_like(x)
    with np.errstate(over="ignore"):
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            np.right_shift(x, np.uint64(shift), out=t)
            x ^= t
            x *= np.uint64(mult)
        np.right_shift(x, np.uint64(31), out=t)
        x ^= t
    return x


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 of each element (a pure, well-spread hash of integer arrays), as a new uint64 array."""
    with np.errstate(over="ignore"):
        return mix64(np.add(x, _GAMMA64, dtype=np.uint64))
