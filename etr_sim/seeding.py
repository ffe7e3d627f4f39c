"""Every random generator derives from the scenario seed plus a stable purpose path (no global RNG)."""

from __future__ import annotations

import zlib

import numpy as np


def _words(*purpose: str | int) -> list[int]:
    out = []
    for p in purpose:
        out.append(p if isinstance(p, int) else zlib.crc32(str(p).encode()))
    return out


def seed_for(seed: int, *purpose: str | int) -> int:
    """A 63-bit integer seed, stable across processes and PYTHONHASHSEED, for ``purpose``."""
    ss = np.random.SeedSequence([seed & 0xFFFFFFFF, *_words(*purpose)])
    return int(ss.generate_state(2, dtype=np.uint32).astype(np.uint64) @ np.array([1, 1 << 31], dtype=np.uint64)) & (
        (1 << 63) - 1
    )


def numpy_rng(seed: int, *purpose: str | int) -> np.random.Generator:
    return np.random.default_rng(seed_for(seed, *purpose))
