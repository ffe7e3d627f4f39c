"""Expert placement: rank assignment, locality-aware placement and hot-expert replication."""

import numpy as np
import pytest

from etr_sim.config.scenario import PlacementSpec
from etr_sim.routing.decision import RoutingDecision
from etr_sim.traffic.matrix import dispatch_traffic, expert_rows
from etr_sim.traffic.placement import build_placement, contiguous, locality_aware, round_robin


def test_contiguous_and_round_robin_ranks():
    assert list(contiguous(8, 4, 4).instance_rank) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert list(round_robin(8, 4, 4).instance_rank) == [0, 1, 2, 3, 0, 1, 2, 3]
    p = contiguous(8, 4, 8)  # two EP groups of 4 GPUs
    assert list(p.gpu_of(np.array([0, 5, 7]), np.array([7, 0, 3]))) == [3, 4, 5]
    assert list(p.slot) == [0, 1, 0, 1, 0, 1, 0, 1]


def test_locality_aware_puts_experts_where_their_tokens_are():
    # 2 nodes x 2 ranks, 4 experts; node 0 wants experts 2 and 3, node 1 wants 0 and 1.
    demand = np.array([[0, 1, 9, 8], [7, 6, 0, 1]])
    node = np.array([0, 0, 1, 1])
    ranks = locality_aware(demand, 4, 4, node)
    assert sorted(node[ranks[[2, 3]]]) == [0, 0] and sorted(node[ranks[[0, 1]]]) == [1, 1]
    assert np.bincount(ranks, minlength=4).tolist() == [1, 1, 1, 1]


def _decision(tokens_per_gpu, experts, g, e):
    n = tokens_per_gpu * g
    token = np.arange(n)
    return RoutingDecision(n, e, token, np.asarray(experts), np.ones(n, np.float32), np.zeros(0, int),
                           np.zeros(0, int), np.repeat(np.arange(g), tokens_per_gpu), None, False)


def test_hot_replica_halves_the_hot_gpu_rows_and_conserves_tokens():
    g, e = 4, 4
    src = np.repeat(np.arange(g), 8)
    experts = np.zeros(32, dtype=int)  # every token wants expert 0: a hot spot on rank 0
    dec = _decision(8, experts, g, e)
    node = np.array([0, 0, 1, 1])
    plain = build_placement(PlacementSpec(), e, g, g, node)
    demand = np.array([[16, 0, 0, 0], [16, 0, 0, 0]])
    spec = PlacementSpec(replicate_hot=1, replica_choice="local_first")
    rep = build_placement(spec, e, g, g, node, demand)
    assert rep.slots_per_gpu == 2 and len(rep.instance_expert) == 5
    rows_plain, rows_rep = expert_rows(dec, src, plain), expert_rows(dec, src, rep)
    assert rows_plain.sum() == rows_rep.sum() == 32
    assert rows_rep.sum(axis=1).max() == 16 and rows_plain.sum(axis=1).max() == 32
    # local_first: the replica lives on the other node, so node-1 sources stay on their node.
    m = dispatch_traffic(dec, src, rep, 1.0, "gpu")
    assert m.rows[2:, :2].sum() == 0


def test_padded_buffers_follow_the_chosen_instance():
    g, e = 4, 4
    dec = RoutingDecision(8, e, np.arange(8), np.zeros(8, int), np.ones(8, np.float32), np.zeros(0, int),
                          np.zeros(0, int), np.repeat(np.arange(g), 2), 3, True)
    p = build_placement(PlacementSpec(), e, g, g, np.zeros(4, int))
    m = dispatch_traffic(dec, np.repeat(np.arange(g), 2), p, 1.0, "gpu")
    assert (m.rows == 3).all()  # every source sends every expert a full 3-row buffer
    assert expert_rows(dec, np.repeat(np.arange(g), 2), p).sum() == 3 * g * e


@pytest.mark.parametrize("kind", ["round_robin", "locality_aware"])
def test_placement_kinds_run_end_to_end(root, tmp_path, kind):
    from etr_sim.cli import main

    text = (root / "scenarios/quickstart.yaml").read_text() + f"placement: {{kind: {kind}, replicate_hot: 2}}\n"
    path = tmp_path / "p.yaml"
    path.write_text(text)
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "-q"]) == 0


@pytest.mark.parametrize(
    "placement,path",
    [
        ("{kind: explicit}", "placement.expert_ranks"),
        ("{kind: explicit, expert_ranks: [0, 1]}", "placement.expert_ranks"),
        ("{kind: explicit, expert_ranks: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 99]}", "placement.expert_ranks"),
        ("{kind: round_robin, expert_ranks: [0]}", "placement.expert_ranks"),
        ("{kind: contiguous, replicate_hot: 99}", "placement.replicate_hot"),
        ("{kind: nearest}", "placement.kind"),
    ],
)
def test_bad_placement_names_path_and_value(root, tmp_path, placement, path):
    from etr_sim.config import load_scenario
    from etr_sim.errors import ConfigError

    text = (root / "scenarios/quickstart.yaml").read_text() + f"placement: {placement}\n"
    scen = tmp_path / "p.yaml"
    scen.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_scenario(scen)
    assert any(p.path == path for p in info.value.problems), info.value
    assert str(scen) in str(info.value)
