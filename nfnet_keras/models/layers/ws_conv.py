"""Scaled weight-standardised 2-D convolution (`WSConv2D`)."""

import contextlib
import functools
import math
import os

import keras
from keras import ops

from nfnet_keras.models.layers.winograd import (
    MIN_CHANNELS_PER_GROUP,
    winograd_applies,
    winograd_conv3x3,
    winograd_tile,
)

GROUPED_CONV_MODES = ("auto", "native", "split")


class StandardizedConv2D(keras.layers.Layer):
    """What DeepMind's `WSConv2D` and timm's `ScaledStdConv2D` share: arguments, checks, weights, config.

    A base class: subclasses add their weights in their own order (checkpoints
    depend on it) with `add_kernel`, `add_gain` and `add_bias`, and define the
    standardisation and the padding.

    Args:
        filters: number of output channels.
        kernel_size: int or (kh, kw).
        strides: int or (sh, sw).
        groups: number of channel groups (grouped convolution).
        eps: the standardisation's epsilon (each subclass says where it goes).
        kernel_initializer, bias_initializer, gain_initializer: initialisers
            (defaults: fan-in normal, as DeepMind's `VarianceScaling(1.0,
            'fan_in', 'normal')` and timm's kaiming normal with a linear gain;
            zeros; ones).
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        groups=1,
        eps=1e-4,
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
        self.eps = float(eps)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.VarianceScaling(1.0, "fan_in", "untruncated_normal")
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.gain_initializer = keras.initializers.get(gain_initializer)

    def channels_per_group(self, input_shape):
        """Input channels per group, checked: the channel dimension is known and divisible by `groups`."""
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(f"{self.name}: the channel dimension of the input must be known")
        if in_channels % self.groups:
            raise ValueError(f"{self.name}: input channels {in_channels} are not divisible by groups={self.groups}")
        return in_channels // self.groups

    def add_kernel(self, input_shape, autocast=False):
        """Checks the input channels and adds `kernel` (kh, kw, in/groups, filters); float32 unless `autocast`."""
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (self.channels_per_group(input_shape), self.filters),
            initializer=self.kernel_initializer,
            autocast=autocast,
        )

    def add_gain(self):
        """Adds the per-channel `gain`, kept in float32 (the standardisation reads it)."""
        self.gain = self.add_weight(
            name="gain", shape=(self.filters,), initializer=self.gain_initializer, autocast=False
        )

    def add_bias(self):
        """Adds the per-channel `bias`."""
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)

    @property
    def fan_in(self):
        return math.prod(self.kernel_size) * self.kernel.shape[2]

    def kernel_moments(self):
        """The float32 kernel with its per-output-channel mean and population variance."""
        kernel = ops.cast(ops.convert_to_tensor(self.kernel), "float32")
        return kernel, ops.mean(kernel, axis=(0, 1, 2), keepdims=True), ops.var(kernel, axis=(0, 1, 2), keepdims=True)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "groups": self.groups,
                "eps": self.eps,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "gain_initializer": keras.initializers.serialize(self.gain_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="nfnet_keras")
class WSConv2D(StandardizedConv2D):
    """2-D convolution with scaled weight standardisation, as in DeepMind's NFNets.

    Each output channel's kernel is standardised over (kh, kw, in/groups) with
    the population variance, then scaled by a learnable gain:

        W_hat = (W - mean) * gain / sqrt(max(fan_in * var, eps))

    `eps` (1e-4) is a floor under `fan_in * var`, not a term added to the
    variance.  The standardisation is recomputed at every call from the raw
    kernel, always in float32 (also under `mixed_bfloat16`/`mixed_float16`),
    and a bias is always added.  Padding is TensorFlow's "SAME" (the extra pixel
    of an even input at stride 2 goes bottom/right).

    Keras' `Conv2D` is not reused: its kernel is autocast to the compute dtype
    inside `call`, and it has no gain or standardisation hook.

    With `standardize=False` the layer is the folded inference form: a plain
    convolution whose `kernel` already holds `W_hat` (no gain weight, nothing
    recomputed per call); `nfnet_keras.models.fold_weight_standardization` builds it.

    Args:
        filters: number of output channels.
        kernel_size: int or (kh, kw).
        strides: int or (sh, sw).
        groups: number of channel groups (grouped convolution).
        eps: floor under `fan_in * var`.
        standardize: False for the folded inference form (see above).
        winograd: with `standardize=False`, the folded form of a 3x3 stride-1
            convolution with groups of at least `MIN_CHANNELS_PER_GROUP` input
            channels, its kernel stored in Winograd's transform domain
            (`winograd_kernel`, `[(m + 2)^2 * groups, in/groups, filters/groups]`)
            and computed by F(m x m, 3x3), m = `winograd_tile` of the image
            size it is built for (2 where not static): faster under XLA on CPUs
            (`nfnet_keras.models.layers.winograd`). `fold_weight_standardization(model,
            winograd=True)` builds it.
        kernel_initializer, bias_initializer, gain_initializer: initialisers.
    """

    def __init__(self, filters, kernel_size, strides=1, groups=1, eps=1e-4, standardize=True, winograd=False, **kwargs):
        super().__init__(filters, kernel_size, strides=strides, groups=groups, eps=eps, **kwargs)
        self.standardize = bool(standardize)
        self.winograd = bool(winograd)
        if self.winograd and (self.standardize or not winograd_applies(self.kernel_size, self.strides, math.inf)):
            raise ValueError(
                f"{self.name}: winograd=True is a folded form (standardize=False) of 3x3 stride-1 convolutions, "
                f"got standardize={self.standardize}, kernel_size={self.kernel_size}, strides={self.strides}"
            )

    def build(self, input_shape):
        self.gain = None
        if self.winograd:
            self.add_winograd_kernel(input_shape)
        else:
            # The standardisation reads the float32 master kernel; the folded form is a plain kernel.
            self.add_kernel(input_shape, autocast=not self.standardize)
        if self.standardize:
            self.add_gain()
        self.add_bias()

    def add_winograd_kernel(self, input_shape):
        """Adds `winograd_kernel`, the folded kernel in the transform domain (`winograd.winograd_filters`).

        Also sets `winograd_tile`, the output tile size m of F(m x m, 3x3) for
        the image size in `input_shape` (`winograd.winograd_tile`; 2 where the
        size is not static).
        """
        per_group = self.channels_per_group(input_shape)
        if not winograd_applies(self.kernel_size, self.strides, per_group):
            raise ValueError(
                f"{self.name}: winograd=True needs groups of at least {MIN_CHANNELS_PER_GROUP} input channels, "
                f"got {per_group} channels in each of {self.groups} groups"
            )
        self.winograd_tile = winograd_tile(*input_shape[1:3])
        self.kernel = None
        self.winograd_kernel = self.add_weight(
            name="winograd_kernel",
            shape=((self.winograd_tile + 2) ** 2 * self.groups, per_group, self.filters // self.groups),
            initializer="zeros",  # always assigned from a folded kernel
            autocast=True,
        )

    @property
    def fan_in(self):
        if self.winograd:
            return math.prod(self.kernel_size) * self.winograd_kernel.shape[1]
        return super().fan_in

    def standardized_kernel(self):
        """The float32 kernel `W_hat` the convolution uses (what export folds in)."""
        if self.winograd:
            raise ValueError(f"{self.name}: the Winograd form stores its kernel transformed, not as a 3x3 kernel")
        if not self.standardize:
            return ops.cast(ops.convert_to_tensor(self.kernel), "float32")
        kernel, mean, var = self.kernel_moments()
        scale = ops.rsqrt(ops.maximum(var * self.fan_in, self.eps)) * ops.cast(self.gain, "float32")
        return kernel * scale - mean * scale

    def call(self, inputs):
        if self.winograd:
            return winograd_conv3x3(inputs, self.winograd_kernel, self.groups, "same") + self.bias
        kernel = self.kernel if not self.standardize else ops.cast(self.standardized_kernel(), self.compute_dtype)
        return conv2d_same(inputs, kernel, self.strides, self.groups) + self.bias

    def compute_output_shape(self, input_shape):
        spatial = [
            None if size is None else -(-size // stride)
            for size, stride in zip(input_shape[1:3], self.strides)
        ]
        return (input_shape[0], *spatial, self.filters)

    def count_macs(self, height, width):
        """Multiply-accumulates for one image of `height` x `width` input pixels."""
        out_h, out_w = -(-height // self.strides[0]), -(-width // self.strides[1])
        macs = out_h * out_w * self.filters * self.fan_in
        return macs, (out_h, out_w)

    def get_config(self):
        return {**super().get_config(), "standardize": self.standardize, "winograd": self.winograd}


def conv2d_same(inputs, kernel, strides, groups):
    """"SAME" convolution; grouped ones as one op or as `groups` convs, see `grouped_conv_mode`."""
    return grouped_conv(inputs, kernel, strides, groups, "same")


def grouped_conv(inputs, kernel, strides, groups, padding):
    """`ops.conv` with `groups` groups: one grouped op, or one conv per group (`grouped_conv_mode`).

    Args:
        padding: `"same"` or `"valid"`, as for `ops.conv`.
    """
    if groups == 1 or grouped_conv_mode() == "native":
        return ops.conv(inputs, kernel, strides=strides, padding=padding)
    # Group g reads input channels [g*k, (g+1)*k) and writes output channels
    # [g*n, (g+1)*n): the same function as the grouped op, term for term.
    xs = ops.split(inputs, groups, axis=-1)
    ks = ops.split(kernel, groups, axis=-1)
    return ops.concatenate([ops.conv(x, k, strides=strides, padding=padding) for x, k in zip(xs, ks)], axis=-1)


def grouped_conv_mode():
    """How grouped convolutions run: "native" (one grouped op) or "split".

    "split" runs one plain convolution per group and concatenates.  On CPUs
    that is the fast form: XLA:CPU's gradient of a grouped convolution is
    10-20x slower than the per-group convolutions' (F0's strided stage-3
    3x3, batch 8: 0.98 s vs 0.09 s forward+backward, `benchmarks/conv_groups.py`),
    and TensorFlow's oneDNN path is no faster grouped than split.  On GPUs
    and TPUs the grouped op is the fast one.  The environment variable
    `NFNET_GROUPED_CONV` (`auto`, `native` or `split`) overrides the choice;
    `auto` (the default) picks "split" when the default device is a CPU.
    The mode is read when a function is traced, so set it before building
    or compiling.
    """
    mode = os.environ.get("NFNET_GROUPED_CONV", "auto")
    if mode not in GROUPED_CONV_MODES:
        raise ValueError(f"NFNET_GROUPED_CONV={mode!r}: choose one of {GROUPED_CONV_MODES}")
    if mode == "auto":
        return "split" if _default_device_is_cpu() else "native"
    return mode


@contextlib.contextmanager
def grouped_conv_override(mode):
    """Within the block, models traced use `mode` ("native" or "split") whatever the machine.

    For artifacts traced on one machine and run on another: a SavedModel for a
    GPU server exported on a CPU host wants "native" grouped convolutions.
    Restores `NFNET_GROUPED_CONV` afterwards. `None` changes nothing.
    """
    if mode is None:
        yield
        return
    if mode not in GROUPED_CONV_MODES[1:]:
        raise ValueError(f"grouped convolution mode {mode!r}: choose one of {GROUPED_CONV_MODES[1:]}")
    previous = os.environ.get("NFNET_GROUPED_CONV")
    os.environ["NFNET_GROUPED_CONV"] = mode
    try:
        yield
    finally:
        if previous is None:
            del os.environ["NFNET_GROUPED_CONV"]
        else:
            os.environ["NFNET_GROUPED_CONV"] = previous


@functools.cache
def _default_device_is_cpu():
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU") and not tf.config.list_logical_devices("TPU")
    if backend == "jax":
        import jax

        return jax.default_backend() == "cpu"
    if backend == "torch":
        import torch

        return not torch.cuda.is_available()
    return True


def int_pair(value, name):
    """An int or a pair of ints as `(int, int)`; a ValueError naming `name` otherwise."""
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {value}")
    return value
