"""The protected Keras attributes this package relies on, listed and read in one place.

Keras 3 gives a custom optimizer no public way to find the slot of a variable
inside `update_step` (its own optimizers call `_get_variable_index`), to get
the variable list it was built with, or to reach the averages of a
`use_ema=True` optimizer; and no public way to list every layer nested inside
a model (layers held by custom layers included). Those reads happen only here,
through the functions below, and `tests/test_keras_internals.py` checks every attribute in
`KERAS_PROTECTED_ATTRIBUTES` on the installed Keras, so a Keras release that
renames or reshapes one fails that test by name. `setup.cfg` pins Keras to the
minor release that test passes on.

Uses `keras.ops` only; imports without TensorFlow.
"""

__all__ = [
    "KERAS_PROTECTED_ATTRIBUTES",
    "built_variables",
    "nested_layers",
    "moving_average_variables",
    "variable_index",
]

#: `(owner, attribute, why)` for every protected Keras attribute read by nfnet_keras.
KERAS_PROTECTED_ATTRIBUTES = (
    (
        "keras.optimizers.Optimizer",
        "_get_variable_index",
        "the position of a variable in the built list, to find its AGC flag, decay flag and slots in update_step",
    ),
    (
        "keras.optimizers.Optimizer",
        "_trainable_variables",
        "the variable list the optimizer was built with (the default of swap_average_weights)",
    ),
    (
        "keras.optimizers.Optimizer",
        "_model_variables_moving_average",
        "the averages of a Keras optimizer with use_ema=True (swapped in by nfnet_keras.training.ema)",
    ),
    (
        "keras.layers.Layer",
        "_flatten_layers",
        "every layer nested in a model, inside custom layers too (the activations nfnet_keras.analysis measures)",
    ),
)


def variable_index(optimizer, variable):
    """The position of `variable` in the list `optimizer` was built with.

    Works inside `update_step` on every backend, also for the raw or mirrored
    `tf.Variable`s that TensorFlow passes there.
    """
    return optimizer._get_variable_index(variable)


def built_variables(optimizer):
    """The variables `optimizer` was built with, in build order."""
    return list(optimizer._trainable_variables)


def moving_average_variables(optimizer):
    """The averages of a Keras `use_ema=True` optimizer, aligned with `built_variables`."""
    return list(optimizer._model_variables_moving_average)


def nested_layers(model):
    """Every layer inside `model`, depth first, custom layers' sublayers included (not `model` itself)."""
    return list(model._flatten_layers(include_self=False))
