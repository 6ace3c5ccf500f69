"""Per-example stochastic depth: DeepMind's (no rescale) or timm's DropPath (1 / keep rescale)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nfnet_keras")
class StochasticDepth(keras.layers.Layer):
    """Drops a residual branch per example during training, identity at inference.

    DeepMind's `base.StochDepth`: `mask = floor(keep + U[0, 1))` of shape
    (N, 1, 1, 1), output `x * mask`, with **no** `1 / keep` rescale.  Keras'
    `Dropout` and most DropPath layers rescale, so they do not match.  With
    `scale_by_keep=True` it is timm's `DropPath` (`drop_path(...,
    scale_by_keep=True)`): the kept examples are divided by `keep`, so the
    expected output equals the input.

    Args:
        rate: drop probability in [0, 1).
        seed: optional int seed for the layer's `SeedGenerator`.
        scale_by_keep: divide the kept examples by `1 - rate` (timm) or not
            (DeepMind).
    """

    def __init__(self, rate, seed=None, scale_by_keep=False, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"stochastic depth rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.scale_by_keep = bool(scale_by_keep)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        batch = ops.shape(inputs)[0]
        noise = keras.random.uniform((batch, 1, 1, 1), dtype=inputs.dtype, seed=self.seed_generator)
        keep = ops.cast(1.0 - self.rate, inputs.dtype)
        mask = ops.floor(keep + noise)
        if self.scale_by_keep:
            mask = mask / keep
        return inputs * mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed, "scale_by_keep": self.scale_by_keep})
        return config
