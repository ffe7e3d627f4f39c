"""Atomic outputs: SIGINT/SIGTERM during a run or while writing leaves no partial folder (nor a
temporary one), keeps an older report intact, and says where the run stopped (exit 130)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etr_sim.cli import main
from etr_sim.report import writer

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "scenarios/quickstart.yaml")


def _sigterm_self(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(1.0)  # the handler raises before this returns
    raise AssertionError("SIGTERM was not turned into an interrupt")


def test_sigterm_while_writing_leaves_nothing_and_names_the_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(writer, "write_trace", _sigterm_self)
    out = tmp_path / "run"
    assert main(["run", QUICK, "--out", str(out), "-q"]) == 130
    err = capsys.readouterr().err
    assert "interrupted while writing trace of token_choice" in err and str(out) in err
    assert list(tmp_path.iterdir()) == []  # neither the report nor its temporary folder
    assert signal.getsignal(signal.SIGTERM) is not None


def test_interrupt_while_writing_keeps_the_older_report(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert main(["run", QUICK, "--out", str(out), "-q"]) == 0
    before = (out / "summary.csv").read_bytes()
    monkeypatch.setattr(writer, "write_all", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(["run", QUICK, "--out", str(out), "-q"]) == 130
    assert (out / "summary.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_sigterm_while_simulating_says_how_far_it_got(tmp_path, monkeypatch, capsys):
    import etr_sim.pipeline as pipeline

    real = pipeline._simulate
    calls = []

    def slow(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second variant: one is done
            _sigterm_self()
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_simulate", slow)
    out = tmp_path / "run"
    scen = str(ROOT / "scenarios/h100-nic-200g-vs-400g.yaml")
    import yaml

    data = yaml.safe_load(Path(scen).read_text())
    data["parallelism"].update(seq_len=128, ep=16)
    data["topology"]["nodes"] = 2
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(data))
    assert main(["run", str(small), "--out", str(out), "-q"]) == 130
    err = capsys.readouterr().err
    assert "interrupted while simulating, after 3/6 simulations (last: nic400/etr stage 0)" in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["small.yaml"]


@pytest.mark.slow
def test_real_sigterm_to_a_cli_process(tmp_path):
    """A real signal from outside (timing-dependent, so marker-gated). The quickstart with 8x the
    tokens runs ~8 s, so the signal lands mid-run, not while the finished process exits."""
    import yaml

    scen = tmp_path / "long.yaml"
    data = yaml.safe_load(Path(QUICK).read_text())
    data["parallelism"]["seq_len"] *= 8
    data["activations"]["path"] = str(ROOT / data["activations"]["path"])
    scen.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "etr_sim.cli", "run", str(scen), "--out", str(out), "-q"],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal")
    assert proc.returncode == 130 and "interrupted" in err
    assert not out.exists() and list(tmp_path.iterdir()) == [scen]
