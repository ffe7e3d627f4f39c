"""Resource guard: estimate a scenario's peak memory and flow count before running it, and refuse a
run that would not fit (the machine's available memory, or ``--max-memory``).

The estimate is a sum of the large arrays the pipeline holds at once, computed from the validated
scenario and topology spec alone (no topology is built, nothing is allocated), so it is cheap even
for absurd sizes. Terms, each a documented assumption (bytes):

- ``activations``: one router-input batch of a pipeline stage, [N, d] float32 with N = GPUs of the
  stage x tokens_per_gpu and d = activations.hidden_size, plus ``ACT_WORK_COPIES`` working copies
  (the GrAP / gate router's normalised copy; generation writes in place). Captured data holds each
  distinct captured token once instead: the stored capture (float16, every used layer), one layer
  as [U, d] float32 plus its working copies, and an int64 row index per token.
- ``routing``: per router, the [N, E] float32 score tensors alive while routing
  (``SCORE_COPIES``: logits, probabilities, top-k / sort buffers), plus the kept decisions of every
  sampled batch (``DECISION_BYTES_PER_ASSIGNMENT`` per (token, expert) assignment: token, expert,
  weight, group and source index arrays).
- ``flows``: every collective plan of the step is built before SimPy runs. The all-to-all of one
  sample is G_s^2 flows (direct) with ``HOPS_PER_FLOW`` links each; dispatch and combine, forward and
  backward, ``moe_chunks`` chunks; FLOW_BYTES per flow + 8 per hop. The flow network keeps the
  concurrently active flows in ``NET_COLUMNS`` float64 columns.
- ``topology``: the networkx graph (``GRAPH_BYTES_PER_ELEMENT`` per node or edge) plus dense route
  tables of G^2 int64 entries (``ROUTE_TABLES``) and per-link arrays.
- ``tables``: the per-op record list and result frames: ``OP_RECORD_BYTES`` per timed op.

The process baseline (interpreter, torch, pandas) is not estimated: it is measured (VmRSS) when the
guard runs and added, so the total compares with the measured peak RSS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from etr_sim.errors import ConfigError, problem

ACT_WORK_COPIES = 1
SCORE_COPIES = 6
DECISION_BYTES_PER_ASSIGNMENT = 48
HOPS_PER_FLOW = 5
FLOW_BYTES = 40  # src, dst, size (8 B each), offset, and the scaled size copy
NET_COLUMNS = 10
GRAPH_BYTES_PER_ELEMENT = 1000
ROUTE_TABLES = 4
OP_RECORD_BYTES = 300

_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30, "TIB": 2**40, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_bytes(text: str) -> int:
    """'2GB', '1.5 GiB', '800MB', '123' -> bytes. ConfigError (naming --max-memory) if unreadable."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in _UNITS or float(m.group(1)) <= 0:
        raise ConfigError("--max-memory", problem("max_memory", "expected a positive size such as 2GB, 512MiB", text))
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _meminfo_kb(key: str, path: str = "/proc/meminfo") -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read (the guard then only
    applies ``--max-memory``)."""
    kb = _meminfo_kb("MemAvailable")
    return kb * 1024 if kb is not None else None


def current_rss_bytes() -> int:
    """Resident set size of this process now (VmRSS), 0 where unknown."""
    kb = _meminfo_kb("VmRSS", "/proc/self/status")
    return kb * 1024 if kb is not None else 0


@dataclass(frozen=True)
class Estimate:
    """Peak memory (bytes) by term, flows, and the knobs that shrink the largest terms."""

    terms: dict = field(default_factory=dict)  # name -> bytes
    flows: int = 0  # flows of every collective plan of one step, one router
    baseline_bytes: int = 0

    @property
    def peak_bytes(self) -> float:
        return float(sum(self.terms.values())) + self.baseline_bytes

    def largest(self) -> str:
        return max(self.terms, key=self.terms.get)


KNOBS = {
    "activations": "fewer tokens (parallelism.seq_len / micro_batch_size) or a smaller activations.hidden_size",
    "routing": "fewer tokens per GPU, fewer routers, or fewer step.sampled_layers / step.sampled_microbatches",
    "flows": "fewer GPUs per pipeline stage (topology nodes, parallelism.pp), fewer step.sampled_layers / "
             "sampled_microbatches, or overlap.moe_chunks: 1",
    "topology": "fewer GPUs (topology.nodes)",
    "tables": "fewer micro-batches (parallelism.global_batch) or model layers",
}


def _activation_bytes(act, n: int, d: int) -> float:
    """Bytes of one routed batch (see the module doc): [N, d] float32 (+ copies), or for captured
    data the capture, one [U, d] float32 layer (+ copies) and the [N] row index."""
    if act.kind != "captured":
        return 4.0 * n * d * (1 + ACT_WORK_COPIES)
    u = act.index.num_tokens
    return 2.0 * u * d * len(set(act.use_layers)) + 4.0 * u * d * (1 + ACT_WORK_COPIES) + 8.0 * n


def _scenario_terms(s, topo_spec) -> tuple[dict, int]:
    """Memory terms (bytes) and flow count of one scenario (variant)."""
    from etr_sim.config.scenario import Scenario  # noqa: F401  (documentation: s is a Scenario)

    par, m, st = s.parallelism, s.model, s.step
    g = topo_spec.nodes * topo_spec.node.gpus
    pp = max(par.pp, 1)
    g_s = max(g // pp, 1)  # GPUs of one pipeline stage
    n = g_s * par.tokens_per_gpu  # tokens of one routed batch
    d = s.activations.hidden_size
    e = m.num_experts
    training = st.scope == "training_step"
    dp = par.dp or max(g // (par.tp * pp), 1)
    n_mb = 1
    if training:
        gb = par.global_batch or par.micro_batch_size * dp
        n_mb = max(gb // max(par.micro_batch_size * dp, 1), 1)
    moe_per_stage = max(-(-m.moe_layers // pp), 1)
    samples_per_stage = min(st.sampled_layers, moe_per_stage) * min(st.sampled_microbatches, n_mb)
    samples = samples_per_stage * pp
    routers = len(s.routers)
    k = m.top_k
    terms = {
        "activations": _activation_bytes(s.activations, n, d),
        "routing": 4.0 * n * e * SCORE_COPIES + routers * samples * n * k * DECISION_BYTES_PER_ASSIGNMENT,
    }
    chunks = s.overlap.moe_chunks
    a2a_flows = g_s * g_s
    plans_per_sample = 4 * chunks  # dispatch + combine, forward + backward
    flows = samples * plans_per_sample * a2a_flows
    flow_bytes = FLOW_BYTES + 8 * HOPS_PER_FLOW
    # plans of one router are alive together; the network holds at most one stage's all-to-all per
    # pipeline stage at once
    terms["flows"] = float(flows * flow_bytes + pp * a2a_flows * (NET_COLUMNS * 8 + 8 * HOPS_PER_FLOW))
    # graph (GPUs, NICs, switches and their links: ~8 elements per GPU); intra-node route tables
    terms["topology"] = float(GRAPH_BYTES_PER_ELEMENT * 8 * g + ROUTE_TABLES * 8 * g * topo_spec.node.gpus)
    layers_per_stage = max(m.layers // pp, 1)
    ops = routers * pp * n_mb * layers_per_stage * (8 if training else 4) * 2
    terms["tables"] = float(OP_RECORD_BYTES * ops)
    return terms, flows


def estimate(loaded) -> Estimate:
    """Peak-memory estimate of ``etr-sim run`` on ``loaded`` (a LoadedScenario): the worst variant."""
    best: tuple[dict, int] | None = None
    for _, sub in loaded.runs():
        terms, flows = _scenario_terms(sub.scenario, sub.topology)
        if best is None or sum(terms.values()) > sum(best[0].values()):
            best = (terms, flows)
    assert best is not None
    return Estimate(best[0], best[1], current_rss_bytes())


def check(loaded, max_memory_bytes: int | None = None) -> Estimate:
    """Refuse (ConfigError naming the scenario, exit 2) a run whose estimate exceeds the limit: the
    smaller of ``max_memory_bytes`` and the memory available now. Returns the estimate."""
    est = estimate(loaded)
    avail = available_memory_bytes()
    limits = [(x, w) for x, w in ((max_memory_bytes, "--max-memory"),
                                  (None if avail is None else avail + est.baseline_bytes, "available memory"))
              if x is not None]
    if not limits:
        return est
    limit, what = min(limits, key=lambda t: t[0])
    if est.peak_bytes > limit:
        big = est.largest()
        parts = ", ".join(f"{k} {v / 1e9:.3g} GB" for k, v in sorted(est.terms.items(), key=lambda t: -t[1]))
        raise ConfigError(loaded.source, problem(
            "", f"estimated peak memory {est.peak_bytes / 1e9:.3g} GB exceeds {what} {limit / 1e9:.3g} GB "
                f"({parts}; process baseline {est.baseline_bytes / 1e9:.3g} GB; {est.flows} flows). "
                f"Largest term: {big}; turn it down with {KNOBS[big]}"))
    return est


__all__ = ["Estimate", "available_memory_bytes", "check", "current_rss_bytes", "estimate", "parse_bytes"]
