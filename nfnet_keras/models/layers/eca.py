"""Efficient channel attention (ECA-Net, Wang et al. 2020), as timm's `EcaModule` computes it."""

import math

import keras
from keras import ops


def eca_kernel_size(channels, gamma=2, beta=1):
    """ECA's adaptive kernel size: the odd number near `(log2(channels) + beta) / gamma`, at least 3.

    timm's rule, rounding included: `t = int(|log2(C) + beta| / gamma)`, then
    `t` if odd else `t + 1`, then at least 3 (256 and 1536 channels: 5).
    """
    # math.log(C, 2), not log2: timm's expression, so that int() truncates the same float.
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


@keras.saving.register_keras_serializable(package="nfnet_keras")
class EfficientChannelAttention(keras.layers.Layer):
    """`sigmoid(conv1d(mean_HW(x)))`: a gate shaped (N, 1, 1, C).

    The pooled channels are treated as a 1-D signal and convolved (no bias,
    zero padding of `(k - 1) // 2` on each end) with one learnable kernel of
    `k = eca_kernel_size(channels)` taps, so each channel's gate sees its `k`
    neighbours. Like `SqueezeExcite` the layer returns the gate; the block
    multiplies its branch by it (and by its attention gain).

    The kernel is stored as Keras' Conv1D kernel, (k, 1, 1); timm's
    `attn_last.conv.weight` is (1, 1, k).

    Args:
        channels: input channels (they set the kernel size).
        kernel_size: overrides the adaptive kernel size (odd).
    """

    def __init__(self, channels, kernel_size=None, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.kernel_size = eca_kernel_size(self.channels) if kernel_size is None else int(kernel_size)
        if self.kernel_size % 2 != 1:
            raise ValueError(f"the ECA kernel size must be odd, got {self.kernel_size}")

    def build(self, input_shape):
        # PyTorch's Conv1d default init: uniform within 1/sqrt(fan_in), fan_in = k.
        bound = 1.0 / math.sqrt(self.kernel_size)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, 1, 1),
            initializer=keras.initializers.RandomUniform(-bound, bound),
        )

    def call(self, inputs):
        pooled = ops.mean(inputs, axis=(1, 2))[:, :, None]  # (N, C, 1): channels as the 1-D axis.
        # Stride 1 and an odd kernel: "same" is (k - 1) // 2 zeros on each end.
        gate = ops.sigmoid(ops.conv(pooled, self.kernel, padding="same"))
        return gate[:, :, 0][:, None, None, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, 1, self.channels)

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "kernel_size": self.kernel_size})
        return config
