"""CLI end to end: quickstart writes its report; bad input exits 2 with the path; determinism."""

import os
import subprocess
import sys

import pandas as pd

from etr_sim.cli import main


def test_quickstart_runs_and_writes_report(root, tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["run", str(root / "scenarios/quickstart.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("summary.csv", "layers.csv", "scenario.resolved.yaml", "comparison.png", "report.md"):
        assert (out / name).is_file(), name
    summary = pd.read_csv(out / "summary.csv")
    assert summary.router.tolist() == ["token_choice", "expert_choice", "etr"]
    assert (summary.layer_s > 0).all()
    assert (summary.layer_s >= summary.dispatch_s + summary.combine_s).all()
    for router in summary.router:
        assert router in printed
    # Padded token choice sends at least as many bytes as the dropless-shaped ETR on the same tokens.
    tc, etr = summary.set_index("router").loc[["token_choice", "etr"]].itertuples()
    assert tc.inter_node_bytes >= etr.inter_node_bytes


def test_same_seed_gives_byte_identical_summary(root, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["run", str(root / "scenarios/quickstart.yaml"), "--out", str(a)]) == 0
    # A fresh process with another hash seed must agree too.
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    subprocess.run([sys.executable, "-m", "etr_sim.cli", "run", str(root / "scenarios/quickstart.yaml"),
                    "--out", str(b)], check=True, cwd=root, env=env, capture_output=True)
    assert (a / "summary.csv").read_bytes() == (b / "summary.csv").read_bytes()


def test_bad_yaml_exits_2_names_path_and_leaves_no_folder(root, tmp_path, capsys):
    text = (root / "scenarios/quickstart.yaml").read_text().replace("capacity_factor: 1.25", "capacity_factor: -2")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    out = tmp_path / "never"
    assert main(["run", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "routers[0].capacity_factor" in err and "-2" in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]


def test_validate_reports_each_file(root, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nrouters: []\n")
    assert main(["validate", str(root / "scenarios/quickstart.yaml")]) == 0
    assert main(["validate", str(root / "scenarios/quickstart.yaml"), str(bad)]) == 2
    captured = capsys.readouterr()
    assert "quickstart.yaml: ok" in captured.out
    assert "parallelism" in captured.err and "routers" in captured.err


def test_validate_checks_every_point_of_a_sweep(root, tmp_path, capsys):
    assert main(["validate", str(root / "sweeps/nic-bandwidth-x-router.yaml")]) == 0
    assert "nic-bandwidth-x-router.yaml: ok (4 points)" in capsys.readouterr().out
    bad = tmp_path / "bad-sweep.yaml"
    bad.write_text(f"name: b\nscenario: {root / 'scenarios/quickstart.yaml'}\n"
                   "axes:\n  - {path: parallelism.ep, values: [16, 3]}\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "axes[0].values[1]" in err and "not divisible" in err


def test_variants_compare_topologies_side_by_side(root, tmp_path, capsys):
    text = (root / "scenarios/quickstart.yaml").read_text() + (
        "variants:\n"
        "  - {name: nic400, overrides: {}}\n"
        "  - {name: nic200, overrides: {topology: {overrides: {node: {nic: {bandwidth_gbps: 200}}}}}}\n"
    )
    scen = tmp_path / "v.yaml"
    scen.write_text(text)
    out = tmp_path / "v"
    assert main(["run", str(scen), "--out", str(out)]) == 0
    s = pd.read_csv(out / "summary.csv").set_index("router")
    assert list(s.index[:3]) == ["nic400/token_choice", "nic400/expert_choice", "nic400/etr"]
    # Same tokens, half the NIC rate: inter-node bytes equal, dispatch slower (NIC-bound here).
    for r in ("token_choice", "etr"):
        assert s.loc[f"nic200/{r}", "inter_node_bytes"] == s.loc[f"nic400/{r}", "inter_node_bytes"]
        assert s.loc[f"nic200/{r}", "dispatch_s"] > 1.5 * s.loc[f"nic400/{r}", "dispatch_s"]
    # compare: two run folders side by side
    assert main(["compare", str(out), str(out), "--csv", str(tmp_path / "c.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "c.csv")) == 2 * len(s)


def test_bad_variant_override_is_reported_with_its_path(root, tmp_path, capsys):
    text = (root / "scenarios/quickstart.yaml").read_text() + (
        "variants:\n  - {name: bad, overrides: {topology: {overrides: {node: {nic: {bandwidth_gbps: 0}}}}}}\n"
    )
    scen = tmp_path / "v.yaml"
    scen.write_text(text)
    assert main(["validate", str(scen)]) == 2
    err = capsys.readouterr().err
    assert "variants[0]" in err and "bandwidth_gbps" in err


def test_schema_is_json(capsys):
    import json

    assert main(["schema", "scenario"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "routers" in schema["properties"]


def test_compare_rejects_folders_that_are_not_runs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "missing" in err and "no summary.csv" in err


def test_quick_mode_reports_problems_of_the_full_scenario(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nparallelism: {tp: two, ep: 1}\nactivations: {kind: synthetic}\n"
                   "routers: [{kind: etr}]\ntopology: {name: h100-single-leaf}\n")
    assert main(["run", str(bad), "--quick", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "parallelism.tp" in err and "two" in err
    assert not (tmp_path / "o").exists()
