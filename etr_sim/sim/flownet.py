"""Flow-level network: flows share links max-min fairly; rates are recomputed when flows start or finish.

A flow crosses a fixed path of directed links. While active it gets its max-min fair share
(progressive filling, as SimGrid's flow model). Its last byte is delivered ``sum(latency of its
links) + message overhead`` after it leaves the source (cut-through: latency is paid once per flow).

Scale (docs/network.md): a 1024-GPU all-to-all is ~1M flows finishing at ~1M distinct times, so an
exact simulation needs ~1M rate recomputations. Two documented knobs trade exactness for speed:

- ``coalesce_rel`` (epsilon): after a recomputation at time t, rates are held for a window
  ``max(first finish, epsilon x projected busy period)``, the projection being elapsed time plus the
  longest time-to-finish under the current rates. Flows that finish inside the window finish at
  their exact time under the rates in force; the bandwidth they free is handed out at the window end
  (a conservative error: no flow ever goes faster than max-min allows). That makes about
  1 / epsilon recomputations per busy period instead of one per distinct finish time; measured
  makespan error is about +epsilon (tests/test_network_flownet.py, docs/network.md).
- ``rate_tol_rel`` (delta): progressive filling freezes, in one round, every link whose fair share is
  within (1 + delta) of the lowest, at the lowest share (feasible, each rate within delta of max-min).

With both at 0 (the default) the model is exact max-min (ties within 1e-9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import simpy

from etr_sim import invariants

_EXACT_TOL = 1e-9  # ties between bottleneck levels, and "this flow is finished" (relative)


def maxmin_rates(capacity_Bps: np.ndarray, hop_flow: np.ndarray, hop_link: np.ndarray, num_flows: int,
                 rate_tol_rel: float = 0.0) -> np.ndarray:
    """Max-min fair rates by progressive filling.

    Args:
        capacity_Bps: [L] capacity of each link.
        hop_flow: [H] flow index of each (flow, link) hop.
        hop_link: [H] link index of each hop.
        num_flows: F.
        rate_tol_rel: links whose share is within (1 + tol) of the lowest freeze in the same round.
    Returns:
        [F] bytes/s per flow; flows with no hops get +inf.
    """
    num_links = len(capacity_Bps)
    rate = np.full(num_flows, np.inf)
    tol = max(rate_tol_rel, _EXACT_TOL)
    residual = capacity_Bps.astype(np.float64).copy()  # [L]
    hf, hl = hop_flow, hop_link
    newly = np.zeros(num_flows, dtype=bool)
    while len(hf):
        count = np.bincount(hl, minlength=num_links)  # [L] unfrozen flows per link
        loaded = count > 0
        share = np.full(num_links, np.inf)
        share[loaded] = np.maximum(residual[loaded], 0.0) / count[loaded]
        level = share.min()
        tight_hop = share[hl] <= level * (1.0 + tol)  # [H_live] hops on a link saturated at this level
        newly[:] = False
        newly[hf[tight_hop]] = True
        rate[newly] = level
        frozen_hop = newly[hf]  # [H_live] every hop of a newly frozen flow
        residual -= np.bincount(hl[frozen_hop], minlength=num_links) * level
        keep = ~frozen_hop
        hf, hl = hf[keep], hl[keep]
    invariants.check_link_capacity(residual, capacity_Bps)  # no link above its capacity, O(L)
    return rate


def class_utilisation(samples: list["LinkLoadSample"], capacity_Bps: np.ndarray, link_class: tuple[str, ...],
                      end_s: float) -> dict[str, dict[str, np.ndarray]]:
    """Time series of utilisation per link class from recorded samples (``record_load=True``).

    Returns {class: {"start_s": [T], "duration_s": [T], "mean": [T], "max": [T]}}: the mean and max over
    the class's links of load / capacity during each interval between rate recomputations.
    """
    if not samples:
        return {}
    start = np.array([s.start_s for s in samples])  # [T]
    dur = np.diff(np.r_[start, end_s])
    util = np.stack([s.load_Bps for s in samples]) / capacity_Bps  # [T, L]
    cls = np.asarray(link_class)
    return {c: {"start_s": start, "duration_s": dur, "mean": util[:, cls == c].mean(axis=1),
                "max": util[:, cls == c].max(axis=1)} for c in dict.fromkeys(link_class)}


class LinkLoadSample(NamedTuple):
    """Load on every link from ``start_s`` until the next sample (bytes/s per link, [L])."""

    start_s: float
    load_Bps: np.ndarray


@dataclass
class _Batch:
    event: simpy.Event
    remaining_flows: int
    delivered_s: np.ndarray  # [F_batch] delivery time of each flow (nan until delivered)
    last_delivery_s: float = 0.0
    start_s: float = 0.0
    scheduled: bool = False  # completion event already scheduled
    generation: int = 0  # bumped when a scheduled completion is invalidated by new arrivals


class FlowNetwork:
    """Owns the links and the active flows of one simulation; ``transfer`` is its only entry point.

    Args:
        capacity_Bps: [L] effective capacity per link; latency_s: [L] per link traversal.
        message_overhead_s: added once to every flow's delivery (software cost per message).
        coalesce_rel, rate_tol_rel: speed/exactness knobs (module docstring); 0 = exact max-min.
        record_load: keep a ``LinkLoadSample`` per rate recomputation in ``self.samples``.
        link_class: [L] class of each link; when given, ``self.class_samples`` keeps, per rate
            recomputation, (time, mean [C], max [C]) utilisation of each class in ``self.classes``
            (O(links) per recomputation and a few floats of memory: cheap enough to be always on).
    """

    def __init__(self, env: simpy.Environment, capacity_Bps: np.ndarray, latency_s: np.ndarray,
                 message_overhead_s: float = 0.0, coalesce_rel: float = 0.0, rate_tol_rel: float = 0.0,
                 record_load: bool = False, link_class: tuple[str, ...] | None = None):
        self.env = env
        self.capacity_Bps = np.asarray(capacity_Bps, dtype=np.float64)
        self.latency_s = np.asarray(latency_s, dtype=np.float64)
        self.message_overhead_s = float(message_overhead_s)
        self.coalesce_rel = float(coalesce_rel)
        self.rate_tol_rel = float(rate_tol_rel)
        self.record_load = record_load
        self.samples: list[LinkLoadSample] = []
        self.classes: tuple[str, ...] = tuple(dict.fromkeys(link_class)) if link_class is not None else ()
        self._class_id = (np.array([self.classes.index(c) for c in link_class]) if link_class is not None else None)
        self._class_links = np.bincount(self._class_id, minlength=len(self.classes)) if link_class is not None else None
        self.class_samples: list[tuple[float, np.ndarray, np.ndarray]] = []
        self.recomputations = 0
        self.bytes_carried = np.zeros(len(self.capacity_Bps))  # [L] bytes of every admitted flow per link
        self._batches: list[_Batch] = []
        # Active flows, flat arrays [F]: remaining bytes, size, batch id, index in batch, path latency.
        self._remaining = np.zeros(0)
        self._size = np.zeros(0)
        self._batch_of = np.zeros(0, dtype=np.int64)
        self._index_in_batch = np.zeros(0, dtype=np.int64)
        self._path_latency = np.zeros(0)
        self._offsets = np.zeros(1, dtype=np.int64)
        self._links = np.zeros(0, dtype=np.int64)
        self._rate = np.zeros(0)
        self._finish_s = np.zeros(0)  # [F] finish time under the current rates (inf if not yet)
        self._last_update_s = 0.0
        self._pending: list[tuple] = []
        self._wake = env.event()
        env.process(self._run())

    def transfer(self, size_bytes: np.ndarray, offsets: np.ndarray, link_ids: np.ndarray) -> simpy.Event:
        """Start flows now. ``offsets`` [F+1] / ``link_ids`` [H] give each flow's path (CSR).

        Returns an event that fires when every flow's last byte is delivered; its value is
        the [F] array of delivery times (s).
        """
        size_bytes = np.asarray(size_bytes, dtype=np.float64)
        event = self.env.event()
        batch = _Batch(event, len(size_bytes), np.full(len(size_bytes), np.nan), self.env.now, self.env.now)
        self._batches.append(batch)
        if len(size_bytes) == 0:
            event.succeed(batch.delivered_s)
            return event
        self._pending.append((len(self._batches) - 1, size_bytes, np.asarray(offsets, dtype=np.int64),
                              np.asarray(link_ids, dtype=np.int64)))
        if not self._wake.triggered:
            self._wake.succeed()
        return event

    # -- internals -------------------------------------------------------------------------------
    def _advance(self) -> None:
        invariants.check_time(self.env.now, self._last_update_s, "flow network")
        elapsed = self.env.now - self._last_update_s
        if elapsed > 0 and len(self._remaining):
            self._remaining -= np.minimum(self._rate * elapsed, self._remaining)
        self._last_update_s = self.env.now

    def _admit(self) -> None:
        if not self._pending:
            return
        parts = [(self._remaining, self._size, self._batch_of, self._index_in_batch, self._path_latency,
                  self._finish_s)]
        links, offs = [self._links], [self._offsets]
        base = self._offsets[-1]
        for batch_id, size, offsets, ids in self._pending:
            n = len(size)
            hop_lat = self.latency_s[ids]
            cum = np.concatenate([[0.0], np.cumsum(hop_lat)])
            lat = cum[offsets[1:]] - cum[offsets[:-1]] + self.message_overhead_s  # [n]
            hop_flow = np.repeat(np.arange(n), np.diff(offsets))
            self.bytes_carried += np.bincount(ids, weights=size[hop_flow], minlength=len(self.capacity_Bps))
            parts.append((size.copy(), size, np.full(n, batch_id), np.arange(n), lat, np.full(n, np.inf)))
            links.append(ids)
            offs.append(base + offsets[1:])
            base += offsets[-1]
        cols = list(zip(*parts))
        (self._remaining, self._size, self._batch_of, self._index_in_batch, self._path_latency,
         self._finish_s) = (np.concatenate(c) for c in cols)
        self._links = np.concatenate(links)
        self._offsets = np.concatenate(offs)
        self._pending.clear()

    def _retire(self, done: np.ndarray) -> None:
        """Remove finished flows; schedule each batch's completion after its last delivery."""
        idx = np.flatnonzero(done)
        t = np.minimum(self._finish_s[idx], self.env.now) + self._path_latency[idx]  # [D] delivery times
        b_of = self._batch_of[idx]
        order = np.argsort(b_of, kind="stable")
        b_sorted = b_of[order]
        starts = np.flatnonzero(np.concatenate(([True], b_sorted[1:] != b_sorted[:-1])))  # (np.r_ is slow per call)
        for k, st in enumerate(starts):
            en = starts[k + 1] if k + 1 < len(starts) else len(order)
            sel = order[st:en]
            batch = self._batches[int(b_sorted[st])]
            batch.delivered_s[self._index_in_batch[idx[sel]]] = t[sel]
            batch.last_delivery_s = max(batch.last_delivery_s, float(t[sel].max()))
            batch.remaining_flows -= len(sel)
            if batch.remaining_flows == 0 and not batch.scheduled:
                batch.scheduled = True
                self.env.process(self._complete(batch))
        keep = ~done
        lengths = np.diff(self._offsets)
        self._links = self._links[np.repeat(keep, lengths)]
        self._offsets = np.concatenate([[0], np.cumsum(lengths[keep])])
        for name in ("_remaining", "_size", "_batch_of", "_index_in_batch", "_path_latency", "_finish_s", "_rate"):
            arr = getattr(self, name)
            if len(arr) == len(keep):
                setattr(self, name, arr[keep])

    def _complete(self, batch: _Batch, generation: int | None = None, at_s: float | None = None):
        at_s = batch.last_delivery_s if at_s is None else at_s
        yield self.env.timeout(max(at_s - self.env.now, 0.0))
        if (generation is None or generation == batch.generation) and not batch.event.triggered:
            batch.event.succeed(batch.delivered_s)

    def _allocate(self) -> float:
        """Max-min rates for all active flows; mark the flows that finish in this window. Returns the
        next recomputation time (s).

        Flows finishing in the window get their exact finish time under these rates, and a batch whose
        flows all finish in the window gets its completion event scheduled at once, on time. A new
        transfer arriving inside the window triggers a full recomputation: the marks are dropped (and
        such completions rescheduled), so arrivals are always handled exactly.
        """
        now = self.env.now
        f = len(self._remaining)
        pending = np.isfinite(self._finish_s)  # marked in an earlier window, not finished yet
        if pending.any():
            for bid in np.unique(self._batch_of[pending]):
                batch = self._batches[int(bid)]
                batch.generation += 1
                batch.scheduled = False
                sel = pending & (self._batch_of == bid)
                batch.delivered_s[self._index_in_batch[sel]] = np.nan
        self._finish_s = np.full(f, np.inf)
        hop_flow = np.repeat(np.arange(f), np.diff(self._offsets))  # [H]
        self._rate = maxmin_rates(self.capacity_Bps, hop_flow, self._links, f, self.rate_tol_rel)
        self.recomputations += 1
        if self.record_load or self._class_id is not None:
            load = np.bincount(self._links, weights=self._rate[hop_flow], minlength=len(self.capacity_Bps))
            if self.record_load:
                self.samples.append(LinkLoadSample(now, load))
            if self._class_id is not None:
                util = load / self.capacity_Bps  # [L]
                mean = np.bincount(self._class_id, weights=util, minlength=len(self.classes)) / self._class_links
                peak = np.zeros(len(self.classes))
                np.maximum.at(peak, self._class_id, util)
                self.class_samples.append((now, mean, peak))
        with np.errstate(divide="ignore", invalid="ignore"):
            ttf = np.where(np.isfinite(self._rate), self._remaining / self._rate, 0.0)  # [F] s to finish
        first = float(ttf.min())
        window = first
        if self.coalesce_rel > 0:
            # the youngest batch sets the resolution: epsilon x (its age + its longest finish)
            b = self._batch_of
            starts = np.flatnonzero(np.concatenate(([True], b[1:] != b[:-1])))
            longest = np.maximum.reduceat(np.where(np.isfinite(ttf), ttf, 0.0), starts)
            age = now - np.array([self._batches[int(i)].start_s for i in b[starts]])
            window = max(first, self.coalesce_rel * float((age + longest).min()))
        new = ttf <= window * (1.0 + _EXACT_TOL)
        self._finish_s[new] = now + ttf[new]
        self._schedule_marked(new)
        return float(self._finish_s[new].max())

    def _schedule_marked(self, new: np.ndarray) -> None:
        """Write delivery times of marked flows; schedule batches whose active flows are all marked."""
        idx = np.flatnonzero(new)
        t = self._finish_s[idx] + self._path_latency[idx]  # [M] delivery times
        n_b = len(self._batches)
        active = np.bincount(self._batch_of, minlength=n_b)  # [B] active flows per batch
        marked = np.bincount(self._batch_of[idx], minlength=n_b)
        last = np.full(n_b, -np.inf)
        np.maximum.at(last, self._batch_of[idx], t)
        for bid in np.flatnonzero((marked > 0) & (marked == active)):
            batch = self._batches[int(bid)]
            sel = self._batch_of[idx] == bid
            batch.delivered_s[self._index_in_batch[idx[sel]]] = t[sel]
            batch.scheduled = True
            self.env.process(self._complete(batch, batch.generation, max(batch.last_delivery_s, float(last[bid]))))

    def _run(self):
        env = self.env
        while True:
            if not len(self._remaining) and not self._pending:
                if self._class_id is not None and self.class_samples and self.class_samples[-1][2].any():
                    zero = np.zeros(len(self.classes))
                    self.class_samples.append((env.now, zero, zero))  # the network went idle
                self._wake = env.event()
                yield self._wake
                self._last_update_s = env.now
            self._advance()
            self._admit()
            if len(self._rate) < len(self._remaining):  # newly admitted flows: rate set by _allocate
                self._rate = np.concatenate((self._rate, np.zeros(len(self._remaining) - len(self._rate))))
            done = (self._remaining <= _EXACT_TOL * self._size + 1e-6) | (self._finish_s <= env.now)
            if done.any():
                self._retire(done)
            if not len(self._remaining):
                continue
            t_next = self._allocate()
            self._wake = env.event()
            yield env.any_of([env.timeout(max(t_next - env.now, 0.0)), self._wake])
