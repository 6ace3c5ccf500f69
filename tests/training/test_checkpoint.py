"""The resumable training state: the .npz writer, save/restore of a trainer, write faults, unreadable
checkpoints, the run directory's identity, failed starts and finished runs."""

import errno
import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import traceback

import keras
import numpy as np
import pytest

from nfnet_keras.training import checkpoint, plan
from nfnet_keras.training.optimizers import NFNetSGD
from nfnet_keras.training.plan import RunError
from nfnet_keras.training.sam import NFNetTrainer
from nfnet_keras.weights import formats
from nfnet_keras.weights.run_directory import RunDirectory
from support.subprocesses import child_env


def make_trainer(units=2, seed=0, layer="predictions", dropout=None):
    """A compiled, built trainer of a one-layer net (with a dropout layer and its RNG state, if asked).

    Its variable paths do not depend on what this process built before (Keras numbers unnamed layers).
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((3,)), *([keras.layers.Dropout(dropout, seed=seed)] if dropout else [])]
    model = keras.Sequential([*layers, keras.layers.Dense(units, name=layer)], name="net")
    trainer = NFNetTrainer(model, name="trainer")
    trainer.compile(optimizer=NFNetSGD(0.1, ema_decay=0.9, name="sgd"), loss="mse")
    trainer.optimizer.build(trainer.trainable_variables)
    return trainer


def state_values(trainer):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in checkpoint.state_variables(trainer)]


def test_npz_round_trip_gives_back_exactly_the_written_arrays(tmp_path):
    arrays = {
        "v0": np.arange(6, dtype=np.float32).reshape(2, 3),
        "v1": np.asarray(7, dtype=np.int64),
        "paths": np.asarray(["dense/kernel", "nf_net_sgd/iteration"]),
    }
    path = tmp_path / "checkpoint.npz"
    formats.write_npz_atomic(path, arrays)
    back = formats.read_npz(path)
    assert sorted(back) == sorted(arrays)  # and no stray "allow_pickle" entry
    for key, value in arrays.items():
        assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key


def test_npz_writer_refuses_object_arrays_and_writes_nothing(tmp_path):
    path = tmp_path / "checkpoint.npz"
    with pytest.raises(ValueError, match="object array 'names'"):
        formats.write_npz_atomic(path, {"names": np.asarray([1, "x"], dtype=object)})
    assert list(tmp_path.iterdir()) == []


def test_saved_state_restores_weights_optimizer_slots_ema_and_step(tmp_path):
    trainer = make_trainer()
    trainer.fit(np.ones((4, 3), "float32"), np.zeros((4, 2), "float32"), epochs=2, verbose=0)
    saved = state_values(trainer)
    path = tmp_path / "checkpoint.npz"
    assert checkpoint.save_state(trainer, path, step=2)
    fresh = make_trainer(seed=1)
    assert any(not np.array_equal(a, b) for a, b in zip(saved, state_values(fresh)))
    checkpoint.restore_state(fresh, path)
    assert all(np.array_equal(a, b) for a, b in zip(saved, state_values(fresh)))
    assert checkpoint.saved_step(path) == 2


def test_a_state_with_nan_weights_is_not_written(tmp_path):
    trainer = make_trainer()
    trainer.model.trainable_variables[0].assign(np.full((3, 2), np.nan, "float32"))
    path = tmp_path / "checkpoint.npz"
    assert not checkpoint.save_state(trainer, path, step=1)
    assert not path.exists() and checkpoint.saved_step(path) == 0


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save_state(make_trainer(layer="predictions"), path, step=1)
    with pytest.raises(RunError, match="belongs to a different run"):
        checkpoint.restore_state(make_trainer(layer="logits"), path)


def test_a_checkpoint_with_other_shapes_is_refused_naming_the_variable(tmp_path):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save_state(make_trainer(units=2), path, step=1)
    with pytest.raises(RunError, match=r"net/predictions/kernel\) has shape \(3, 2\), expected \(3, 3\)"):
        checkpoint.restore_state(make_trainer(units=3), path)


# ---- write faults --------------------------------------------------------------------------------


def fail_savez_with(error_number, monkeypatch):
    """Makes numpy's savez, the lowest write of the checkpoint, write half a file and then fail."""

    def savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(error_number, os.strerror(error_number))

    monkeypatch.setattr(np, "savez", savez)


def saved_run(tmp_path, step=4):
    """A trained trainer and the path of its checkpoint at `step`."""
    trainer = make_trainer()
    trainer.fit(np.ones((4, 3), "float32"), np.zeros((4, 2), "float32"), epochs=1, verbose=0)
    path = tmp_path / "checkpoint.npz"
    assert checkpoint.save_state(trainer, path, step=step)
    return trainer, path


def test_a_full_disk_keeps_the_previous_checkpoint_bit_identical_and_leaves_no_stray_file(tmp_path, monkeypatch):
    trainer, path = saved_run(tmp_path)
    before = path.read_bytes()
    fail_savez_with(errno.ENOSPC, monkeypatch)
    with pytest.raises(checkpoint.CheckpointWriteError):
        checkpoint.save_state(trainer, path, step=8)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


def test_a_full_disk_is_one_line_naming_the_file_the_reason_the_lost_step_and_the_kept_one(tmp_path, monkeypatch):
    trainer, path = saved_run(tmp_path, step=4)
    fail_savez_with(errno.ENOSPC, monkeypatch)
    with pytest.raises(checkpoint.CheckpointWriteError) as caught:
        checkpoint.save_state(trainer, path, step=8)
    message = str(caught.value)
    assert "\n" not in message
    assert f"could not write the checkpoint of step 8 to {path}: No space left on device" in message
    assert "the last good checkpoint (step 4) is kept; free some disk space and run the same command again" in message


def test_a_failed_first_write_says_that_no_earlier_checkpoint_exists(tmp_path, monkeypatch):
    fail_savez_with(errno.EIO, monkeypatch)
    with pytest.raises(checkpoint.CheckpointWriteError, match="Input/output error; no earlier checkpoint exists"):
        checkpoint.save_state(make_trainer(), tmp_path / "checkpoint.npz", step=2)
    assert os.listdir(tmp_path) == []


def test_a_write_failure_is_a_run_error(tmp_path, monkeypatch):
    fail_savez_with(errno.EACCES, monkeypatch)
    with pytest.raises(RunError, match="Permission denied; no earlier checkpoint exists; make the directory writable"):
        checkpoint.save_state(make_trainer(), tmp_path / "checkpoint.npz", step=2)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_a_write_the_operating_system_refuses_keeps_the_previous_checkpoint(tmp_path):
    """A real refusal, no injection: a file size limit below the checkpoint's size (EFBIG, "File too large")."""
    resource = pytest.importorskip("resource")
    trainer, path = saved_run(tmp_path)
    before = path.read_bytes()
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel ends the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, limits[1]))
    try:
        with pytest.raises(checkpoint.CheckpointWriteError, match="File too large; the last good checkpoint"):
            checkpoint.save_state(trainer, path, step=8)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


# ---- unreadable checkpoints ----------------------------------------------------------------------


def cut_in_half(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path):
    path.write_bytes(b"")


def random_bytes(path):
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def foreign_npz(path):
    with open(path, "wb") as handle:
        np.savez(handle, x=1)


SPOILERS = [cut_in_half, empty, random_bytes, foreign_npz]


def assert_one_line_naming_the_file_and_what_to_do(error, path):
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"cannot resume from {path}: ")
    assert message.endswith("Move it away to start from step 0, or restore a good copy.")
    assert "zipfile" not in "".join(traceback.format_exception(error))


@pytest.mark.parametrize("spoil", SPOILERS)
def test_the_step_of_an_unreadable_checkpoint_is_refused_in_one_line_saying_what_to_do(tmp_path, spoil):
    _, path = saved_run(tmp_path)
    spoil(path)
    with pytest.raises(RunError) as caught:
        checkpoint.saved_step(path)
    assert_one_line_naming_the_file_and_what_to_do(caught.value, path)


@pytest.mark.parametrize("spoil", SPOILERS)
def test_restoring_an_unreadable_checkpoint_is_refused_in_one_line_saying_what_to_do(tmp_path, spoil):
    trainer, path = saved_run(tmp_path)
    spoil(path)
    with pytest.raises(RunError) as caught:
        checkpoint.restore_state(trainer, path)
    assert_one_line_naming_the_file_and_what_to_do(caught.value, path)


def test_a_foreign_npz_is_named_as_not_a_checkpoint_of_train_py(tmp_path):
    path = tmp_path / "checkpoint.npz"
    foreign_npz(path)
    with pytest.raises(RunError, match=r"not a train.py checkpoint \(it lacks count, paths, step\)"):
        checkpoint.saved_step(path)


def test_a_checkpoint_with_damaged_variables_is_refused_when_restored(tmp_path):
    trainer, path = saved_run(tmp_path)
    data = bytearray(path.read_bytes())
    data[200:210] = b"\xff" * 10  # inside v0's data: its CRC no longer matches
    path.write_bytes(bytes(data))
    assert checkpoint.saved_step(path) == 4  # the step alone still reads
    with pytest.raises(RunError) as caught:
        checkpoint.restore_state(trainer, path)
    assert_one_line_naming_the_file_and_what_to_do(caught.value, path)


def test_an_unreadable_checkpoint_stops_the_start_up(tmp_path):
    run = RunDirectory(tmp_path / "run")
    os.makedirs(run.path)
    random_bytes(pathlib.Path(run.checkpoint))
    with pytest.raises(RunError, match="Move it away to start from step 0"):
        checkpoint.prepare_model_dir(run, {"variant": "nano"})


# ---- across backends -----------------------------------------------------------------------------

OTHER_BACKEND = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"


@pytest.mark.skipif(importlib.util.find_spec(OTHER_BACKEND) is None, reason=f"{OTHER_BACKEND} is not installed")
def test_a_checkpoint_restores_on_the_other_backend(tmp_path):
    """Why --backend may change between a run and its resume (plan.OTHER_KEYS)."""
    trainer = make_trainer(dropout=0.5)  # a dropout layer: an RNG state, int64 on TF, uint32 on JAX
    trainer.fit(np.ones((4, 3), "float32"), np.zeros((4, 2), "float32"), epochs=2, verbose=0)
    path = tmp_path / "checkpoint.npz"
    checkpoint.save_state(trainer, path, step=2)
    child = textwrap.dedent(f"""
        import numpy as np
        from nfnet_keras.training import checkpoint
        from test_checkpoint import make_trainer, state_values
        trainer = make_trainer(seed=1, dropout=0.5)
        checkpoint.restore_state(trainer, {str(path)!r})
        saved = np.load({str(path)!r})
        print("RESTORED", all(np.array_equal(v, saved[f"v{{i}}"]) for i, v in enumerate(state_values(trainer))))
    """)
    env = child_env(OTHER_BACKEND)
    env["PYTHONPATH"] = os.path.dirname(__file__) + os.pathsep + env["PYTHONPATH"]
    command = [sys.executable, "-c", child]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert "RESTORED True" in result.stdout, result.stderr[-3000:]


# ---- the run directory ---------------------------------------------------------------------------

SETTINGS = {key: None for key in plan.TRAINING_KEYS + plan.OTHER_KEYS}
SETTINGS.update(variant="nano", global_batch_size=8, epochs=2, learning_rate=0.4, seed=0, dataset="folder:/data/a")
CLASSES = ("cat", "dog")


def config(num_train=100, class_names=CLASSES, **changes):
    """The run config of `SETTINGS` with `changes`, on `num_train` examples of `class_names`."""
    return plan.run_config(dict(SETTINGS, **changes), num_train, class_names)


def started_run(tmp_path, run_config, step=4):
    """A run directory that recorded `run_config` and checkpointed `step`."""
    run = RunDirectory(tmp_path / "run")
    assert checkpoint.prepare_model_dir(run, run_config) == 0
    checkpoint.record_run(run, run_config)
    checkpoint.save_state(make_trainer(), run.checkpoint, step=step)
    return run


def test_a_new_run_directory_is_created_starting_at_step_0_and_holds_nothing_yet(tmp_path):
    run = RunDirectory(tmp_path / "run")
    assert checkpoint.prepare_model_dir(run, config()) == 0
    assert os.path.isdir(run.path) and os.listdir(run.path) == []


def test_a_recorded_config_reads_back_and_no_temporary_file_is_left(tmp_path):
    run = RunDirectory(tmp_path / "run")
    checkpoint.prepare_model_dir(run, config())
    checkpoint.record_run(run, config())
    with open(run.run_config) as handle:
        assert json.load(handle) == config()
    assert os.listdir(run.path) == ["run_config.json"]


def test_the_same_run_resumes_from_its_checkpoint_step(tmp_path):
    run = started_run(tmp_path, config(), step=4)
    assert checkpoint.prepare_model_dir(run, config()) == 4


def test_flags_that_do_not_change_the_training_may_differ_on_resume(tmp_path):
    run = started_run(tmp_path, config())
    resumed = config(cpu_devices=2, checkpoint_every=7, verbose=0, eval_batch_size=16, backend="jax", tpu="v5",
                     jit_compile="true")
    moved = config(dataset="folder:/elsewhere/a", data_dir="/tfds", manual_dir="/manual", skip_corrupt=True)
    assert checkpoint.prepare_model_dir(run, resumed) == 4
    assert checkpoint.prepare_model_dir(run, moved) == 4


def test_a_run_with_other_training_flags_is_refused_in_one_line_naming_each_with_both_values(tmp_path):
    run = started_run(tmp_path, config())
    with pytest.raises(RunError) as caught:
        checkpoint.prepare_model_dir(run, config(epochs=3, learning_rate=0.1))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"--model_dir {run.path} holds a different run (--epochs 2 there, 3 now; ")
    assert "--learning_rate 0.4 there, 0.1 now)" in message
    assert message.endswith(
        "(flags that do not change the training may differ: --cpu_devices, --checkpoint_every, --verbose, "
        "--eval_batch_size, --backend, --tpu, --dataset, --data_dir, --manual_dir, --skip_corrupt, "
        "--model_dir, --preset, --jit_compile)"
    )


def test_other_training_data_at_the_same_path_is_refused(tmp_path):
    run = started_run(tmp_path, config())
    with pytest.raises(RunError, match="training examples 100 there, 90 now; class names: 2 there, 3 now, "):
        checkpoint.prepare_model_dir(run, config(num_train=90, class_names=("cat", "dog", "eel")))


def previous_version_config():
    """The run_config.json of `config()` as the previous version wrote it: with the data's path and the
    checkpoint interval, without class names and --validation_fraction."""
    previous = {key: SETTINGS[key] for key in plan.TRAINING_KEYS if key != "validation_fraction"}
    return dict(previous, dataset="folder:/data/a", checkpoint_every=5, dataset_examples=100)


def test_a_config_of_the_previous_version_is_accepted_for_the_same_training(tmp_path):
    run = started_run(tmp_path, previous_version_config())
    assert checkpoint.prepare_model_dir(run, config(dataset="folder:/moved/a", checkpoint_every=9)) == 4


def test_a_config_of_the_previous_version_refuses_other_training(tmp_path):
    run = started_run(tmp_path, previous_version_config())
    with pytest.raises(RunError, match=r"\(--seed 0 there, 1 now\)"):
        checkpoint.prepare_model_dir(run, config(seed=1))
    with pytest.raises(RunError, match=r"--validation_fraction None there \(not recorded\), 0.1 now"):
        checkpoint.prepare_model_dir(run, config(validation_fraction=0.1))


def test_a_config_left_by_a_start_that_failed_before_its_first_checkpoint_does_not_block(tmp_path):
    run = RunDirectory(tmp_path / "run")
    checkpoint.prepare_model_dir(run, config(epochs=3))
    checkpoint.record_run(run, config(epochs=3))  # and then the start failed
    assert checkpoint.prepare_model_dir(run, config(epochs=4)) == 0
    checkpoint.record_run(run, config(epochs=4))
    with open(run.run_config) as handle:
        assert json.load(handle)["epochs"] == 4


def test_a_model_dir_that_is_a_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "run"
    path.write_text("not a directory")
    with pytest.raises(RunError, match=f"^--model_dir {path} is a file, not a directory: name a directory"):
        checkpoint.prepare_model_dir(RunDirectory(path), config())


def test_a_run_config_that_is_not_json_beside_a_checkpoint_is_refused_saying_what_to_do(tmp_path):
    run = started_run(tmp_path, config())
    with open(run.run_config, "w") as handle:
        handle.write('{"variant": "na')
    with pytest.raises(RunError, match="is not a run config .* delete it to resume with the current flags"):
        checkpoint.prepare_model_dir(run, config())


# ---- finished runs -------------------------------------------------------------------------------


def write_results(run, **results):
    with open(run.results, "w") as handle:
        json.dump(dict({"test_accuracy": 0.5}, **results), handle)


def test_a_run_whose_checkpoint_is_at_the_results_steps_is_finished(tmp_path):
    run = started_run(tmp_path, config(), step=10)
    write_results(run, steps=10)
    assert checkpoint.finished_results(run) == {"test_accuracy": 0.5, "steps": 10}


def test_a_run_without_results_is_not_finished(tmp_path):
    run = started_run(tmp_path, config(), step=10)
    assert checkpoint.finished_results(run) is None


def test_results_of_other_steps_than_the_checkpoint_are_not_a_finished_run(tmp_path):
    run = started_run(tmp_path, config(), step=10)
    write_results(run, steps=20)
    assert checkpoint.finished_results(run) is None


def test_results_without_a_checkpoint_are_not_a_finished_run(tmp_path):
    run = RunDirectory(tmp_path)
    write_results(run, steps=10)
    assert checkpoint.finished_results(run) is None
