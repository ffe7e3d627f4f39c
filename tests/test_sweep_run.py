"""Running sweeps: cache and resume, broken points, executors agree, tables and CLI exit codes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from sweep_helpers import Interrupt, broken_runner, interrupting_runner, write_sweep

from etr_sim.cli import main
from etr_sim.sweep import PoolExecutor, ResultCache, SerialExecutor, load_sweep, run_sweep, write_tables

NIC = "topology.overrides.node.nic.bandwidth_gbps"


@pytest.fixture
def nic_sweep(tmp_path):
    return load_sweep(write_sweep(tmp_path / "in", [{"path": NIC, "name": "nic_gbps", "values": [100, 200, 300, 400]}]))


def test_table_is_tidy_and_physical(nic_sweep, tmp_path):
    out = run_sweep(nic_sweep, SerialExecutor(), tmp_path / "cache", progress=False)
    t = out.table
    assert (out.ran, out.cached, out.failed) == (4, 0, 0)
    assert len(t) == 4 * 2 and list(t.router[:2]) == ["token_choice", "etr"]
    assert (t.status == "ok").all()
    # Traffic does not depend on the NIC; inter-node transfer time does, and falls as the NIC speeds up.
    for _, g in t.groupby("router"):
        assert g.inter_node_bytes.nunique() == 1
        d = g.sort_values("nic_gbps").dispatch_s.to_numpy()
        assert (np.diff(d) <= 1e-9 * d[:-1]).all()  # never slower with a faster NIC (float noise aside)
        assert d[0] > d[-1] * 1.01


def test_rerun_uses_cache_and_gives_same_table(nic_sweep, tmp_path):
    first = run_sweep(nic_sweep, SerialExecutor(), tmp_path / "cache", progress=False)
    again = run_sweep(nic_sweep, SerialExecutor(), tmp_path / "cache", progress=False)
    assert (again.ran, again.cached) == (0, 4)
    pd.testing.assert_frame_equal(first.table, again.table)


def test_resume_after_interruption(nic_sweep, tmp_path):
    """The 'kill' hits the third point: the two finished points are cached, the rerun runs only the rest."""
    with pytest.raises(Interrupt):
        run_sweep(nic_sweep, SerialExecutor(), tmp_path / "cache", runner=interrupting_runner, progress=False)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    assert not list((tmp_path / "cache").glob(".*"))  # no temp files left behind
    resumed = run_sweep(nic_sweep, SerialExecutor(), tmp_path / "cache", progress=False)
    assert (resumed.ran, resumed.cached, resumed.failed) == (2, 2, 0)
    fresh = run_sweep(nic_sweep, SerialExecutor(), tmp_path / "fresh", progress=False)
    pd.testing.assert_frame_equal(resumed.table, fresh.table)


def test_corrupt_cache_files_are_redone(nic_sweep, tmp_path):
    cache_dir = tmp_path / "cache"
    first = run_sweep(nic_sweep, SerialExecutor(), cache_dir, progress=False)
    keys = [p.key for p in nic_sweep.points]
    cache = ResultCache(cache_dir)
    text = cache.path(keys[0]).read_text()
    cache.path(keys[0]).write_text(text[: len(text) // 2])  # truncated
    doc = json.loads(cache.path(keys[1]).read_text())
    doc["payload"]["rows"][0]["layer_s"] *= 2  # edited: checksum no longer matches
    cache.path(keys[1]).write_text(json.dumps(doc))
    doc = json.loads(cache.path(keys[2]).read_text())
    doc["version"] = "0.0.0-old"  # another etr-sim version
    cache.path(keys[2]).write_text(json.dumps(doc))
    assert cache.get(keys[0]) is None and cache.get(keys[1]) is None and cache.get(keys[2]) is None
    again = run_sweep(nic_sweep, SerialExecutor(), cache_dir, progress=False)
    assert (again.ran, again.cached, again.redone_corrupt) == (3, 1, 3)
    pd.testing.assert_frame_equal(first.table, again.table)


def test_broken_point_does_not_stop_the_sweep(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path / "in", [{"path": NIC, "name": "nic_gbps", "values": [100, 123, 400]}]))
    pool = PoolExecutor(2)
    try:
        out = run_sweep(sweep, pool, tmp_path / "cache", runner=broken_runner, progress=False)
    finally:
        pool.close()
    assert (out.ran, out.failed) == (3, 1)
    bad = out.table[out.table.point == 1]
    assert len(bad) == 1 and bad.status.iloc[0] == "failed" and "deliberately broken" in bad.error.iloc[0]
    assert (out.table[out.table.point != 1].status == "ok").sum() == 4
    # The failure is not cached: a rerun retries it (and only it).
    again = run_sweep(sweep, SerialExecutor(), tmp_path / "cache", progress=False)
    assert (again.ran, again.cached, again.failed) == (1, 2, 0)


def test_pool_matches_serial_and_files_round_trip(nic_sweep, tmp_path):
    serial = run_sweep(nic_sweep, SerialExecutor(), tmp_path / "c1", progress=False)
    pool = PoolExecutor(2)
    try:
        pooled = run_sweep(nic_sweep, pool, tmp_path / "c2", progress=False)
    finally:
        pool.close()
    pd.testing.assert_frame_equal(serial.table, pooled.table)
    write_tables(nic_sweep, pooled, tmp_path / "out")
    back = pd.read_parquet(tmp_path / "out" / "results.parquet")
    pd.testing.assert_frame_equal(back, pooled.table, check_dtype=False)
    assert len(pd.read_csv(tmp_path / "out" / "results.csv")) == len(pooled.table)


def test_dask_local_cluster_matches_local_pool(nic_sweep, tmp_path):
    pytest.importorskip("distributed")
    from etr_sim.sweep import DaskExecutor

    pool = PoolExecutor(2)
    try:
        pooled = run_sweep(nic_sweep, pool, tmp_path / "c1", progress=False)
    finally:
        pool.close()
    dask = DaskExecutor(local_workers=2)
    try:
        dasked = run_sweep(nic_sweep, dask, tmp_path / "c2", progress=False)
    finally:
        dask.close()
    assert dasked.ran == 4
    pd.testing.assert_frame_equal(pooled.table, dasked.table)


def test_cli_sweep_exit_codes(tmp_path, capsys):
    f = write_sweep(tmp_path / "in", [{"path": NIC, "name": "nic_gbps", "values": [200, 400]},
                                      {"path": "parallelism.seq_len", "name": "tokens", "values": [4096, 4096]}],
                    combine="zip", plot={"metric": "dispatch_s", "relative_to": "token_choice", "axes": ["nic_gbps"]})
    out = tmp_path / "out"
    assert main(["sweep", str(f), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert (out / "results.parquet").is_file() and (out / "points.csv").is_file()
    assert [p.name for p in (out / "plots").iterdir()] == ["dispatch_s_rel_token_choice_vs_nic_gbps.png"]  # plot.axes
    assert "2 run, 0 from cache" in capsys.readouterr().out
    assert main(["sweep", str(f), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert "0 run, 2 from cache" in capsys.readouterr().out

    bad = write_sweep(tmp_path / "bad", [{"path": "model.nope", "values": [1]}])
    assert main(["sweep", str(bad), "--out", str(tmp_path / "o2"), "--no-progress"]) == 255  # 2: two failed points
    err = capsys.readouterr().err
    assert str(bad) in err and "axes[0].path" in err and "model.nope" in err


def test_cli_exit_code_counts_failed_points(tmp_path, monkeypatch, capsys):
    import etr_sim.pipeline

    real = etr_sim.pipeline.run

    def flaky(loaded):
        if loaded.topology.node.nic.bandwidth_gbps in (123, 124):
            raise RuntimeError("deliberately broken point")
        return real(loaded)

    monkeypatch.setattr(etr_sim.pipeline, "run", flaky)  # --workers 1 runs points in this process
    f = write_sweep(tmp_path / "in", [{"path": NIC, "name": "nic_gbps", "values": [123, 400, 124]}],
                    set={"parallelism.seq_len": 512})
    out = tmp_path / "out"
    assert main(["sweep", str(f), "--out", str(out), "--workers", "1", "--no-progress"]) == 2  # two failed
    captured = capsys.readouterr()
    assert "2 failed" in captured.out and "failed point 0: RuntimeError: deliberately broken point" in captured.err
    points = pd.read_csv(out / "points.csv")
    assert list(points.status) == ["failed", "ok", "failed"]


def test_cli_sweep_exit_code_caps_and_usage(tmp_path, monkeypatch):
    from etr_sim import cli
    from etr_sim.sweep import run as sweep_run

    real = sweep_run.run_sweep

    def many_failed(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), failed=250)

    monkeypatch.setattr(sweep_run, "run_sweep", many_failed)
    f = write_sweep(tmp_path / "in", [{"path": NIC, "name": "nic_gbps", "values": [400]}], set={"parallelism.seq_len": 512})
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "--workers", "1", "--no-progress"]) == 101
    assert cli.main(["sweep", str(f), "--workers", "0"]) == 255  # a usage error is not "two points failed"


@pytest.mark.slow
def test_sigkill_midway_then_resume(tmp_path):
    """A real kill -9 of `etr-sim sweep` while it runs; the restart redoes only unfinished points."""
    import os
    import signal
    import subprocess
    import sys
    import time

    values = [100, 150, 200, 250, 300, 350, 400, 450]
    f = write_sweep(tmp_path / "in", [{"path": NIC, "name": "nic_gbps", "values": values}],
                    set={"parallelism.seq_len": 512})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "etr_sim.cli", "sweep", str(f), "--out", str(out), "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((out / "points").glob("*.json"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "points").glob("*.json")))
    assert 2 <= done < len(values)
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert f"{len(values) - done} run, {done} from cache, 0 failed" in res.stdout


def test_unreachable_scheduler_is_bad_input():
    """A ConfigError, which the CLI turns into exit code 2 with the message."""
    pytest.importorskip("distributed")
    from etr_sim.errors import ConfigError
    from etr_sim.sweep import DaskExecutor

    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler") as err:
        DaskExecutor(scheduler="tcp://127.0.0.1:9", connect_timeout_s=1)
    assert err.value.file == "--scheduler" and err.value.problems[0].value == "tcp://127.0.0.1:9"
