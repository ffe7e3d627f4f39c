"""Step model: pipeline schedule, chunked MoE overlap and a whole training step, checked by hand."""

import numpy as np
import pytest
import yaml

from etr_sim.config import load_scenario
from etr_sim.pipeline import run
from etr_sim.sim.step import Compute, MoeBlock, StepPrograms, StepSimulator, pipeline_order
from etr_sim.traffic.collectives import CollectivePlan, FlowSet
from etr_sim.traffic.layout import Layout


def test_1f1b_order_has_warmup_steady_and_drain():
    assert pipeline_order(0, 3, 4, "1f1b") == [("F", 0), ("F", 1), ("F", 2), ("B", 0), ("F", 3), ("B", 1), ("B", 2), ("B", 3)]
    assert pipeline_order(2, 3, 4, "1f1b") == [("F", 0), ("B", 0), ("F", 1), ("B", 1), ("F", 2), ("B", 2), ("F", 3), ("B", 3)]
    for s in range(3):
        order = pipeline_order(s, 3, 4, "1f1b")
        assert sorted(order) == sorted([("F", m) for m in range(4)] + [("B", m) for m in range(4)])


def _compute_only(stages, mbs, f, b, schedule="1f1b"):
    fwd = [[(Compute("f", "attention", np.array([f, f / 2])),) for _ in range(mbs)] for _ in range(stages)]
    bwd = [[(Compute("b", "attention", np.array([b])),) for _ in range(mbs)] for _ in range(stages)]
    none = [[None] * mbs for _ in range(stages)]
    programs = StepPrograms(fwd, bwd, none, none, [()] * stages, schedule)
    return StepSimulator(programs, np.ones(1), np.zeros(1)).run()


@pytest.mark.parametrize("stages,mbs", [(1, 1), (2, 2), (4, 8), (3, 5)])
def test_pipeline_step_time_matches_closed_form(stages, mbs):
    # Uniform stages, free p2p: both schedules take (M + P - 1) * (f + b); the slowest GPU sets f.
    f, b = 1.0, 2.0
    assert _compute_only(stages, mbs, f, b) == pytest.approx((mbs + stages - 1) * (f + b))
    assert _compute_only(stages, mbs, f, b, "gpipe") == pytest.approx((mbs + stages - 1) * (f + b))


def _one_flow_plan(name, size):
    return CollectivePlan(name, (FlowSet(np.array([0]), np.array([1]), np.array([size]), np.array([0, 1]), np.array([0])),))


@pytest.mark.parametrize("chunks", [1, 2, 4])
def test_chunked_moe_block_pipelines_comm_and_compute(chunks):
    # One link of 1 B/s. Dispatch 4 B, experts 4 s, combine 4 B, split into k chunks.
    d, x, c = 4.0, 4.0, 4.0
    blk = MoeBlock(0, tuple(_one_flow_plan("dispatch", d / chunks) for _ in range(chunks)),
                   tuple(np.array([x / chunks]) for _ in range(chunks)),
                   tuple(_one_flow_plan("combine", c / chunks) for _ in range(chunks)))
    programs = StepPrograms([[(blk,)]], [[()]], [[None]], [[None]], [()])
    t = StepSimulator(programs, np.ones(1), np.zeros(1)).run()
    # Dispatches run back to back on the comm stream, combines queue behind them (FIFO):
    # experts of chunk i finish at max(d*(i+1)/k, prev) + x/k; combines start after all dispatches.
    q = 1.0 / chunks
    ends = []
    prev = 0.0
    for i in range(chunks):
        prev = max(d * (i + 1) * q, prev) + x * q
        ends.append(prev)
    comm_free = d
    for e in ends:
        comm_free = max(comm_free, e) + c * q
    assert t == pytest.approx(comm_free)
    assert t <= d + x + c + 1e-9


def test_layout_puts_tp_groups_in_a_node_and_ep_groups_across_dp():
    lay = Layout(tp=4, pp=2, dp=4, ep=2)
    assert lay.num_gpus == 32
    assert list(lay.tp_groups(0)[0]) == [0, 1, 2, 3]
    gpus = lay.stage_gpus(1)
    assert sorted(gpus) == list(range(16, 32))
    # Stage-local index: EP groups are consecutive pairs of data-parallel ranks with the same TP rank.
    assert list(gpus[:4]) == [16, 20, 24, 28]
    assert [list(g) for g in lay.expert_dp_groups(0)[:2]] == [[0, 8], [4, 12]]


TRAINING = {
    "name": "tiny-train",
    "seed": 1,
    "model": {"num_layers": 4, "moe_layers": 2, "hidden_size": 1024, "ffn_hidden_size": 2048, "num_experts": 8,
              "top_k": 2, "num_attention_heads": 8, "num_kv_heads": 8, "vocab_size": 8000},
    "parallelism": {"tp": 2, "pp": 2, "ep": 4, "micro_batch_size": 1, "seq_len": 512, "global_batch": 16},
    "activations": {"kind": "synthetic", "hidden_size": 64},
    "routers": [{"kind": "token_choice", "capacity_factor": 1.25}, {"kind": "etr"}],
    "topology": {"name": "h100-single-leaf", "nodes": 2},
    "step": {"scope": "training_step", "sampled_layers": 1},
    "training": {"steps": 100, "stages": [{"step": 0, "activations": {"cluster_strength": 0.1}},
                                          {"step": 40, "activations": {"cluster_strength": 0.9}}]},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("s") / "train.yaml"
    path.write_text(yaml.safe_dump(TRAINING))
    loaded = load_scenario(path)
    return loaded, run(loaded)


def test_training_step_breakdown_adds_up_and_ratios_are_physical(trained):
    loaded, result = trained
    steps = result.steps
    parts = steps.compute_s + steps.exposed_a2a_s + steps.exposed_other_comm_s + steps.idle_s
    np.testing.assert_allclose(parts, steps.step_s, rtol=1e-6)
    assert ((steps.mfu > 0) & (steps.mfu < 0.8)).all()
    assert (steps.idle_s > 0).all()  # PP=2 with 4 micro-batches has bubbles
    assert (steps.memory_bytes > steps.memory_weights_bytes).all()
    # Layout: 16 GPUs = TP2 x PP2 x DP4; 16 sequences / DP4 = 4 micro-batches per replica.
    ops = result.ops
    assert set(ops[ops.category == "pp"].microbatch.unique()) == {0, 1, 2, 3}
    assert {"tp", "a2a", "pp", "dp"} <= set(ops.category)


def test_training_is_integrated_over_stages(trained):
    loaded, result = trained
    stages = loaded.training_stages
    assert [(a, n) for a, n, _ in stages] == [(0, 40), (40, 60)]
    assert [spec.cluster_strength for _, _, spec in stages] == [0.1, 0.9]
    for router, st in result.steps.groupby("router"):
        total = result.summary.set_index("router").loc[router, "total_training_s"]
        assert total == pytest.approx(40 * st.step_s.iloc[0] + 60 * st.step_s.iloc[1])


def test_padded_token_choice_charges_padding_in_expert_time(trained):
    _, result = trained
    by = result.summary.set_index("router")
    assert by.loc["token_choice", "padding_fraction"] > 0
    assert by.loc["etr", "padding_fraction"] == 0


def test_bad_training_stage_override_is_a_config_error(tmp_path):
    from etr_sim.errors import ConfigError

    data = {**TRAINING, "training": {"steps": 10, "stages": [{"step": 0, "activations": {"cluster_strength": 3}},
                                                             {"step": 20, "activations": {}}]}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    paths = {p.path for p in info.value.problems}
    assert "training.stages[0].activations.cluster_strength" in paths
    assert "training.stages[1].step" in paths


def test_full_recompute_trades_time_for_memory(tmp_path):
    results = {}
    for mode in ("none", "full"):
        path = tmp_path / f"{mode}.yaml"
        path.write_text(yaml.safe_dump({**TRAINING, "memory": {"activation_recompute": mode},
                                        "routers": [{"kind": "etr"}], "training": {"steps": 1}}))
        results[mode] = run(load_scenario(path)).summary.iloc[0]
    assert results["full"].step_s > results["none"].step_s
    assert results["full"].memory_activations_bytes < results["none"].memory_activations_bytes
    # Replaying the forward adds about one forward (1/3 of forward + backward compute) per layer.
    assert results["full"].compute_s == pytest.approx(results["none"].compute_s * 4 / 3, rel=0.1)


def test_link_series_buckets_are_time_weighted_and_bounded():
    from etr_sim.metrics import link_series

    # One class: 100% busy on [0, 1), idle on [1, 3), 50% on [3, 4). Two buckets of 2 s.
    samples = [(0.0, np.array([1.0]), np.array([1.0])), (1.0, np.array([0.0]), np.array([0.0])),
               (3.0, np.array([0.5]), np.array([0.5]))]
    s = link_series(samples, ("nic",), 4.0, bins=2)
    assert list(s.mean_util) == pytest.approx([0.5, 0.25])
    assert list(s.max_util) == pytest.approx([1.0, 0.5])


def test_trace_has_stage_lanes_and_link_counters(trained, tmp_path):
    import json

    from etr_sim.report.trace import write_trace

    _, result = trained
    write_trace(result.ops, "etr", tmp_path / "t.json", result.link_series)
    events = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    assert {e["pid"] for e in events if e["ph"] == "X"} == {0, 1}
    counters = [e for e in events if e["ph"] == "C"]
    assert counters and all(0 <= e["args"]["mean"] <= e["args"]["max"] + 1e-9 <= 100 + 1e-6 for e in counters)
