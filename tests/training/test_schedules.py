"""WarmupCosineDecay against DeepMind's formulas.

The reference is DeepMind's code (github.com/deepmind/deepmind-research, nfnets/optim.py and
nfnets/experiment_nfnets.py), not a file of this repository.
"""

import math

import numpy as np
import pytest

import keras
from keras import ops

from nfnet_keras.training.schedules import WarmupCosineDecay

# DeepMind's F0 recipe: ImageNet, batch 4096, 360 epochs, 5 warmup epochs.
IMAGENET = 1281167


def _dm(step, max_val=1.6, num_steps=112602, warmup=5 * IMAGENET / 4096, start=0.0, min_val=0.0):
    """DeepMind's WarmupCosineDecay.__call__, in float64."""
    warmup_val = (max_val - start) * (step / warmup) + start
    cos_itr = (step - warmup) / (num_steps - warmup)
    cos_val = 0.5 * (max_val - min_val) * (1 + math.cos(math.pi * cos_itr)) + min_val
    return warmup_val if step <= warmup else cos_val


def _value(schedule, step):
    return float(ops.convert_to_numpy(schedule(step)))


@pytest.fixture
def f0():
    return WarmupCosineDecay(0.1, global_batch_size=4096, num_train_examples=IMAGENET, epochs=360)


def test_dm_recipe_constants(f0):
    assert f0.peak_value == pytest.approx(1.6)
    assert f0.total_steps == 112602
    assert f0.warmup_steps == pytest.approx(1563.9245605)


def test_step_zero_is_zero(f0):
    assert _value(f0, 0) == 0.0


def test_end_of_warmup(f0):
    # 1563 <= 1563.92 still warms up; 1564 is the first cosine step.
    assert _value(f0, 1563) == pytest.approx(_dm(1563), rel=1e-6)
    assert _value(f0, 1563) == pytest.approx(1.6 * 1563 / 1563.9245605, rel=1e-6)
    assert _value(f0, 1564) == pytest.approx(_dm(1564), rel=1e-6)
    assert _value(f0, 1564) > _value(f0, 1563)
    assert _value(f0, 3000) < _value(f0, 1564)


def test_mid_cosine(f0):
    mid = f0.warmup_steps + (f0.total_steps - f0.warmup_steps) / 2
    assert _value(f0, round(mid)) == pytest.approx(_dm(round(mid)), rel=1e-5)
    assert _value(f0, round(mid)) == pytest.approx(0.8, rel=1e-4)
    for step in (2000, 30000, 90000):
        assert _value(f0, step) == pytest.approx(_dm(step), rel=1e-5)


def test_last_step(f0):
    # float32 (as DeepMind's jnp) resolves the cosine tail to ~1e-7 of the peak.
    assert _dm(112601) < 1e-9
    assert _value(f0, 112601) == pytest.approx(_dm(112601), abs=2e-7)
    assert _value(f0, 112602) == pytest.approx(0.0, abs=1e-12)
    assert _value(f0, 112000) == pytest.approx(_dm(112000), rel=1e-3)


def test_beyond_the_end_stays_at_min_value():
    schedule = WarmupCosineDecay(0.1, 256, total_steps=100, warmup_steps=10, min_value=1e-3)
    assert _value(schedule, 100) == pytest.approx(1e-3)
    assert _value(schedule, 150) == pytest.approx(1e-3)


def test_steps_per_epoch_form_and_start_value():
    schedule = WarmupCosineDecay(0.2, global_batch_size=512, steps_per_epoch=100, epochs=10,
                                 warmup_epochs=1, start_value=0.1)
    assert schedule.total_steps == 1000 and schedule.warmup_steps == 100
    assert _value(schedule, 0) == pytest.approx(0.1)
    assert _value(schedule, 50) == pytest.approx(0.1 + 0.3 * 0.5)
    assert _value(schedule, 100) == pytest.approx(0.4)


def test_zero_warmup_starts_with_cosine():
    schedule = WarmupCosineDecay(0.1, 256, total_steps=10, warmup_steps=0)
    assert _value(schedule, 0) == pytest.approx(0.1)
    assert _value(schedule, 5) == pytest.approx(0.05, rel=1e-6)


def test_invalid_lengths_raise():
    with pytest.raises(ValueError):
        WarmupCosineDecay(0.1, 256, total_steps=10, warmup_steps=10)
    with pytest.raises(ValueError):
        WarmupCosineDecay(0.1, 256)
    with pytest.raises(ValueError):
        WarmupCosineDecay(0.1, 256, total_steps=100)  # warmup_epochs without steps_per_epoch


def test_get_config_round_trip(f0):
    restored = WarmupCosineDecay.from_config(f0.get_config())
    assert restored.get_config() == f0.get_config()
    via_keras = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(f0))
    assert type(via_keras) is WarmupCosineDecay
    for step in (0, 1000, 1563, 1564, 50000, 112602):
        assert _value(via_keras, step) == _value(f0, step)


def test_optimizer_uses_step_before_update():
    schedule = WarmupCosineDecay(0.1, 256, total_steps=10, warmup_steps=2)
    opt = keras.optimizers.SGD(learning_rate=schedule)
    variable = keras.Variable(np.ones((3,), "float32"))
    opt.apply([np.ones((3,), "float32")], [variable])
    # lr(0) = 0: the first step does not move the variable.
    np.testing.assert_array_equal(ops.convert_to_numpy(variable), 1.0)
    assert float(ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(0.05)
