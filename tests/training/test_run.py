"""`train.py` end to end on tiny settings: exact step count, saved model and results, resume after SIGKILL,
clear errors, NaN handling, data parallelism."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from nfnet_keras.data import pipeline, sources
from nfnet_keras.weights.run_directory import (
    CHECKPOINT_FILE,
    EMA_WEIGHTS_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    RESULTS_FILE,
    RUN_CONFIG_FILE,
    RunDirectory,
)
from support import REPO_ROOT as ROOT

# 5 steps in checkpoint chunks of 2, 2 and 1; evaluation at 36 px, not the variant's 32.
STEPS = 5
EVAL_SIZE = 36
TINY = [
    "--variant=nano",
    "--global_batch_size=16",
    f"--steps={STEPS}",
    "--checkpoint_every=2",
    f"--eval_image_size={EVAL_SIZE}",
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


def _results(run):
    with open(run.results) as handle:
        return json.load(handle)


def _state(run):
    """The arrays of the run's checkpoint, by variable path (plus `step`)."""
    arrays = np.load(run.checkpoint)
    state = {str(path): arrays[f"v{i}"] for i, path in enumerate(arrays["paths"])}
    state["step"] = arrays["step"]
    return state


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted TINY run: (its RunDirectory, the completed process)."""
    run = RunDirectory(tmp_path_factory.mktemp("finished") / "run")
    result = _train(run.path)
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


def _accuracy(model, preprocessing):
    """Top-1 accuracy of `model` on the bundled sample's evaluation split, recomputed here."""
    dataset = pipeline.make_eval_dataset(sources.load_source("cifar10_sample"), 250, preprocessing, verify=False)
    correct = total = 0
    for images, labels in dataset:
        logits = keras.ops.convert_to_numpy(model(images.numpy(), training=False))
        correct += int(np.sum(np.argmax(logits, -1) == np.argmax(labels.numpy(), -1)))
        total += len(logits)
    return correct / total, total


def test_a_run_writes_every_file_of_the_run_directory(finished):
    run, result = finished
    for name in (MODEL_FILE, EMA_WEIGHTS_FILE, HISTORY_FILE, RUN_CONFIG_FILE, CHECKPOINT_FILE, RESULTS_FILE):
        assert os.path.exists(run.file(name)), name
    assert "Test accuracy" in result.stdout


def test_steps_trains_exactly_that_many_steps_when_the_checkpoint_interval_does_not_divide_it(finished):
    run, _ = finished
    state = _state(run)
    (iterations,) = [value for path, value in state.items() if path.endswith("/iteration")]
    assert int(iterations) == STEPS and int(state["step"]) == STEPS
    assert _results(run)["steps"] == STEPS
    with open(run.history) as handle:
        assert len(handle.read().splitlines()) == 1 + 3  # header, chunks of 2, 2 and 1 steps


def test_saved_model_carries_the_eval_size_and_the_dataset_class_names(finished):
    run, _ = finished
    model = keras.saving.load_model(run.model)
    assert model.preprocessing.image_size == EVAL_SIZE
    assert model.class_names == sources.load_source("cifar10_sample").class_names


def test_reported_accuracies_are_those_of_the_saved_raw_and_ema_weights(finished):
    run, _ = finished
    results = _results(run)
    model = keras.saving.load_model(run.model)
    raw, count = _accuracy(model, model.preprocessing)
    model.load_weights(run.ema_weights)
    averaged, _ = _accuracy(model, model.preprocessing)
    # One image of slack: a different backend in this process may break a near-tie the other way.
    assert raw == pytest.approx(results["test_accuracy"], abs=1.5 / count)
    assert averaged == pytest.approx(results["ema_test_accuracy"], abs=1.5 / count)


def test_sigkill_mid_run_then_same_command_resumes_to_the_same_weights(finished, tmp_path):
    uninterrupted, _ = finished
    run = RunDirectory(tmp_path / "killed")
    command = [sys.executable, os.path.join(ROOT, "train.py"), f"--model_dir={run.path}", *TINY]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while not os.path.exists(run.checkpoint) and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        assert os.path.exists(run.checkpoint), "no checkpoint within 300 s"
        process.send_signal(signal.SIGKILL)  # mid-run: after the first checkpoint, before the last
    finally:
        process.kill()
        process.wait()
    assert int(np.load(run.checkpoint)["step"]) < STEPS

    resumed = _train(run.path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from step" in resumed.stdout
    expected, actual = _state(uninterrupted), _state(run)
    assert expected.keys() == actual.keys()
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_model_dir_holding_a_different_run_is_refused(tmp_path):
    run = RunDirectory(tmp_path / "run")
    os.makedirs(run.path)
    with open(run.run_config, "w") as handle:
        json.dump({"variant": "micro"}, handle)
    result = _train(run.path)
    assert result.returncode == 1
    assert "holds a different run" in result.stderr and "variant" in result.stderr


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--variant=F9", "Unknown model 'F9'"),
        ("--dataset=imagenet_on_the_moon", "imagenet_on_the_moon"),
        ("--global_batch_size=100000", "fewer than one batch"),
        ("--steps=0", "--steps must be a positive integer, got 0"),
    ],
)
def test_bad_input_fails_before_training_with_a_clear_message(tmp_path, flag, message):
    result = _train(tmp_path / "run", flag, timeout=300)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(RunDirectory(tmp_path / "run").checkpoint)


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
    run = RunDirectory(tmp_path / "run")
    result = _train(run.path, "--learning_rate=1e12", "--clipping=0", "--warmup_epochs=0.01")
    assert result.returncode == 1
    assert "NaN" in result.stderr
    if os.path.exists(run.checkpoint):
        state = np.load(run.checkpoint)
        assert all(np.isfinite(state[key]).all() for key in state.files if state[key].dtype.kind == "f")


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_replicas_report_the_same_metrics_as_one_device(tmp_path, backend):
    """MirroredStrategy (TF) / DataParallel (JAX) over two CPU devices vs one device, same global batch."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    common = ["--stochdepth_rate=0", "--steps=4", f"--backend={backend}"]  # per-replica masks would differ
    results = {}
    for devices in (1, 2):
        run = RunDirectory(tmp_path / f"{backend}_{devices}")
        result = _train(run.path, *common, f"--cpu_devices={devices}", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        results[devices] = _results(run)
    assert results[2]["replicas"] == 2 and results[1]["replicas"] == 1
    assert results[2]["test_loss"] == pytest.approx(results[1]["test_loss"], rel=1e-4)
    assert results[2]["test_accuracy"] == pytest.approx(results[1]["test_accuracy"], abs=0.002)
    assert results[2]["ema_test_accuracy"] == pytest.approx(results[1]["ema_test_accuracy"], abs=0.002)
