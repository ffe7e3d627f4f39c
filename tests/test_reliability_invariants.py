"""The always-on invariant checks: each fires on a broken input, and a sabotaged simulator or router
is caught (InternalError, CLI exit 1) instead of producing a report."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from etr_sim import invariants
from etr_sim.config.load import load_topology
from etr_sim.errors import InternalError
from etr_sim.routing.decision import RoutingDecision
from etr_sim.sim import flownet
from etr_sim.sim.flownet import FlowNetwork, maxmin_rates
from etr_sim.sim.step import Comm, StepPrograms, StepSimulator
from etr_sim.topology import build_topology
from etr_sim.traffic.collectives import CollectivePlan, flowset


@pytest.fixture(scope="module")
def topo(root):
    return build_topology(load_topology(root / "topologies/h100-single-leaf.yaml", 2))


@pytest.fixture(scope="module")
def root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def a2a_plan(topo, nbytes=1e6) -> CollectivePlan:
    g = topo.num_gpus
    src, dst = np.repeat(np.arange(g), g), np.tile(np.arange(g), g)
    return CollectivePlan("dispatch", (flowset(topo, src, dst, np.full(g * g, nbytes)),))


def one_comm_programs(plan) -> StepPrograms:
    return StepPrograms([[(Comm("dispatch", "a2a", plan),)]], [[()]], [[None]], [[None]], [()])


def decision(token, expert, dropped_token=(), dropped_expert=(), n=4, e=4, capacity=None):
    a = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return RoutingDecision(n, e, a(token), a(expert), np.ones(len(token)), a(dropped_token), a(dropped_expert),
                           np.zeros(n, dtype=np.int64), capacity, False)


# -- routing ------------------------------------------------------------------------------------
def test_decision_checks_accept_a_consistent_decision():
    invariants.check_decision(decision([0, 1, 2, 3], [0, 1, 2, 3], [0], [1], capacity=1), "ok", nominated=5)


@pytest.mark.parametrize("d, nominated, words", [
    (decision([0, 0], [1, 1]), None, "counted twice"),
    (decision([0, 1], [1, 2], [0], [1]), None, "counted twice"),  # (0, 1) both kept and dropped
    (decision([0, 1], [1, 2]), 3, "3 were nominated"),
    (decision([0, 1, 2], [1, 1, 1], capacity=2), None, "above its capacity 2"),
    (decision([0, 9], [1, 1]), None, "out of range"),
])
def test_decision_checks_fire(d, nominated, words):
    with pytest.raises(InternalError, match=words):
        invariants.check_decision(d, "router x", nominated)


# -- network and collectives ------------------------------------------------------------------
def test_maxmin_refuses_an_allocation_above_capacity(monkeypatch):
    # a rate allocator whose bookkeeping undercounts the load it places on links
    with pytest.raises(InternalError, match="above its capacity"):
        invariants.check_link_capacity(np.array([1.0, -5.0]), np.array([10.0, 10.0]))
    rates = maxmin_rates(np.array([10.0, 4.0]), np.array([0, 0, 1]), np.array([0, 1, 1]), 2)
    assert np.allclose(rates, [2.0, 2.0])  # the check passes on a correct allocation


def test_simulator_passes_all_checks_on_a_real_all_to_all(topo):
    plan = a2a_plan(topo)
    sim = StepSimulator(one_comm_programs(plan), topo.capacity_Bps, topo.latency_s)
    t = sim.run()
    assert t >= invariants.plan_lower_bound_s(plan, topo.capacity_Bps) > 0
    assert np.isclose(sim.net.bytes_carried.sum(), invariants.flow_hop_bytes(plan.stages[0]))


def test_too_fast_network_is_caught_by_the_lower_bound(topo, monkeypatch):
    real = flownet.maxmin_rates
    monkeypatch.setattr(flownet, "maxmin_rates", lambda *a, **k: 3.0 * real(*a, **k))  # a bug: 3x max-min
    sim = StepSimulator(one_comm_programs(a2a_plan(topo)), topo.capacity_Bps, topo.latency_s)
    with pytest.raises(InternalError, match="below its lower bound"):
        sim.run()


def test_lost_link_bytes_are_caught(topo, monkeypatch):
    real = FlowNetwork._admit

    def leaky(self):
        real(self)
        self.bytes_carried[0] *= 0.5  # a bug: a link forgets half its bytes

    monkeypatch.setattr(FlowNetwork, "_admit", leaky)
    sim = StepSimulator(one_comm_programs(a2a_plan(topo)), topo.capacity_Bps, topo.latency_s)
    with pytest.raises(InternalError, match="links carried"):
        sim.run()


def test_plan_bytes_and_time_checks_fire(topo):
    plan = a2a_plan(topo)
    with pytest.raises(InternalError, match="started flows of"):
        invariants.check_plan_bytes(plan, [plan.total_bytes * 0.9], "here")
    with pytest.raises(InternalError, match="before it starts"):
        invariants.check_duration("x", 2.0, 1.0, 0.0, "here")
    with pytest.raises(InternalError, match="ran backwards"):
        invariants.check_time(1.0, 2.0, "here")


def test_flow_network_catches_time_running_backwards():
    env = simpy.Environment()
    net = FlowNetwork(env, np.array([1e9]), np.array([0.0]))
    net._last_update_s = 5.0  # corrupted state: the network thinks it is later than the clock
    with pytest.raises(InternalError, match="ran backwards"):
        net._advance()


# -- end to end: the CLI turns a broken invariant into exit 1 ---------------------------------
def test_cli_reports_an_internal_error_and_writes_nothing(root, tmp_path, monkeypatch, capsys):
    from etr_sim.cli import main
    from etr_sim.routing import routers

    real = routers.ExpertChoice.route

    def double_count(self, batch):
        d = real(self, batch)
        from dataclasses import replace

        return replace(d, dropped_token=d.token[:1], dropped_expert=d.expert[:1])  # kept AND dropped

    monkeypatch.setattr(routers.ExpertChoice, "route", double_count)
    out = tmp_path / "run"
    assert main(["run", str(root / "scenarios/quickstart.yaml"), "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert "internal error" in err and "counted twice" in err and "expert_choice" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []
