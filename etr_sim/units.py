"""The only place units are converted. Inside etr-sim: seconds, bytes, bytes per second, FLOP/s.

Naming convention in YAML and code: the unit is the suffix.
- ``_gbps``: gigabits per second (network ports: a "400G" NIC is ``nic_gbps: 400``).
- ``_GBps``: gigabytes per second, 1e9 B/s (scale-up links and PCIe: NVLink 4 is 450 GB/s per GPU).
- ``_us``: microseconds; ``_s``: seconds; ``_bytes``: bytes; ``_tflops``: 1e12 FLOP/s.
"""

from __future__ import annotations

GB = 1e9


def gbps_to_Bps(gbps: float) -> float:
    """Gigabits per second -> bytes per second."""
    return gbps * 1e9 / 8.0


def GBps_to_Bps(GBps: float) -> float:
    """Gigabytes per second (1e9 B/s) -> bytes per second."""
    return GBps * 1e9


def us_to_s(us: float) -> float:
    return us * 1e-6


def s_to_us(s: float) -> float:
    return s * 1e6


def tflops_to_flops(tflops: float) -> float:
    return tflops * 1e12


# Bytes per element on the wire. fp8 carries one fp32 scale per 128 values (DeepEP / DeepSeek-V3
# fine-grained quantisation), which `row_bytes` adds.
DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0}
FP8_SCALE_GROUP = 128


def row_bytes(hidden_size: int, dtype: str) -> float:
    """Bytes to move one token's hidden vector of ``hidden_size`` elements in ``dtype``."""
    base = hidden_size * DTYPE_BYTES[dtype]
    if dtype == "fp8":
        base += 4.0 * hidden_size / FP8_SCALE_GROUP
    return base
