"""Flow-level network: flows share links max-min fairly; rates are recomputed at every start/finish.

A flow crosses a fixed path of directed links. While active it gets its max-min fair share
(progressive filling, as SimGrid's flow model). Its last byte is delivered ``sum(latency of its
links)`` after it leaves the source (cut-through: latency is paid once per flow, not per byte).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

# Relative tolerance for "this flow is finished" and for ties between bottleneck links.
_REL_TOL = 1e-9


def maxmin_rates(capacity_Bps: np.ndarray, hop_flow: np.ndarray, hop_link: np.ndarray, num_flows: int) -> np.ndarray:
    """Max-min fair rates by progressive filling.

    Args:
        capacity_Bps: [L] capacity of each link.
        hop_flow: [H] flow index of each (flow, link) hop.
        hop_link: [H] link index of each hop.
        num_flows: F.
    Returns:
        [F] bytes/s per flow; flows with no hops get +inf.
    """
    num_links = len(capacity_Bps)
    rate = np.full(num_flows, np.inf)
    if len(hop_flow) == 0:
        return rate
    frozen = np.zeros(num_flows, dtype=bool)
    has_hop = np.zeros(num_flows, dtype=bool)
    has_hop[hop_flow] = True
    frozen[~has_hop] = True
    used = np.zeros(num_links)  # [L] bandwidth given to frozen flows
    while not frozen.all():
        live = ~frozen[hop_flow]  # [H]
        count = np.bincount(hop_link[live], minlength=num_links)  # [L] unfrozen flows per link
        loaded = count > 0
        share = np.full(num_links, np.inf)
        share[loaded] = (capacity_Bps[loaded] - used[loaded]) / count[loaded]
        level = share.min()
        tight = share <= level * (1.0 + _REL_TOL)  # [L] links saturated at this level
        newly = np.zeros(num_flows, dtype=bool)
        newly[hop_flow[live & tight[hop_link]]] = True
        rate[newly] = max(level, 0.0)
        frozen |= newly
        new_hops = newly[hop_flow]
        used += np.bincount(hop_link[new_hops], minlength=num_links) * max(level, 0.0)
    return rate


@dataclass
class _Batch:
    event: simpy.Event
    remaining_flows: int
    delivered_s: np.ndarray  # [F_batch] delivery time of each flow (nan until delivered)
    last_delivery_s: float = 0.0


class FlowNetwork:
    """Owns the links and the active flows of one simulation; ``transfer`` is its only entry point."""

    def __init__(self, env: simpy.Environment, capacity_Bps: np.ndarray, latency_s: np.ndarray):
        self.env = env
        self.capacity_Bps = np.asarray(capacity_Bps, dtype=np.float64)
        self.latency_s = np.asarray(latency_s, dtype=np.float64)
        self.bytes_carried = np.zeros(len(self.capacity_Bps))  # [L] total bytes that crossed each link
        self._batches: list[_Batch] = []
        # Active flows, flat arrays [F]: remaining bytes, batch id, index within batch, path latency.
        self._remaining = np.zeros(0)
        self._size = np.zeros(0)
        self._batch_of = np.zeros(0, dtype=np.int64)
        self._index_in_batch = np.zeros(0, dtype=np.int64)
        self._path_latency = np.zeros(0)
        self._offsets = np.zeros(1, dtype=np.int64)
        self._links = np.zeros(0, dtype=np.int64)
        self._rate = np.zeros(0)
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
        batch = _Batch(event, len(size_bytes), np.full(len(size_bytes), np.nan), self.env.now)
        self._batches.append(batch)
        if len(size_bytes) == 0:
            event.succeed(batch.delivered_s)
            return event
        self._pending.append((len(self._batches) - 1, size_bytes, np.asarray(offsets), np.asarray(link_ids)))
        if not self._wake.triggered:
            self._wake.succeed()
        return event

    # -- internals -------------------------------------------------------------------------------
    def _advance(self) -> None:
        elapsed = self.env.now - self._last_update_s
        if elapsed > 0 and len(self._remaining):
            moved = np.minimum(self._rate * elapsed, self._remaining)
            moved[~np.isfinite(self._rate)] = self._remaining[~np.isfinite(self._rate)]
            self._remaining -= moved
            hop_flow = np.repeat(np.arange(len(self._remaining)), np.diff(self._offsets))
            self.bytes_carried += np.bincount(self._links, weights=moved[hop_flow], minlength=len(self.capacity_Bps))
        self._last_update_s = self.env.now

    def _admit(self) -> None:
        for batch_id, size, offsets, links in self._pending:
            n = len(size)
            lat = np.add.reduceat(self.latency_s[links], offsets[:-1]) if len(links) else np.zeros(n)
            lat[offsets[:-1] == offsets[1:]] = 0.0  # reduceat quirk on empty segments
            self._remaining = np.concatenate([self._remaining, size])
            self._size = np.concatenate([self._size, size])
            self._batch_of = np.concatenate([self._batch_of, np.full(n, batch_id)])
            self._index_in_batch = np.concatenate([self._index_in_batch, np.arange(n)])
            self._path_latency = np.concatenate([self._path_latency, lat])
            self._links = np.concatenate([self._links, links])
            self._offsets = np.concatenate([self._offsets, self._offsets[-1] + offsets[1:]])
        self._pending.clear()

    def _retire(self, done: np.ndarray) -> None:
        """Remove finished flows; schedule each batch's completion after its last delivery."""
        now = self.env.now
        for f in np.flatnonzero(done):
            batch = self._batches[self._batch_of[f]]
            t = now + self._path_latency[f]
            batch.delivered_s[self._index_in_batch[f]] = t
            batch.last_delivery_s = max(batch.last_delivery_s, t)
            batch.remaining_flows -= 1
            if batch.remaining_flows == 0:
                self.env.process(self._complete(batch))
        keep = ~done
        lengths = np.diff(self._offsets)
        self._links = self._links[np.repeat(keep, lengths)]
        self._offsets = np.concatenate([[0], np.cumsum(lengths[keep])])
        self._remaining = self._remaining[keep]
        self._size = self._size[keep]
        self._batch_of = self._batch_of[keep]
        self._index_in_batch = self._index_in_batch[keep]
        self._path_latency = self._path_latency[keep]

    def _complete(self, batch: _Batch):
        yield self.env.timeout(batch.last_delivery_s - self.env.now)
        batch.event.succeed(batch.delivered_s)

    def _run(self):
        env = self.env
        while True:
            if not len(self._remaining) and not self._pending:
                self._wake = env.event()
                yield self._wake
            self._advance()
            self._admit()
            done = self._remaining <= _REL_TOL * self._size + 1e-6  # float round-off counts as done
            if done.any():
                self._retire(done)
            if not len(self._remaining):
                continue
            hop_flow = np.repeat(np.arange(len(self._remaining)), np.diff(self._offsets))
            self._rate = maxmin_rates(self.capacity_Bps, hop_flow, self._links, len(self._remaining))
            with np.errstate(divide="ignore", invalid="ignore"):
                ttf = np.where(np.isfinite(self._rate), self._remaining / self._rate, 0.0)  # [F] s to finish
            self._wake = env.event()
            yield env.any_of([env.timeout(float(ttf.min())), self._wake])
