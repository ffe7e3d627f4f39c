"""SimPy model of a training step: pipeline stages run programs of ops on a shared flow network.

A *program* is the op list of one (pipeline stage, micro-batch, direction). Every GPU of a stage
runs the same op sequence in lockstep, so a stage is one SimPy process: a compute op lasts as long
as its slowest GPU (stragglers gate the next collective), a communication op lasts until its last
flow is delivered. All stages share one FlowNetwork, so traffic of different stages, EP groups and
TP groups contends for the links it really shares.

Plans and programs are data built outside SimPy (see pipeline.py); this module only times them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Union

import numpy as np
import simpy

from etr_sim.sim.flownet import FlowNetwork
from etr_sim.traffic.collectives import CollectivePlan


@dataclass(frozen=True)
class Compute:
    """Stage-wide compute. seconds: [GPUs of the stage] (the slowest sets the op's length)."""

    name: str
    category: str  # attention | dense_ffn | experts | router | lm_head
    seconds: np.ndarray


@dataclass(frozen=True)
class Comm:
    name: str
    category: str  # tp | a2a | pp | dp
    plan: CollectivePlan


@dataclass(frozen=True)
class Fused:
    """A TP collective fused with the GEMM it feeds: both start together, the op ends with the later."""

    comm: Comm
    compute: Compute


@dataclass(frozen=True)
class MoeBlock:
    """Dispatch -> expert GEMMs -> combine, split into chunks that pipeline on two streams.

    Per chunk c: dispatch[c], experts[c] ([GPUs] seconds), combine[c]. Dispatch and combine share the
    communication stream (FIFO), expert GEMMs use the compute stream; chunk c's experts wait for its
    dispatch and chunk c-1's experts; its combine waits for its experts.
    """

    layer: int
    dispatch: tuple[CollectivePlan, ...]
    experts: tuple[np.ndarray, ...]
    combine: tuple[CollectivePlan, ...]


Op = Union[Compute, Comm, Fused, MoeBlock]


class OpRecord(NamedTuple):
    """One timed op. gpu_max_s/gpu_mean_s: per-GPU busy time of a compute op (straggler = max - mean)."""

    stage: int
    microbatch: int
    direction: str  # F | B | step
    layer: int
    op: str
    category: str
    stream: str  # compute | comm
    start_s: float
    end_s: float
    gpu_max_s: float
    gpu_mean_s: float
    bytes: float


class FlowStats(NamedTuple):
    category: str
    num_flows: int
    bytes: float


@dataclass
class StepRecorder:
    ops: list[OpRecord]
    flows: list[FlowStats]


@dataclass(frozen=True)
class StepPrograms:
    """Everything a step needs, per pipeline stage s and micro-batch m.

    forward[s][m], backward[s][m]: programs; p2p_fwd[s][m]: activations s -> s+1 (None on the last
    stage); p2p_bwd[s][m]: gradients s -> s-1 (None on the first); dp[s]: gradient reduction plans.
    """

    forward: list[list[tuple[Op, ...]]]
    backward: list[list[tuple[Op, ...]]]
    p2p_fwd: list[list[CollectivePlan | None]]
    p2p_bwd: list[list[CollectivePlan | None]]
    dp: list[tuple[CollectivePlan, ...]]
    schedule: str = "1f1b"

    @property
    def stages(self) -> int:
        return len(self.forward)

    @property
    def microbatches(self) -> int:
        return len(self.forward[0])


def pipeline_order(stage: int, stages: int, microbatches: int, schedule: str) -> list[tuple[str, int]]:
    """Op order of one stage. 1F1B: (stages - stage - 1) warm-up forwards, then alternate, then drain."""
    if schedule == "gpipe":
        return [("F", m) for m in range(microbatches)] + [("B", m) for m in range(microbatches)]
    warm = min(stages - stage - 1, microbatches)
    order = [("F", m) for m in range(warm)]
    for i in range(microbatches - warm):
        order += [("F", warm + i), ("B", i)]
    order += [("B", m) for m in range(microbatches - warm, microbatches)]
    return order


class StepSimulator:
    """Runs StepPrograms on one environment and network; ``run()`` returns the step time (s)."""

    def __init__(self, programs: StepPrograms, capacity_Bps: np.ndarray, latency_s: np.ndarray,
                 dp_overlap: str = "after_backward", net_options: dict | None = None):
        self.p = programs
        self.env = simpy.Environment()
        self.net = FlowNetwork(self.env, capacity_Bps, latency_s, **(net_options or {}))
        self.rec = StepRecorder([], [])
        self.dp_overlap = dp_overlap
        env, n_s, n_m = self.env, programs.stages, programs.microbatches
        self.fwd_ready = [[env.event() for _ in range(n_m)] for _ in range(n_s)]
        self.bwd_ready = [[env.event() for _ in range(n_m)] for _ in range(n_s)]
        self.comm_stream = [simpy.Resource(env, 1) for _ in range(n_s)]

    # -- op execution -----------------------------------------------------------------------------
    def _collective(self, plan: CollectivePlan):
        for stage in plan.stages:
            if stage.num_flows:
                self.rec.flows.append(FlowStats(plan.name, stage.num_flows, float(stage.size_bytes.sum())))
                yield self.net.transfer(stage.size_bytes, stage.offsets, stage.links)

    def _record(self, s, m, d, layer, name, cat, stream, start, secs=None, nbytes=0.0):
        mx = float(secs.max()) if secs is not None and len(secs) else 0.0
        mean = float(secs.mean()) if secs is not None and len(secs) else 0.0
        self.rec.ops.append(OpRecord(s, m, d, layer, name, cat, stream, start, self.env.now, mx, mean, nbytes))

    def _comm(self, s, m, d, layer, op: Comm):
        with self.comm_stream[s].request() as req:
            yield req
            start = self.env.now
            yield from self._collective(op.plan)
            self._record(s, m, d, layer, op.name, op.category, "comm", start, nbytes=op.plan.total_bytes)

    def _compute(self, s, m, d, layer, op: Compute):
        start = self.env.now
        yield self.env.timeout(float(op.seconds.max()) if len(op.seconds) else 0.0)
        self._record(s, m, d, layer, op.name, op.category, "compute", start, op.seconds)

    def _moe(self, s, m, d, blk: MoeBlock):
        env, k = self.env, len(blk.experts)
        dispatched = [env.process(self._comm(s, m, d, blk.layer, Comm("dispatch", "a2a", p))) for p in blk.dispatch]
        combines = []
        for c in range(k):
            yield dispatched[c]
            yield from self._compute(s, m, d, blk.layer, Compute("experts", "experts", blk.experts[c]))
            combines.append(env.process(self._comm(s, m, d, blk.layer, Comm("combine", "a2a", blk.combine[c]))))
        yield env.all_of(combines)

    def _run_program(self, s, m, d, program: tuple[Op, ...]):
        layer = -1
        for op in program:
            if isinstance(op, MoeBlock):
                layer = op.layer
                yield from self._moe(s, m, d, op)
            elif isinstance(op, Compute):
                yield from self._compute(s, m, d, layer, op)
            elif isinstance(op, Comm):
                yield from self._comm(s, m, d, layer, op)
            else:  # Fused
                yield self.env.all_of([self.env.process(self._comm(s, m, d, layer, op.comm)),
                                       self.env.process(self._compute(s, m, d, layer, op.compute))])

    # -- pipeline -----------------------------------------------------------------------------------
    def _send(self, s, m, d, plan: CollectivePlan | None, ready: simpy.Event):
        if plan is not None:
            yield from self._comm(s, m, d, -1, Comm(plan.name, "pp", plan))
        ready.succeed()

    def _stage(self, s: int):
        p, env = self.p, self.env
        order = pipeline_order(s, p.stages, p.microbatches, p.schedule)
        last_b_start = None
        for kind, m in order:
            if kind == "F":
                if s > 0:
                    yield self.fwd_ready[s][m]
                yield from self._run_program(s, m, "F", p.forward[s][m])
                if s < p.stages - 1:
                    env.process(self._send(s, m, "F", p.p2p_fwd[s][m], self.fwd_ready[s + 1][m]))
            else:
                if s < p.stages - 1:
                    yield self.bwd_ready[s][m]
                if m == p.microbatches - 1:
                    last_b_start = env.now
                    if self.dp_overlap == "with_last_microbatch":
                        dp_proc = env.process(self._dp(s))
                yield from self._run_program(s, m, "B", p.backward[s][m])
                if s > 0:
                    env.process(self._send(s, m, "B", p.p2p_bwd[s][m], self.bwd_ready[s - 1][m]))
        if self.dp_overlap == "with_last_microbatch" and last_b_start is not None:
            yield dp_proc
        else:
            yield from self._dp(s)

    def _dp(self, s: int):
        for plan in self.p.dp[s]:
            yield from self._comm(s, -1, "step", -1, Comm(plan.name, "dp", plan))

    def run(self) -> float:
        stages = [self.env.process(self._stage(s)) for s in range(self.p.stages)]
        done = self.env.all_of(stages)
        self.env.run(done)
        return float(self.env.now)
