"""timm's scaled weight-standardised convolution (`ScaledStdConv2D`), with PyTorch's symmetric padding."""

import math

import keras
from keras import ops

from nfnet_keras.models.layers.ws_conv import grouped_conv, int_pair


def symmetric_padding(kernel_size, stride):
    """timm's `get_padding`: pixels added on *each* side, `((stride - 1) + (kernel_size - 1)) // 2`."""
    return ((stride - 1) + (kernel_size - 1)) // 2


@keras.saving.register_keras_serializable(package="nfnet_keras")
class ScaledStdConv2D(keras.layers.Layer):
    """2-D convolution with timm's scaled weight standardisation (`timm.layers.ScaledStdConv2d`).

    Each output channel's kernel is standardised over (kh, kw, in/groups) with
    the population variance, as timm's `F.batch_norm` over the flattened kernel
    computes it:

        W_hat = (W - mean) / sqrt(var + eps) * gain * gamma / sqrt(fan_in)

    Two differences from DeepMind's form (`WSConv2D`): `eps` is added to the
    variance (DeepMind floors `fan_in * var` at eps), and timm's own NFNets fold
    the activation's gamma into every conv here (`gamma`), so their
    activations are the plain functions. Padding is PyTorch's: `p =
    symmetric_padding(k, stride)` zeros on every side. At stride 2 on an even
    input that shifts the sampling grid by one pixel against TensorFlow's
    "SAME" (which pads bottom/right only); on odd inputs the two agree.

    Args:
        filters: number of output channels.
        kernel_size: int or (kh, kw).
        strides: int or (sh, sw).
        groups: number of channel groups (grouped convolution).
        gamma: constant folded into the scale (1.0: plain standardisation).
        eps: added to the variance (timm's class default 1e-6; its NFNets use 1e-5).
        kernel_initializer, bias_initializer, gain_initializer: initialisers
            (defaults: timm's kaiming normal, fan-in, linear; zeros; ones).
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        groups=1,
        gamma=1.0,
        eps=1e-6,
        kernel_initializer=None,
        bias_initializer="zeros",
        gain_initializer="ones",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int_pair(kernel_size, "kernel_size")
        self.strides = int_pair(strides, "strides")
        self.groups = int(groups)
        if self.groups < 1 or self.filters % self.groups:
            raise ValueError(f"filters={filters} must be a positive multiple of groups={groups}")
        self.gamma = float(gamma)
        self.eps = float(eps)
        self.padding = tuple(symmetric_padding(k, s) for k, s in zip(self.kernel_size, self.strides))
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.VarianceScaling(1.0, "fan_in", "untruncated_normal")
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.gain_initializer = keras.initializers.get(gain_initializer)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(f"{self.name}: the channel dimension of the input must be known")
        if in_channels % self.groups:
            raise ValueError(f"{self.name}: input channels {in_channels} are not divisible by groups={self.groups}")
        # timm's order (weight, bias, gain); autocast=False: the standardisation reads float32.
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (in_channels // self.groups, self.filters),
            initializer=self.kernel_initializer,
            autocast=False,
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
        self.gain = self.add_weight(
            name="gain", shape=(self.filters,), initializer=self.gain_initializer, autocast=False
        )

    @property
    def fan_in(self):
        return math.prod(self.kernel_size) * self.kernel.shape[2]

    def standardized_kernel(self):
        """The float32 kernel `W_hat` the convolution uses."""
        kernel = ops.cast(ops.convert_to_tensor(self.kernel), "float32")
        mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        var = ops.var(kernel, axis=(0, 1, 2), keepdims=True)
        # timm computes gamma / sqrt(fan_in) in Python, then multiplies the gain by it.
        scale = ops.cast(self.gain, "float32") * (self.gamma / math.sqrt(self.fan_in))
        return (kernel - mean) * ops.rsqrt(var + self.eps) * scale

    def call(self, inputs):
        kernel = ops.cast(self.standardized_kernel(), self.compute_dtype)
        return conv2d_symmetric(inputs, kernel, self.strides, self.groups, self.padding) + self.bias

    def compute_output_shape(self, input_shape):
        spatial = [
            None if size is None else (size + 2 * pad - k) // stride + 1
            for size, k, stride, pad in zip(input_shape[1:3], self.kernel_size, self.strides, self.padding)
        ]
        return (input_shape[0], *spatial, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "groups": self.groups,
                "gamma": self.gamma,
                "eps": self.eps,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "gain_initializer": keras.initializers.serialize(self.gain_initializer),
            }
        )
        return config


def conv2d_symmetric(inputs, kernel, strides, groups, padding):
    """Convolution with `padding = (ph, pw)` zeros on each side; grouped ones as `ws_conv.grouped_conv` runs them."""
    kernel_size = tuple(kernel.shape[:2])
    if all(s == 1 and 2 * p == k - 1 for s, p, k in zip(strides, padding, kernel_size)):
        mode = "same"  # the same zeros on each side: no separate pad op.
    else:
        mode = "valid"
        if any(padding):
            inputs = ops.pad(inputs, [[0, 0], [padding[0]] * 2, [padding[1]] * 2, [0, 0]])
    return grouped_conv(inputs, kernel, strides, groups, mode)
