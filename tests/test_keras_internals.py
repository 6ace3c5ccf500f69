"""The protected Keras attributes nfnet_keras reads still exist and mean what they meant.

Every entry of KERAS_PROTECTED_ATTRIBUTES is checked by name on the installed
Keras (setup.cfg pins the minor release these tests pass on); the accessors
of nfnet_keras.keras_internals are checked for what the optimizers
and the EMA helpers rely on.
"""

import keras
import numpy as np
import pytest

from nfnet_keras import keras_internals
from nfnet_keras.keras_internals import KERAS_PROTECTED_ATTRIBUTES

OWNERS = {"keras.optimizers.Optimizer": keras.optimizers.Optimizer, "keras.layers.Layer": keras.layers.Layer}


class Wrapper(keras.layers.Layer):
    """A custom layer that holds another layer as an attribute (as NFBlock holds its convolutions)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(2, name="inner")

    def call(self, x):
        return self.inner(x)


@pytest.fixture
def model_with_a_custom_layer():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(Wrapper(name="wrapper")(inputs)))


@pytest.fixture
def variables():
    return [keras.Variable(np.full((2, 3), 1.0, "float32"), name="a"), keras.Variable(np.zeros(4, "float32"), name="b")]


@pytest.fixture
def ema_optimizer(variables):
    """A built Keras optimizer with use_ema=True: it carries every listed attribute."""
    optimizer = keras.optimizers.SGD(0.1, use_ema=True)
    optimizer.build(variables)
    return optimizer


def test_every_listed_attribute_names_a_known_owner_and_a_reason():
    for owner, attribute, why in KERAS_PROTECTED_ATTRIBUTES:
        assert owner in OWNERS and attribute.startswith("_") and why


@pytest.mark.parametrize("owner, attribute", [entry[:2] for entry in KERAS_PROTECTED_ATTRIBUTES], ids=lambda x: x)
def test_listed_attribute_exists_on_the_installed_keras(ema_optimizer, model_with_a_custom_layer, owner, attribute):
    instance = ema_optimizer if owner == "keras.optimizers.Optimizer" else model_with_a_custom_layer
    assert isinstance(instance, OWNERS[owner])
    assert hasattr(instance, attribute), f"{owner}.{attribute} is gone in Keras {keras.__version__}"


def test_variable_index_is_the_position_in_the_built_list(ema_optimizer, variables):
    assert [keras_internals.variable_index(ema_optimizer, v) for v in reversed(variables)] == [1, 0]


def test_built_variables_are_the_build_list_in_order(ema_optimizer, variables):
    assert keras_internals.built_variables(ema_optimizer) == variables


def test_moving_averages_are_aligned_with_the_built_variables(ema_optimizer, variables):
    averages = keras_internals.moving_average_variables(ema_optimizer)
    assert [tuple(a.shape) for a in averages] == [tuple(v.shape) for v in variables]
    assert all(a is not v for a, v in zip(averages, variables))


def test_nested_layers_reach_the_layers_inside_custom_layers(model_with_a_custom_layer):
    names = [layer.name for layer in keras_internals.nested_layers(model_with_a_custom_layer)]
    assert "inner" in names and "wrapper" in names and "head" in names
    assert model_with_a_custom_layer.name not in names
