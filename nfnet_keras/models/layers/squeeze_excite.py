"""Squeeze-and-excite gate of the NFNet block."""

import math

import keras
from keras import ops


def _haiku_linear_init(fan_in):
    return keras.initializers.TruncatedNormal(stddev=1.0 / math.sqrt(fan_in))


@keras.saving.register_keras_serializable(package="nfnet_keras")
class SqueezeExcite(keras.layers.Layer):
    """`sigmoid(linear_1(relu(linear(mean_HW(x)))))`, shaped (N, 1, 1, C).

    As in DeepMind's `base.SqueezeExcite`: the hidden width is
    `max(1, int(channels * se_ratio))`, the inner nonlinearity is a plain
    (not gamma-scaled) relu, and both linears have biases with Haiku's default
    init (truncated normal, std 1/sqrt(fan_in)).  The block multiplies its
    branch by `2 * gate`; the factor 2 is applied by the block, not here.

    Args:
        channels: input and output channels.
        se_ratio: hidden width ratio.
    """

    def __init__(self, channels, se_ratio=0.5, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.se_ratio = float(se_ratio)
        self.hidden = max(1, int(self.channels * self.se_ratio))
        # Haiku's default Linear init: a normal with std 1/sqrt(fan_in) truncated at
        # two std (Keras' VarianceScaling would rescale it to keep that std).
        self.linear = keras.layers.Dense(
            self.hidden, kernel_initializer=_haiku_linear_init(self.channels), name="linear"
        )
        self.linear_1 = keras.layers.Dense(
            self.channels, kernel_initializer=_haiku_linear_init(self.hidden), name="linear_1"
        )

    def build(self, input_shape):
        self.linear.build((input_shape[0], self.channels))
        self.linear_1.build((input_shape[0], self.hidden))

    def call(self, inputs):
        pooled = ops.mean(inputs, axis=(1, 2))
        gate = ops.sigmoid(self.linear_1(ops.relu(self.linear(pooled))))
        return gate[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, 1, self.channels)

    def count_macs(self):
        return self.channels * self.hidden * 2

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "se_ratio": self.se_ratio})
        return config
