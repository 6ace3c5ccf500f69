"""Batch-wise stochastic depth without rescaling."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nfnet_keras")
class StochasticDepth(keras.layers.Layer):
    """Drops a residual branch per example during training, identity at inference.

    DeepMind's `base.StochDepth`: `mask = floor(keep + U[0, 1))` of shape
    (N, 1, 1, 1), output `x * mask`, with **no** `1 / keep` rescale.  Keras'
    `Dropout` and most DropPath layers rescale, so they do not match.

    Args:
        rate: drop probability in [0, 1).
        seed: optional int seed for the layer's `SeedGenerator`.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"stochastic depth rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        batch = ops.shape(inputs)[0]
        noise = keras.random.uniform((batch, 1, 1, 1), dtype=inputs.dtype, seed=self.seed_generator)
        mask = ops.floor(ops.cast(1.0 - self.rate, inputs.dtype) + noise)
        return inputs * mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config
