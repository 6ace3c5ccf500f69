"""nfnet_keras.training.ema: evaluating and saving with NFNetSGD's in-optimizer EMA.

Cases live in tests/scripts/trainer_cases.py (TensorFlow in-process when active; JAX in
one subprocess for the evaluation and checkpoint cases).
"""


import numpy as np
import pytest


import keras  # noqa: E402
from support.subprocesses import CaseRunner  # noqa: E402

from nfnet_keras import keras_internals  # noqa: E402
from nfnet_keras.training.ema import EMACheckpoint, EMAEvaluation, ema_optimizer, ema_weights  # noqa: E402
from nfnet_keras.training.optimizers import NFNetSGD  # noqa: E402

CASES = ["ema_evaluation", "checkpoint_keeps_ema"]


# The JAX cases take ~1.5 min (slow); tests/training/test_distribution.py runs the EMA on JAX by default.
@pytest.fixture(scope="module", params=["tensorflow", pytest.param("jax", marks=pytest.mark.slow)])
def results(request):
    return CaseRunner(request.param, CASES)


@pytest.fixture(scope="module")
def tf_results():
    return CaseRunner("tensorflow", ["save_ema_weights"])


def test_ema_evaluation_logs_val_ema_metrics(results):
    r = results["ema_evaluation"]
    assert {"val_ema_loss", "val_ema_accuracy", "val_loss", "val_accuracy"} <= set(r["keys"])


def test_ema_evaluation_metrics_differ_from_raw(results):
    r = results["ema_evaluation"]
    assert r["ema_vs_raw_max_abs"] > 1e-3  # the EMA is not the raw weights
    assert abs(r["val_ema_loss"] - r["val_loss"]) > 1e-4


def test_ema_evaluation_evaluates_the_ema_weights(results):
    r = results["ema_evaluation"]
    assert r["swapped_in_is_ema"] == 0.0
    assert r["val_ema_loss"] == pytest.approx(r["explicit_ema_loss"], rel=1e-6)


def test_ema_evaluation_restores_raw_weights(results):
    r = results["ema_evaluation"]
    assert r["restored_max_abs"] == 0.0  # same epoch end, before vs after the callback
    assert r["raw_after_context"] == 0.0
    assert r["averages_after_context"] == 0.0


def test_checkpoint_round_trip_keeps_ema(results):
    r = results["checkpoint_keeps_ema"]
    assert r["optimizer"] == "NFNetSGD"
    assert r["iterations"][0] == r["iterations"][1] > 0
    assert r["ema_vs_raw_max_abs"] > 1e-3
    assert r["raw_max_abs"] == 0.0
    assert r["ema_max_abs"] == 0.0


def test_save_ema_weights_loads_into_plain_model(tf_results):
    r = tf_results["save_ema_weights"]
    assert r["ema_vs_raw_max_abs"] > 1e-3
    assert r["function_vs_ema"] == 0.0
    assert r["raw_unchanged"] == 0.0


def test_ema_checkpoint_writes_each_epoch(tf_results):
    r = tf_results["save_ema_weights"]
    assert {"ema_01.weights.h5", "ema_02.weights.h5"} <= set(r["files"])
    assert r["callback_vs_ema"] == 0.0


def _tiny(optimizer):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    x = np.ones((4, 3), "float32")
    model.fit(x, np.zeros((4, 2), "float32"), epochs=3, batch_size=4, verbose=0)
    return model


def test_ema_weights_without_ema_optimizer_raises():
    model = _tiny(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="keeps no weight EMA"):
        with ema_weights(model):
            pass
    with pytest.raises(ValueError, match="ema_decay"):
        ema_optimizer(NFNetSGD(ema_decay=None))


def test_ema_weights_unwraps_loss_scale_optimizer():
    inner = NFNetSGD(ema_decay=0.9)
    assert ema_optimizer(keras.optimizers.LossScaleOptimizer(inner)) is inner


def test_ema_weights_with_keras_use_ema_optimizer():
    # Keras' use_ema overwrites the weights with the EMA at the end of fit,
    # so step the optimizer by hand.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5), loss="mse")
    model.optimizer.build(model.trainable_variables)
    for _ in range(3):
        grads = [np.ones(v.shape, "float32") for v in model.trainable_variables]
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
    raw = [v.numpy() for v in model.trainable_variables]
    averages = [v.numpy() for v in keras_internals.moving_average_variables(model.optimizer)]
    with ema_weights(model):
        inside = [v.numpy() for v in model.trainable_variables]
    assert max(float(np.abs(a - b).max()) for a, b in zip(raw, averages)) > 1e-3
    assert all(np.array_equal(a, b) for a, b in zip(inside, averages))
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(raw, model.trainable_variables))


def test_ema_checkpoint_config_round_trip():
    cb = EMACheckpoint("x_{epoch}.weights.h5", frequency=2)
    clone = EMACheckpoint.from_config(cb.get_config())
    assert clone.filepath == cb.filepath and clone.frequency == 2
    with pytest.raises(ValueError, match="weights.h5"):
        EMACheckpoint("x.keras")


@pytest.mark.parametrize("frequency", [0, 1.5, True])
def test_ema_callbacks_refuse_a_frequency_that_is_not_a_positive_integer(frequency):
    with pytest.raises(ValueError, match="frequency must be a positive integer"):
        EMAEvaluation((np.ones((1, 3)), np.ones((1, 2))), frequency=frequency)
    with pytest.raises(ValueError, match="frequency must be a positive integer"):
        EMACheckpoint("x.weights.h5", frequency=frequency)
