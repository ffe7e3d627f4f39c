"""What a scenario needs to know about a capture folder before anything runs (JSON only, no torch).

A capture folder (written by ``etr-sim capture``) holds ``capture.json`` plus safetensors shards;
a training-stage series folder holds ``stages.json`` and one capture folder per checkpoint.
This module resolves the path a scenario gives, reads those index files and checks the layer and
stage a scenario asks for, so that ``etr-sim validate`` catches a wrong path, layer or stage.
The shard contents are read by etr_sim.activations.store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CAPTURE_INDEX = "capture.json"
STAGES_INDEX = "stages.json"
CAPTURE_FORMAT = "etr-sim-capture/1"


@dataclass(frozen=True)
class CaptureIndex:
    """The parts of ``capture.json`` that configuration checks need.

    folder: the capture folder; hidden_size: router-input width d; layers: captured layer indices
    (transformer block numbers of the captured model); stage_step: training step of this
    checkpoint when the capture belongs to a stage series, else None.
    """

    folder: Path
    hidden_size: int
    layers: tuple[int, ...]
    num_tokens: int
    stage_step: int | None = None


def resolve_capture_path(path: str) -> Path:
    """Absolute path as given; a relative one is looked up in the working directory, then the repo.

    The repo fallback lets scenarios name shipped data as ``data/activations/...`` from anywhere.
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for base in (Path.cwd(), REPO_ROOT):
        if (base / p).exists():
            return (base / p).resolve()
    return p


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no {file.name} in {file.parent} (not a capture made by etr-sim capture)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {file}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a JSON object at the top level")
    return data


def read_capture_index(folder: Path) -> CaptureIndex:
    """Read ``folder/capture.json``. Raises ValueError (a pydantic-friendly message) on any problem."""
    file = folder / CAPTURE_INDEX
    data = _read_json(file)
    if data.get("format") != CAPTURE_FORMAT:
        raise ValueError(f"{file}: format is {data.get('format')!r}, expected {CAPTURE_FORMAT!r}")
    try:
        hidden = int(data["hidden_size"])
        layers = tuple(int(x["layer"]) for x in data["layers"])
        tokens = int(data["num_tokens"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{file}: missing or malformed entry {exc}") from None
    if hidden < 1 or not layers:
        raise ValueError(f"{file}: needs hidden_size >= 1 and at least one layer")
    stage = data.get("stage", {}).get("step") if isinstance(data.get("stage"), dict) else None
    return CaptureIndex(folder, hidden, layers, tokens, stage)


def read_stage_steps(folder: Path) -> dict[int, Path]:
    """{training step: capture folder} of a stage series (``stages.json``)."""
    file = folder / STAGES_INDEX
    data = _read_json(file)
    try:
        return {int(s["step"]): folder / str(s["path"]) for s in data["stages"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{file}: missing or malformed entry {exc}") from None


def is_stage_series(folder: Path) -> bool:
    return (folder / STAGES_INDEX).is_file()


def open_capture(path: str, stage: int | None) -> CaptureIndex:
    """Resolve ``path`` (+ ``stage`` for a series) to a capture index, or raise ValueError."""
    folder = resolve_capture_path(path)
    if not folder.exists():
        raise ValueError(f"no such capture folder (looked in {Path.cwd()} and {REPO_ROOT})")
    if not folder.is_dir():
        raise ValueError("not a folder (give the capture folder, not a file inside it)")
    if is_stage_series(folder):
        steps = read_stage_steps(folder)
        if stage is None:
            raise ValueError(f"this is a training-stage series; set 'stage' to one of {sorted(steps)}")
        if stage not in steps:
            raise ValueError(f"stage {stage} is not in this series; it has {sorted(steps)}")
        return read_capture_index(steps[stage])
    if stage is not None:
        raise ValueError("'stage' is set but this folder is a single capture, not a stage series (no stages.json)")
    return read_capture_index(folder)


STAGE_CALIBRATION = REPO_ROOT / "data" / "activations" / "stage-calibration.json"


def strength_for_stage(step: int, table: Path = STAGE_CALIBRATION) -> float:
    """Synthetic cluster_strength that imitates the in-project training series at ``step``.

    The table (written by scripts/calibrate_synthetic_stage.py) lists (step, cluster_strength)
    pairs; between them the strength is interpolated linearly in log(1 + step), beyond the last
    step it stays at the last value (no extrapolation). See docs/activations.md.
    """
    import math

    data = _read_json(table)
    try:
        points = sorted((int(p["step"]), float(p["cluster_strength"])) for p in data["points"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{table}: missing or malformed entry {exc}") from None
    if not points:
        raise ValueError(f"{table}: no calibration points")
    if step <= points[0][0]:
        return points[0][1]
    for (s0, v0), (s1, v1) in zip(points, points[1:]):
        if step <= s1:
            t = (math.log1p(step) - math.log1p(s0)) / (math.log1p(s1) - math.log1p(s0))
            return v0 + t * (v1 - v0)
    return points[-1][1]
