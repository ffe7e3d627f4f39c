"""Always-on invariant checks: cheap tests that a simulation obeys its own physics and bookkeeping.

A violation is a bug in etr-sim, never the user's fault: it raises ``InternalError`` with what broke,
where, and the two numbers that disagree, instead of letting a wrong number reach a report.

Checked (numpy only, duck-typed on the stage products, so any stage may call it):

- routing: kept + dropped assignments are the distinct nominations (no (token, expert) pair is
  both kept and dropped or listed twice), every index is in range, no capacity bucket holds more
  than ``capacity``, and when the number of nominations is known in advance (top-k routers:
  tokens x k) kept + dropped equals it.
- collectives: the bytes of the flows a plan starts equal the plan's bytes; the bytes the network
  charged to links equal sum(flow size x hops) of every admitted flow; every flow was delivered.
- links: no link's allocated rate exceeds its capacity (checked inside every max-min recomputation
  from the residual capacities, O(links)).
- time: simulated time never runs backwards, every op ends after it starts, and every collective
  takes at least its analytical lower bound: sum over its sequential stages of the busiest link's
  bytes / capacity (contention, latency and overheads only add to it).

Tolerances are relative (``REL_TOL``): the quantities are sums of float64 terms.
"""

from __future__ import annotations

import numpy as np

from etr_sim.errors import InternalError

REL_TOL = 1e-6


def _close(a: float, b: float, tol: float = REL_TOL) -> bool:
    return abs(a - b) <= tol * max(abs(a), abs(b), 1.0)


def check_decision(d, where: str, nominated: int | None = None) -> None:
    """Routing bookkeeping of one RoutingDecision ``d``. ``nominated``: expected kept + dropped."""
    n, e = d.num_tokens, d.num_experts
    if not (len(d.token) == len(d.expert) == len(d.weight)) or len(d.dropped_token) != len(d.dropped_expert):
        raise InternalError(f"{where}: routing decision arrays differ in length (token {len(d.token)}, "
                            f"expert {len(d.expert)}, weight {len(d.weight)}, dropped {len(d.dropped_token)}/"
                            f"{len(d.dropped_expert)})")
    tok = np.concatenate([d.token, d.dropped_token]).astype(np.int64)  # [A + D]
    exp = np.concatenate([d.expert, d.dropped_expert]).astype(np.int64)
    if len(tok) and (tok.min() < 0 or tok.max() >= n or exp.min() < 0 or exp.max() >= e):
        raise InternalError(f"{where}: token or expert index out of range (tokens {n}, experts {e})")
    key = np.sort(tok * e + exp)  # [A + D]; np.sort is ~50x faster than np.unique here
    repeats = int((key[1:] == key[:-1]).sum()) if len(key) else 0
    if repeats:
        raise InternalError(f"{where}: kept {d.num_kept} + dropped {d.num_dropped} assignments hold only "
                            f"{len(key) - repeats} distinct (token, expert) nominations: some are counted twice")
    if nominated is not None and len(tok) != nominated:
        raise InternalError(f"{where}: kept {d.num_kept} + dropped {d.num_dropped} = {len(tok)} assignments, "
                            f"but {nominated} were nominated")
    if d.capacity is not None and d.num_kept:
        worst = int(d.group_expert_load().max())
        if worst > d.capacity:
            raise InternalError(f"{where}: an expert buffer holds {worst} tokens, above its capacity {d.capacity}")


def flow_hop_bytes(fs) -> float:
    """sum(flow size x hops) of one FlowSet: the bytes its flows put on links."""
    return float(np.dot(fs.size_bytes, np.diff(fs.offsets)))


def plan_lower_bound_s(plan, capacity_Bps: np.ndarray) -> float:
    """Analytical lower bound of a CollectivePlan's duration: stages run in sequence, and a stage
    lasts at least as long as its busiest link needs for its bytes at full capacity."""
    total = 0.0
    for fs in plan.stages:
        if not fs.num_flows:
            continue
        hop_flow = np.repeat(np.arange(fs.num_flows), np.diff(fs.offsets))  # [H]
        load = np.bincount(fs.links, weights=fs.size_bytes[hop_flow], minlength=len(capacity_Bps))  # [L]
        total += float((load / capacity_Bps).max())
    return total


def check_plan_bytes(plan, stage_bytes: list[float], where: str) -> None:
    """The flows started for ``plan`` carry exactly ``plan.total_bytes``."""
    sent = float(sum(stage_bytes))
    if not _close(sent, plan.total_bytes):
        raise InternalError(f"{where}: collective '{plan.name}' started flows of {sent:.6g} bytes, "
                            f"its plan holds {plan.total_bytes:.6g} bytes")


def check_duration(name: str, start_s: float, end_s: float, bound_s: float, where: str) -> None:
    if end_s < start_s:
        raise InternalError(f"{where}: op '{name}' ends at {end_s!r} s before it starts at {start_s!r} s")
    if end_s - start_s < bound_s * (1.0 - REL_TOL):
        raise InternalError(f"{where}: collective '{name}' took {end_s - start_s:.6g} s, below its lower bound "
                            f"{bound_s:.6g} s (busiest link bytes / capacity)")


def check_link_capacity(residual_Bps: np.ndarray, capacity_Bps: np.ndarray, where: str = "max-min") -> None:
    """After a rate allocation the residual capacity of every link is >= 0 (O(links))."""
    over = residual_Bps < -REL_TOL * capacity_Bps
    if over.any():
        link = int(np.flatnonzero(over)[0])
        raise InternalError(f"{where}: link {link} allocated {capacity_Bps[link] - residual_Bps[link]:.6g} B/s, "
                            f"above its capacity {capacity_Bps[link]:.6g} B/s")


def check_network_done(net, expected_hop_bytes: float, where: str) -> None:
    """Every admitted flow was delivered and the bytes charged to links match the flows' sizes x hops."""
    # flows still listed must have been given their finish time (retired lazily at the next wake-up)
    active = int((~np.isfinite(net._finish_s)).sum()) + len(net._pending)
    if active:
        raise InternalError(f"{where}: {active} flow(s) still in the network when the simulation ended")
    carried = float(net.bytes_carried.sum())
    if not _close(carried, expected_hop_bytes):
        raise InternalError(f"{where}: links carried {carried:.6g} bytes, but the flows' sizes x hops sum to "
                            f"{expected_hop_bytes:.6g} bytes")


def check_time(now_s: float, last_s: float, where: str) -> None:
    if now_s < last_s:
        raise InternalError(f"{where}: simulated time ran backwards ({last_s!r} s -> {now_s!r} s)")
