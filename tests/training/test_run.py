"""`train.py` end to end on tiny settings: exact step count, saved model and results, a polite stop on
SIGTERM/SIGINT and the resume after it (also on another number of devices), resume after SIGKILL,
the run directory's identity, clear errors, NaN handling, data parallelism."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from nfnet_keras.data import pipeline, sources
from nfnet_keras.training.preemption import STOPPED_EXIT_CODE
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
from support.subprocesses import stderr_lines

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


def _assert_same_state(actual, expected):
    assert expected.keys() == actual.keys()
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def _interrupt_after_first_checkpoint(run, signal_number, *extra):
    """Starts the TINY run and sends it `signal_number` once its first checkpoint is written.

    Returns:
        (the process' return code, its stderr, seconds from the signal to its exit).
    """
    command = [sys.executable, os.path.join(ROOT, "train.py"), f"--model_dir={run.path}", *TINY, *extra]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    try:
        while not os.path.exists(run.checkpoint) and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert os.path.exists(run.checkpoint), "no checkpoint within 300 s"
        process.send_signal(signal_number)  # mid-run: after the first checkpoint, before the last
        sent = time.time()
        _, stderr = process.communicate(timeout=120)
        return process.returncode, stderr, time.time() - sent
    finally:
        process.kill()
        process.wait()


def test_sigterm_ends_the_run_after_its_step_with_exit_code_75_and_the_same_command_resumes_bit_identical(
    finished, tmp_path
):
    uninterrupted, _ = finished
    run = RunDirectory(tmp_path / "stopped")
    code, stderr, seconds = _interrupt_after_first_checkpoint(run, signal.SIGTERM)
    assert code == STOPPED_EXIT_CODE, stderr[-3000:]
    assert seconds < 30
    stopped_at = int(np.load(run.checkpoint)["step"])
    assert f"Stopped by SIGTERM at step {stopped_at}" in stderr and "Traceback" not in stderr
    assert 2 <= stopped_at <= STEPS

    resumed = _train(run.path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if stopped_at < STEPS:
        assert f"Resumed from step {stopped_at} of {STEPS}" in resumed.stdout
    _assert_same_state(_state(run), _state(uninterrupted))


@pytest.mark.slow
def test_sigkill_mid_run_then_same_command_resumes_to_the_same_weights(finished, tmp_path):
    uninterrupted, _ = finished
    run = RunDirectory(tmp_path / "killed")
    code, _, _ = _interrupt_after_first_checkpoint(run, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert int(np.load(run.checkpoint)["step"]) < STEPS

    resumed = _train(run.path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from step" in resumed.stdout
    _assert_same_state(_state(run), _state(uninterrupted))


@pytest.mark.parametrize(
    "devices_before, devices_after",
    [pytest.param(2, 1, marks=pytest.mark.slow), pytest.param(1, 2, marks=pytest.mark.slow)],
)
def test_a_checkpoint_written_on_some_devices_resumes_on_another_number_at_the_same_global_batch(
    finished, tmp_path, devices_before, devices_after
):
    uninterrupted, _ = finished
    run = RunDirectory(tmp_path / "elastic")
    code, stderr, _ = _interrupt_after_first_checkpoint(run, signal.SIGINT, f"--cpu_devices={devices_before}")
    assert code == STOPPED_EXIT_CODE, stderr[-3000:]
    assert "Stopped by SIGINT" in stderr

    resumed = _train(run.path, f"--cpu_devices={devices_after}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _results(run)["replicas"] == devices_after
    # Another device count sums the gradients in another order: close, not bit-identical.
    assert _results(run)["test_loss"] == pytest.approx(_results(uninterrupted)["test_loss"], rel=1e-3)


@pytest.mark.slow  # a second tiny run with an XLA compile (~1 min on 2 cores); the EMA-under-XLA unit test is fast
def test_jit_compile_true_trains_to_the_weights_of_the_default_step(finished, tmp_path):
    compiled = RunDirectory(tmp_path / "run")
    result = _train(compiled.path, "--jit_compile=true")
    assert result.returncode == 0, result.stderr[-3000:]
    reference, compiled_state = _state(finished[0]), _state(compiled)
    assert compiled_state["step"] == reference["step"] == STEPS
    for path, value in reference.items():
        np.testing.assert_allclose(compiled_state[path], value, rtol=1e-3, atol=1e-5, err_msg=path)


def test_model_dir_holding_a_run_with_other_training_flags_is_refused_naming_them(finished, tmp_path):
    run = RunDirectory(tmp_path / "copy")
    shutil.copytree(finished[0].path, run.path)
    result = _train(run.path, "--seed=4", timeout=300)
    assert result.returncode == 1
    assert "holds a different run" in result.stderr and "seed" in result.stderr
    assert len(stderr_lines(result.stderr)) == 1


def _files(directory):
    """{path: (modification time, bytes)} of every file under `directory`."""
    paths = [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]
    return {path: (os.path.getmtime(path), open(path, "rb").read()) for path in paths}


def test_a_finished_run_run_again_says_so_and_changes_nothing_even_with_other_non_training_flags(finished, tmp_path):
    run = RunDirectory(tmp_path / "copy")
    shutil.copytree(finished[0].path, run.path)
    before = _files(run.path)
    result = _train(run.path, "--checkpoint_every=1", "--eval_batch_size=100", "--verbose=2", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "holds a finished run" in result.stdout
    assert _files(run.path) == before


def test_a_failed_start_leaves_nothing_that_blocks_the_corrected_command(tmp_path):
    run = RunDirectory(tmp_path / "run")
    result = _train(run.path, "--weights=/etc/passwd", timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert not os.path.exists(run.run_config) and not os.path.exists(run.checkpoint)


def test_model_dir_that_is_a_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a directory")
    result = _train(path, timeout=300)
    assert result.returncode == 1
    lines = stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and str(path) in lines[0]


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


@pytest.mark.slow  # a whole train.py run; the hold-out itself is tested in tests/data/test_sources.py
def test_a_flat_class_folder_dataset_trains_with_a_held_out_validation_split(tmp_path):
    from PIL import Image

    for label, name in enumerate(("cats", "dogs")):
        folder = tmp_path / "images" / name
        folder.mkdir(parents=True)
        for i in range(20):
            Image.fromarray(np.full((8, 8, 3), 60 * label + i, np.uint8)).save(folder / f"{i}.png")
    run = RunDirectory(tmp_path / "run")
    flags = [f"--dataset=folder:{tmp_path / 'images'}", "--global_batch_size=8", "--steps=1", "--eval_batch_size=8"]
    result = _train(run.path, *flags, "--validation_fraction=0.2", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Evaluating on 0.2 of the training images" in result.stdout
    assert json.load(open(run.run_config))["dataset_examples"] == 32  # 16 of 20 per class left to train on


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    run = RunDirectory(tmp_path / "run")
    result = _train(run.path, "--learning_rate=1e12", "--clipping=0", "--warmup_epochs=0.01")
    assert result.returncode == 1
    assert "NaN" in result.stderr
    if os.path.exists(run.checkpoint):
        state = np.load(run.checkpoint)
        assert all(np.isfinite(state[key]).all() for key in state.files if state[key].dtype.kind == "f")


# 4-8 min each; tests/training/test_distribution.py checks a step on two devices against one in the default suite.
@pytest.mark.slow
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
