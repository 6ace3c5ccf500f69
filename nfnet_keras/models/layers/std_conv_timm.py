"""timm's scaled weight-standardised convolution (`ScaledStdConv2D`), with PyTorch's symmetric padding."""

import math

import keras
from keras import ops

from nfnet_keras.models.layers.ws_conv import StandardizedConv2D, grouped_conv


def symmetric_padding(kernel_size, stride):
    """timm's `get_padding`: pixels added on *each* side, `((stride - 1) + (kernel_size - 1)) // 2`."""
    return ((stride - 1) + (kernel_size - 1)) // 2


@keras.saving.register_keras_serializable(package="nfnet_keras")
class ScaledStdConv2D(StandardizedConv2D):
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

    def __init__(self, filters, kernel_size, strides=1, groups=1, gamma=1.0, eps=1e-6, **kwargs):
        super().__init__(filters, kernel_size, strides=strides, groups=groups, eps=eps, **kwargs)
        self.gamma = float(gamma)
        self.padding = tuple(symmetric_padding(k, s) for k, s in zip(self.kernel_size, self.strides))

    def build(self, input_shape):
        # timm's order: weight, bias, gain.
        self.add_kernel(input_shape)
        self.add_bias()
        self.add_gain()

    def standardized_kernel(self):
        """The float32 kernel `W_hat` the convolution uses."""
        kernel, mean, var = self.kernel_moments()
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
        return {**super().get_config(), "gamma": self.gamma}


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
