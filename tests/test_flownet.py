"""Flow network against hand-computed cases: max-min sharing, rate recomputation, latency once per flow."""

import numpy as np
import pytest
import simpy

from etr_sim.sim.flownet import FlowNetwork, maxmin_rates


def run_flows(capacity, latency, flows, starts=None):
    """flows: list of (size_bytes, [link ids]); starts: optional start time per flow. Returns delivery times."""
    env = simpy.Environment()
    net = FlowNetwork(env, np.asarray(capacity, float), np.asarray(latency, float))
    starts = starts or [0.0] * len(flows)
    done = [None] * len(flows)

    def one(i, size, links, t0):
        yield env.timeout(t0)
        offsets = np.array([0, len(links)])
        delivered = yield net.transfer(np.array([size], float), offsets, np.array(links, dtype=np.int64))
        done[i] = float(delivered[0])

    for i, ((size, links), t0) in enumerate(zip(flows, starts)):
        env.process(one(i, size, links, t0))
    env.run()
    return np.array(done), net


def test_single_flow_takes_bytes_over_bandwidth_plus_latency():
    t, _ = run_flows([100e9], [5e-6], [(50e9, [0])])
    assert t[0] == pytest.approx(0.5 + 5e-6)


def test_latency_is_paid_once_per_flow_not_per_link_share():
    # 3-link path: latencies add (cut-through), the bottleneck sets the rate.
    t, _ = run_flows([100.0, 50.0, 100.0], [1.0, 2.0, 3.0], [(100.0, [0, 1, 2])])
    assert t[0] == pytest.approx(100.0 / 50.0 + 6.0)


def test_two_flows_share_a_link_equally_then_the_survivor_speeds_up():
    # 100 B/s link; flows of 100 B and 50 B: both at 50 B/s until t=1, then 100 B/s for the rest.
    t, net = run_flows([100.0], [0.0], [(100.0, [0]), (50.0, [0])])
    assert t[1] == pytest.approx(1.0)
    assert t[0] == pytest.approx(1.5)
    assert net.bytes_carried[0] == pytest.approx(150.0)


def test_late_arrival_triggers_rate_recomputation():
    # Flow A alone at 100 B/s for 0.5 s (50 B done), then B arrives: both at 50 B/s.
    t, _ = run_flows([100.0], [0.0], [(100.0, [0]), (25.0, [0])], starts=[0.0, 0.5])
    assert t[1] == pytest.approx(1.0)  # 25 B at 50 B/s from t=0.5
    assert t[0] == pytest.approx(1.25)  # 50 B left at t=0.5: 25 B by t=1.0, then 25 B at 100 B/s


def test_textbook_maxmin_three_links_gives_different_shares():
    # Links: L0 cap 10, L1 cap 4, L2 cap 10. f0 crosses L0,L1,L2; f1 uses L0; f2 uses L1; f3 uses L2.
    # L1 is the bottleneck: f0 = f2 = 2; then f1 = 10 - 2 = 8 and f3 = 8.
    cap = np.array([10.0, 4.0, 10.0])
    hop_flow = np.array([0, 0, 0, 1, 2, 3])
    hop_link = np.array([0, 1, 2, 0, 1, 2])
    rates = maxmin_rates(cap, hop_flow, hop_link, 4)
    np.testing.assert_allclose(rates, [2.0, 8.0, 2.0, 8.0])


def test_maxmin_rates_never_exceed_capacity_and_are_maxmin_fair():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n_links, n_flows = rng.integers(1, 6), rng.integers(1, 8)
        cap = rng.uniform(1, 10, n_links)
        paths = [rng.choice(n_links, rng.integers(1, n_links + 1), replace=False) for _ in range(n_flows)]
        hop_flow = np.concatenate([[f] * len(p) for f, p in enumerate(paths)])
        hop_link = np.concatenate(paths)
        rates = maxmin_rates(cap, hop_flow, hop_link, n_flows)
        load = np.bincount(hop_link, weights=rates[hop_flow], minlength=n_links)
        assert (load <= cap * (1 + 1e-9)).all()
        # Max-min: every flow crosses a saturated link on which it has the largest rate.
        for f, p in enumerate(paths):
            assert any(load[l] >= cap[l] * (1 - 1e-9) and rates[f] >= rates[hop_flow[hop_link == l]].max() * (1 - 1e-9)
                       for l in p)


def test_same_batch_flows_finish_together_and_batch_event_waits_for_the_last():
    env = simpy.Environment()
    net = FlowNetwork(env, np.array([10.0, 10.0]), np.array([0.0, 0.0]))
    ev = net.transfer(np.array([10.0, 20.0]), np.array([0, 1, 2]), np.array([0, 1]))
    env.run(ev)
    np.testing.assert_allclose(ev.value, [1.0, 2.0])
    assert env.now == pytest.approx(2.0)
