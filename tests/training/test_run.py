"""`train.py` end to end on tiny settings: resume after SIGKILL, clear errors, NaN handling."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from support import REPO_ROOT as ROOT
TINY = [
    "--variant=nano",
    "--global_batch_size=16",
    "--steps=6",
    "--checkpoint_every=2",
    "--eval_batch_size=250",
    "--seed=3",
    "--verbose=0",
]


def _train(model_dir, *extra, timeout=600, env=None):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), f"--model_dir={model_dir}", *TINY, *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def _final_weights(model_dir):
    arrays = np.load(os.path.join(model_dir, "checkpoint.npz"))
    return {key: arrays[key] for key in arrays.files if key != "paths"}


def test_default_settings_train_evaluate_and_write_results(tmp_path):
    result = _train(tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["steps"] == 6
    assert 0.0 <= results["test_accuracy"] <= 1.0 and 0.0 <= results["ema_test_accuracy"] <= 1.0
    for name in ("model.keras", "ema.weights.h5", "history.csv", "run_config.json", "checkpoint.npz"):
        assert (tmp_path / "run" / name).exists(), name
    assert "Test accuracy" in result.stdout


def test_sigkill_mid_run_then_same_command_resumes_to_the_same_weights(tmp_path):
    reference = _train(tmp_path / "uninterrupted")
    assert reference.returncode == 0, reference.stderr[-3000:]

    model_dir = tmp_path / "killed"
    command = [sys.executable, os.path.join(ROOT, "train.py"), f"--model_dir={model_dir}", *TINY]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = model_dir / "checkpoint.npz"
    deadline = time.time() + 300
    try:
        while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        assert checkpoint.exists(), "no checkpoint within 300 s"
        process.send_signal(signal.SIGKILL)  # mid-run: after the first checkpoint, before the last
    finally:
        process.kill()
        process.wait()
    assert int(np.load(checkpoint)["step"]) < 6

    resumed = _train(model_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from step" in resumed.stdout
    expected, actual = _final_weights(tmp_path / "uninterrupted"), _final_weights(model_dir)
    assert expected.keys() == actual.keys()
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_model_dir_holding_a_different_run_is_refused(tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "run_config.json").write_text(json.dumps({"variant": "micro"}))
    result = _train(model_dir)
    assert result.returncode == 1
    assert "holds a different run" in result.stderr and "variant" in result.stderr


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--variant=F9", "Unknown NFNet variant"),
        ("--dataset=imagenet_on_the_moon", "imagenet_on_the_moon"),
        ("--global_batch_size=100000", "fewer than one batch"),
    ],
)
def test_bad_input_fails_before_training_with_a_clear_message(tmp_path, flag, message):
    result = _train(tmp_path / "run", flag, timeout=300)
    assert result.returncode == 1
    assert message in result.stderr
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_folder_with_one_class_is_refused(tmp_path):
    from PIL import Image

    folder = tmp_path / "images" / "cats"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(folder / f"{i}.png")
    result = _train(tmp_path / "run", f"--dataset=folder:{tmp_path / 'images'}", timeout=300)
    assert result.returncode == 1
    assert "class" in result.stderr


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    model_dir = tmp_path / "run"
    result = _train(model_dir, "--learning_rate=1e12", "--clipping=0", "--warmup_epochs=0.01")
    assert result.returncode == 1
    assert "NaN" in result.stderr
    if (model_dir / "checkpoint.npz").exists():
        state = np.load(model_dir / "checkpoint.npz")
        assert all(np.isfinite(state[key]).all() for key in state.files if state[key].dtype.kind == "f")


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_replicas_report_the_same_metrics_as_one_device(tmp_path, backend):
    """MirroredStrategy (TF) / DataParallel (JAX) over two CPU devices vs one device, same global batch."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    common = ["--stochdepth_rate=0", "--steps=4", f"--backend={backend}"]  # per-replica masks would differ
    results = {}
    for devices in (1, 2):
        model_dir = tmp_path / f"{backend}_{devices}"
        result = _train(model_dir, *common, f"--cpu_devices={devices}", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        results[devices] = json.loads((model_dir / "results.json").read_text())
    assert results[2]["replicas"] == 2 and results[1]["replicas"] == 1
    assert results[2]["test_loss"] == pytest.approx(results[1]["test_loss"], rel=1e-4)
    assert results[2]["test_accuracy"] == pytest.approx(results[1]["test_accuracy"], abs=0.002)
    assert results[2]["ema_test_accuracy"] == pytest.approx(results[1]["ema_test_accuracy"], abs=0.002)
