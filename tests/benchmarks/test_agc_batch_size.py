"""The Figure-2 miniature, `benchmarks/agc_batch_size.py`: its `--smoke` preset runs end to end."""

import csv
import importlib.util
import math
import os
import subprocess
import sys

import pytest

from support import REPO_ROOT
from support.subprocesses import child_env

SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "agc_batch_size.py")
CIFAR = os.path.join(REPO_ROOT, "..", "shared", "data", "cifar10_jpeg", "cifar10_jpeg.npz")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CIFAR), reason="needs the CIFAR-10 JPEG copy in ../shared/data")
def test_smoke_preset_trains_each_model_at_each_batch_size_and_writes_csv_and_plot(tmp_path):
    run = subprocess.run(
        [sys.executable, SCRIPT, "--smoke", "--out", str(tmp_path)],
        env=child_env("tensorflow"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "wall time" in run.stdout
    with open(tmp_path / "agc_batch_size.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # The preset: 512 images, one epoch, batch sizes 64 and 256, three networks.
    assert [(r["model"], r["batch_size"], r["epoch"], r["steps"]) for r in rows] == [
        (model, str(batch), "1", str(512 // batch)) for batch in (64, 256) for model in ("nf_agc", "nf_no_agc", "bn")
    ]
    for row in rows:
        assert float(row["peak_learning_rate"]) == pytest.approx(0.1 * int(row["batch_size"]) / 256)
        assert math.isfinite(float(row["train_loss"]))
        assert 0.0 <= float(row["test_accuracy"]) <= 1.0
        # Only the AGC run clips.
        assert math.isfinite(float(row["clip_fraction"])) == (row["model"] == "nf_agc")
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "agc_batch_size.png").stat().st_size > 0
