"""Gamma-scaled nonlinearities: `act(x) = f(x) * gamma`.

Normalizer-free networks keep the variance of activations near one without
normalisation layers by multiplying every nonlinearity by a constant `gamma`
with `gamma ~ 1 / std(f(z))` for `z ~ N(0, 1)`.  The constants are DeepMind's
(`nfnets/base.py`, `nonlinearities`), used verbatim.
"""

import keras
from keras import ops

GAMMAS = {
    "gelu": 1.7015043497085571,
    "relu": 1.7139588594436646,
    "silu": 1.7881293296813965,
    "relu6": 1.7131484746932983,
    "elu": 1.2716004848480225,
    "celu": 1.270926833152771,
    "leaky_relu": 1.70590341091156,
    "selu": 1.0008515119552612,
    "tanh": 1.5939117670059204,
    "sigmoid": 4.803835391998291,
    "softplus": 1.9203323125839233,
    "soft_sign": 2.338853120803833,
    "log_sigmoid": 1.9193484783172607,
    "log_softmax": 1.0002083778381348,
    "glu": 1.8484294414520264,
    "identity": 1.0,
}

# The functions behind the names, with JAX's defaults where Keras' differ:
# gelu uses the tanh approximation (jax.nn.gelu's default, which DeepMind used);
# leaky_relu uses slope 0.01 (Keras' default is 0.2).
_FUNCTIONS = {
    "gelu": lambda x: ops.gelu(x, approximate=True),
    "relu": ops.relu,
    "silu": ops.silu,
    "relu6": ops.relu6,
    "elu": ops.elu,
    "celu": ops.celu,
    "leaky_relu": lambda x: ops.leaky_relu(x, negative_slope=0.01),
    "selu": ops.selu,
    "tanh": ops.tanh,
    "sigmoid": ops.sigmoid,
    "softplus": ops.softplus,
    "soft_sign": ops.softsign,
    "log_sigmoid": ops.log_sigmoid,
    "log_softmax": lambda x: ops.log_softmax(x, axis=-1),
    "glu": lambda x: ops.glu(x, axis=-1),
    "identity": lambda x: x,
}


def scaled_activation_fn(name):
    """Returns `(f, gamma)` for a nonlinearity name of the reference table."""
    if name not in GAMMAS:
        raise ValueError(f"Unknown NFNet activation {name!r}; choose one of {sorted(GAMMAS)}")
    return _FUNCTIONS[name], GAMMAS[name]


@keras.saving.register_keras_serializable(package="nfnet_keras")
class ScaledActivation(keras.layers.Layer):
    """`f(x) * gamma` for a named nonlinearity (`gelu`, `relu`, `silu`, ...).

    Keras' `Activation` layer takes a function but no gamma, and its `gelu`
    defaults to the exact erf form, so this layer carries both the name (for
    serialisation) and DeepMind's constant.

    Args:
        activation: a key of `GAMMAS`.
        gamma: optional override of the constant (e.g. 1.0 to study the
            unscaled network in signal-propagation plots).
    """

    def __init__(self, activation="gelu", gamma=None, **kwargs):
        super().__init__(**kwargs)
        self._fn, default_gamma = scaled_activation_fn(activation)
        self.activation = activation
        self.gamma = float(default_gamma if gamma is None else gamma)
        self.supports_masking = True

    def call(self, inputs):
        out = self._fn(inputs)
        if self.gamma == 1.0:
            return out
        return out * ops.cast(self.gamma, out.dtype)

    def compute_output_shape(self, input_shape):
        if self.activation == "glu":
            return tuple(input_shape[:-1]) + (None if input_shape[-1] is None else input_shape[-1] // 2,)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"activation": self.activation, "gamma": self.gamma})
        return config
