"""The pre-activation block of timm's own NFNets (`timm.models.nfnet.NormFreeBlock`) and its stem pool.

timm's non-DeepMind NFNets (`nfnet_l0`, `eca_nfnet_l0` ... `l3`, its
NF-RegNets and NF-ResNets) differ from DeepMind's block (`NFBlock`) in ways
that change the numbers: plain activations with the gamma folded into the
next conv (`ScaledStdConv2D`), symmetric padding, no skip gain (conv3's gain
starts at 0 instead), ECA or a rounded SE as attention, and channel counts
rounded by `make_divisible`. `SymmetricMaxPool2D` is the NF-ResNets' stem
pool (PyTorch's `MaxPool2d(3, 2, padding=1)`).
"""

import keras
from keras import ops

from nfnet_keras.models.layers.activations import GAMMAS, ScaledActivation
from nfnet_keras.models.layers.eca import EfficientChannelAttention
from nfnet_keras.models.layers.squeeze_excite import SqueezeExcite
from nfnet_keras.models.layers.std_conv_timm import ScaledStdConv2D
from nfnet_keras.models.layers.stochastic_depth import StochasticDepth

#: The attention layers of timm's NFNets: after conv3 (`attn_last`), or after conv2 with `reg=True` (`attn`).
ATTENTIONS = ("eca", "se", None)


def make_divisible(value, divisor=8, min_value=None, round_limit=0.9):
    """timm's channel rounding: the nearest multiple of `divisor`, at least `min_value` (default `divisor`).

    A result below `round_limit * value` is raised by one `divisor`.
    """
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


def timm_bottleneck(width, bottle_ratio, group_size, ch_div=8):
    """timm's bottleneck of a block: `(mid_channels, groups)`.

    `make_divisible(width * bottle_ratio, ch_div)`, in groups of `group_size`
    (None: one group), rounded down to whole groups when `group_size` is a
    multiple of `ch_div`. `width` is the block's output width in a
    ResNet-style block (`reg=False`), its input width in a RegNet-style one.
    """
    mid = make_divisible(width * bottle_ratio, ch_div)
    if not group_size:
        return mid, 1
    groups = mid // group_size
    if groups < 1:
        raise ValueError(f"bottleneck of {mid} channels is smaller than group_size={group_size}")
    if group_size % ch_div == 0:
        mid = group_size * groups
    return mid, groups


@keras.saving.register_keras_serializable(package="nfnet_keras")
class NormFreeBlock(keras.layers.Layer):
    """timm's NormFreeBlock, in its exact order, for eval-mode equality with timm.

        out = act(x) * beta
        shortcut = downsample_conv(avg_pool(out))   stride 2 (pool: 2x2, ceil mode, valid cells only)
                   downsample_conv(out)             stride 1, in != out channels
                   x                                otherwise
        out = conv1(out)                            1x1 -> mid
        out = conv2(act(out))                       3x3, stride, groups
        out = conv2b(act(out))                      3x3, groups (extra_conv)
        out = attn_gain * (out * attn(out))         reg=True: ECA or SE gate on the mid channels
        out = conv3(act(out))                       1x1 -> out, gain initialised to 0
        out = attn_gain * (out * attn_last(out))    reg=False: ECA or SE gate on the output channels
        out = stochastic_depth(out)                 training only, if rate > 0
        return out * alpha + shortcut

    `act` is the plain nonlinearity: every conv carries its gamma
    (`ScaledStdConv2D(gamma=GAMMAS[activation])`). The layers are named after
    timm's modules (`conv1`, `conv2`, `conv2b`, `conv3`, `downsample_conv`
    for `downsample.conv`, `attn`, `attn_last`), and created in timm's order,
    so its state dict maps by name and in order.

    `reg=True` is timm's RegNet-style block (its NF-RegNets): the bottleneck
    is `bottle_ratio` times the *input* width and the attention sits between
    conv2 and conv3. `reg=False` (ResNet-style, the light NFNets and
    NF-ResNets): the bottleneck is a fraction of the output width and the
    attention follows conv3.

    Stochastic depth is timm's DropPath (`StochasticDepth(scale_by_keep=True)`:
    the kept examples are divided by `1 - rate`); the identity at inference.

    Args:
        in_channels, out_channels: block input and output widths.
        stride: 1 or 2 (conv2 and the shortcut's average pool).
        alpha, beta: signal-propagation constants (beta = 1 / expected std).
        bottle_ratio, group_size, ch_div: the bottleneck (see `timm_bottleneck`).
        attention: `"eca"`, `"se"` or None.
        se_ratio, se_divisor: SE hidden width, `make_divisible(C * se_ratio,
            se_divisor, round_limit=0)` of the C channels it gates (timm's `SEModule`).
        attn_gain: factor on the gated branch (2.0).
        activation: a key of `GAMMAS`.
        eps: the convs' standardisation eps (timm's NFNets: 1e-5).
        extra_conv: include conv2b.
        reg: timm's RegNet-style block (see above).
        stochdepth_rate: per-example drop rate of the residual branch.
        seed: optional seed for stochastic depth.
        remat: recompute the residual branch in the backward pass (`keras.remat`).
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        stride=1,
        alpha=0.2,
        beta=1.0,
        bottle_ratio=0.25,
        group_size=64,
        ch_div=8,
        attention="eca",
        se_ratio=0.25,
        se_divisor=8,
        attn_gain=2.0,
        activation="silu",
        eps=1e-5,
        extra_conv=True,
        reg=False,
        stochdepth_rate=0.0,
        seed=None,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.stride = int(stride)
        if self.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.bottle_ratio = float(bottle_ratio)
        self.group_size = None if group_size is None else int(group_size)
        self.ch_div = int(ch_div)
        self.attention = attention
        self.se_ratio = float(se_ratio)
        self.se_divisor = int(se_divisor)
        self.attn_gain = float(attn_gain)
        self.activation = activation
        self.eps = float(eps)
        self.extra_conv = bool(extra_conv)
        self.reg = bool(reg)
        self.stochdepth_rate = float(stochdepth_rate)
        self.seed = seed
        self.remat = bool(remat)

        self.mid_channels, self.groups = timm_bottleneck(
            self.in_channels if self.reg else self.out_channels, self.bottle_ratio, self.group_size, self.ch_div
        )
        conv = {"gamma": GAMMAS[activation], "eps": self.eps}
        # Created in timm's module order, so that the weights come in its state-dict order.
        self.downsample_conv = None
        self.downsample_pool = None
        if self.stride > 1 or self.in_channels != self.out_channels:
            self.downsample_conv = ScaledStdConv2D(self.out_channels, 1, name="downsample_conv", **conv)
        if self.stride > 1:
            # PyTorch's AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) averages the valid
            # cells of a window that overhangs an odd edge: Keras' "same" pooling does the same.
            self.downsample_pool = keras.layers.AveragePooling2D(
                2, strides=2, padding="same", name="downsample_pool"
            )
        self.act = ScaledActivation(activation, gamma=1.0, name="act")
        self.conv1 = ScaledStdConv2D(self.mid_channels, 1, name="conv1", **conv)
        self.conv2 = ScaledStdConv2D(
            self.mid_channels, 3, strides=self.stride, groups=self.groups, name="conv2", **conv
        )
        self.conv2b = (
            ScaledStdConv2D(self.mid_channels, 3, groups=self.groups, name="conv2b", **conv)
            if self.extra_conv
            else None
        )
        self.attn = self._attention_layer(self.mid_channels, "attn") if self.reg else None
        # timm without skipinit: conv3's gain starts at 0, so each block starts as its shortcut.
        self.conv3 = ScaledStdConv2D(self.out_channels, 1, gain_initializer="zeros", name="conv3", **conv)
        self.attn_last = None if self.reg else self._attention_layer(self.out_channels, "attn_last")
        self.stochastic_depth = (
            # timm's DropPath rescales the kept examples by 1 / keep.
            StochasticDepth(self.stochdepth_rate, seed=seed, scale_by_keep=True, name="stochastic_depth")
            if self.stochdepth_rate > 0.0
            else None
        )

    def _attention_layer(self, channels, name):
        """The gate of `channels` channels (None without attention), named after timm's module."""
        if self.attention == "eca":
            return EfficientChannelAttention(channels, name=name)
        if self.attention == "se":
            hidden = make_divisible(channels * self.se_ratio, self.se_divisor, round_limit=0.0)
            layer = SqueezeExcite(channels, hidden / channels, name=name)
            if layer.hidden != hidden:
                raise ValueError(f"{self.name}: no SqueezeExcite of {hidden} hidden channels for {channels}")
            return layer
        return None

    def build(self, input_shape):
        if input_shape[-1] != self.in_channels:
            raise ValueError(f"{self.name}: expected {self.in_channels} input channels, got {input_shape[-1]}")
        batch = input_shape[0]
        if self.downsample_conv is not None:
            self.downsample_conv.build((batch, None, None, self.in_channels))
        self.conv1.build((batch, None, None, self.in_channels))
        self.conv2.build((batch, None, None, self.mid_channels))
        if self.conv2b is not None:
            self.conv2b.build((batch, None, None, self.mid_channels))
        if self.attn is not None:
            self.attn.build((batch, None, None, self.mid_channels))
        self.conv3.build((batch, None, None, self.mid_channels))
        if self.attn_last is not None:
            self.attn_last.build((batch, None, None, self.out_channels))

    def residual_and_shortcut(self, inputs):
        """Returns `(branch, shortcut)`: the gated branch before stochastic depth and alpha."""
        out = self.act(inputs) * ops.cast(self.beta, inputs.dtype)
        shortcut = inputs
        if self.downsample_conv is not None:
            shortcut = self.downsample_conv(out if self.downsample_pool is None else self.downsample_pool(out))
        out = self.conv1(out)
        out = self.conv2(self.act(out))
        if self.conv2b is not None:
            out = self.conv2b(self.act(out))
        if self.attn is not None:
            out = self._gated(self.attn, out)
        out = self.conv3(self.act(out))
        if self.attn_last is not None:
            out = self._gated(self.attn_last, out)
        return out, shortcut

    def _gated(self, gate, out):
        """timm's `attn_gain * attn(out)`, where its attention module returns `out * gate`."""
        return (out * gate(out)) * ops.cast(self.attn_gain, out.dtype)

    def call(self, inputs, training=False):
        branch = keras.remat(self.residual_and_shortcut) if self.remat and training else self.residual_and_shortcut
        out, shortcut = branch(inputs)
        if self.stochastic_depth is not None:
            out = self.stochastic_depth(out, training=training)
        return out * ops.cast(self.alpha, out.dtype) + shortcut

    def compute_output_shape(self, input_shape):
        spatial = [None if s is None else -(-s // self.stride) for s in input_shape[1:3]]
        return (input_shape[0], *spatial, self.out_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "in_channels": self.in_channels,
                "out_channels": self.out_channels,
                "stride": self.stride,
                "alpha": self.alpha,
                "beta": self.beta,
                "bottle_ratio": self.bottle_ratio,
                "group_size": self.group_size,
                "ch_div": self.ch_div,
                "attention": self.attention,
                "se_ratio": self.se_ratio,
                "se_divisor": self.se_divisor,
                "attn_gain": self.attn_gain,
                "activation": self.activation,
                "eps": self.eps,
                "extra_conv": self.extra_conv,
                "reg": self.reg,
                "stochdepth_rate": self.stochdepth_rate,
                "seed": self.seed,
                "remat": self.remat,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="nfnet_keras")
class SymmetricMaxPool2D(keras.layers.Layer):
    """Max pooling with `padding` cells on *each* side that never win: PyTorch's `MaxPool2d(k, s, padding)`.

    timm's NF-ResNet stem pools with `nn.MaxPool2d(3, stride=2, padding=1)`.
    Keras' "same" pooling pads bottom/right only on an even input, which
    shifts every window by one pixel; this layer pads all sides and pools
    "valid", so the output is `(size + 2 * padding - pool_size) // strides +
    1` and every window matches PyTorch's.

    The padded cells copy the edge cells next to them rather than holding
    -inf: since `padding < pool_size`, every window that holds a padded cell
    also holds the edge cell it copies, so no maximum (and no gradient)
    changes, while the padded tensor keeps the data's range. That range is
    what full-integer TFLite calibrates for the pool and the conv before it
    (one int8 scale for both); -inf made that scale ~1e36 and the file
    unusable.

    Args:
        pool_size: the square window side.
        strides: the step between windows.
        padding: cells added on each side (less than `pool_size`).
    """

    def __init__(self, pool_size=3, strides=2, padding=1, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)
        self.strides = int(strides)
        self.padding = int(padding)
        if not 0 <= self.padding < self.pool_size:
            raise ValueError(f"padding must be in [0, pool_size), got {padding} for pool_size {pool_size}")

    def call(self, inputs):
        padded = inputs
        # One cell a time: a mirrored cell of a one-cell pad is the edge cell itself ("edge" mode is
        # not in TensorFlow), and one pad op per cell costs less than slices and concatenations.
        for _ in range(self.padding):
            padded = ops.pad(padded, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="symmetric")
        return ops.max_pool(padded, self.pool_size, self.strides, padding="valid")

    def output_size(self, size):
        """The pooled length of a side of `size` (None stays None)."""
        return None if size is None else (size + 2 * self.padding - self.pool_size) // self.strides + 1

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_size(input_shape[1]), self.output_size(input_shape[2]), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding})
        return config
