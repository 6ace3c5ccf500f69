"""The resumable training state: the .npz writer, save/restore of a trainer, the run directory's identity."""

import json

import keras
import numpy as np
import pytest

from nfnet_keras.training import checkpoint
from nfnet_keras.training.optimizers import NFNetSGD
from nfnet_keras.training.plan import RunError
from nfnet_keras.training.sam import NFNetTrainer
from nfnet_keras.weights import formats
from nfnet_keras.weights.run_directory import RunDirectory


def _trainer(units=2, seed=0, layer="predictions"):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units, name=layer)], name="net")
    trainer = NFNetTrainer(model, name="trainer")
    trainer.compile(optimizer=NFNetSGD(0.1, ema_decay=0.9, name="sgd"), loss="mse")
    trainer.optimizer.build(trainer.trainable_variables)
    return trainer


def _values(trainer):
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
    trainer = _trainer()
    trainer.fit(np.ones((4, 3), "float32"), np.zeros((4, 2), "float32"), epochs=2, verbose=0)
    saved = _values(trainer)
    path = tmp_path / "checkpoint.npz"
    assert checkpoint.save_state(trainer, path, step=2)
    fresh = _trainer(seed=1)
    assert any(not np.array_equal(a, b) for a, b in zip(saved, _values(fresh)))
    checkpoint.restore_state(fresh, path)
    assert all(np.array_equal(a, b) for a, b in zip(saved, _values(fresh)))
    assert checkpoint.saved_step(path) == 2


def test_a_state_with_nan_weights_is_not_written(tmp_path):
    trainer = _trainer()
    trainer.model.trainable_variables[0].assign(np.full((3, 2), np.nan, "float32"))
    path = tmp_path / "checkpoint.npz"
    assert not checkpoint.save_state(trainer, path, step=1)
    assert not path.exists() and checkpoint.saved_step(path) == 0


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save_state(_trainer(layer="predictions"), path, step=1)
    with pytest.raises(RunError, match="belongs to a different run"):
        checkpoint.restore_state(_trainer(layer="logits"), path)


def test_a_checkpoint_with_other_shapes_is_refused_naming_the_variable(tmp_path):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save_state(_trainer(units=2), path, step=1)
    with pytest.raises(RunError, match=r"net/predictions/kernel\) has shape \(3, 2\), expected \(3, 3\)"):
        checkpoint.restore_state(_trainer(units=3), path)


def test_a_new_run_directory_records_its_config_and_starts_at_step_0(tmp_path):
    run = RunDirectory(tmp_path / "run")
    assert checkpoint.prepare_model_dir(run, {"variant": "nano", "steps": 5}) == 0
    with open(run.run_config) as handle:
        assert json.load(handle) == {"variant": "nano", "steps": 5}


def test_the_same_run_resumes_from_its_checkpoint_step(tmp_path):
    run = RunDirectory(tmp_path / "run")
    checkpoint.prepare_model_dir(run, {"variant": "nano"})
    checkpoint.save_state(_trainer(), run.checkpoint, step=4)
    assert checkpoint.prepare_model_dir(run, {"variant": "nano"}) == 4


def test_a_directory_of_another_run_is_refused_naming_the_differences(tmp_path):
    run = RunDirectory(tmp_path / "run")
    checkpoint.prepare_model_dir(run, {"variant": "nano", "steps": 5})
    with pytest.raises(RunError, match="steps: 5 there, 6 now"):
        checkpoint.prepare_model_dir(run, {"variant": "nano", "steps": 6})
