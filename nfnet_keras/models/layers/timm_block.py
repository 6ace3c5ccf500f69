"""The pre-activation block of timm's own NFNets (`timm.models.nfnet.NormFreeBlock`, `reg=False`).

timm's non-DeepMind NFNets (`nfnet_l0`, `eca_nfnet_l0` ... `l3`) differ from
DeepMind's block (`NFBlock`) in ways that change the numbers: plain
activations with the gamma folded into the next conv (`ScaledStdConv2D`),
symmetric padding, no skip gain (conv3's gain starts at 0 instead), ECA or a
rounded SE as attention, and channel counts rounded by `make_divisible`.
"""

import keras
from keras import ops

from nfnet_keras.models.layers.activations import GAMMAS, ScaledActivation
from nfnet_keras.models.layers.eca import EfficientChannelAttention
from nfnet_keras.models.layers.squeeze_excite import SqueezeExcite
from nfnet_keras.models.layers.std_conv_timm import ScaledStdConv2D
from nfnet_keras.models.layers.stochastic_depth import StochasticDepth

#: The attention layers timm's NFNets use after conv3 (`attn_last`).
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


def timm_bottleneck(out_channels, bottle_ratio, group_size, ch_div=8):
    """timm's bottleneck of a ResNet-style (`reg=False`) block: `(mid_channels, groups)`.

    `make_divisible(out * bottle_ratio, ch_div)`, in groups of `group_size`
    (None: one group), rounded down to whole groups when `group_size` is a
    multiple of `ch_div`.
    """
    mid = make_divisible(out_channels * bottle_ratio, ch_div)
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
    """timm's NormFreeBlock (`reg=False`), in its exact order, for eval-mode equality with timm.

        out = act(x) * beta
        shortcut = downsample_conv(avg_pool(out))   stride 2 (pool: 2x2, ceil mode, valid cells only)
                   downsample_conv(out)             stride 1, in != out channels
                   x                                otherwise
        out = conv1(out)                            1x1 -> mid
        out = conv2(act(out))                       3x3, stride, groups
        out = conv2b(act(out))                      3x3, groups (extra_conv)
        out = conv3(act(out))                       1x1 -> out, gain initialised to 0
        out = attn_gain * (out * attn_last(out))    ECA or SE gate (attention)
        out = stochastic_depth(out)                 training only, if rate > 0
        return out * alpha + shortcut

    `act` is the plain nonlinearity: every conv carries its gamma
    (`ScaledStdConv2D(gamma=GAMMAS[activation])`). The layers are named after
    timm's modules (`conv1`, `conv2`, `conv2b`, `conv3`, `downsample_conv`
    for `downsample.conv`, `attn_last`), so its state dict maps by name.

    Stochastic depth is DeepMind's (`StochasticDepth`, no 1/keep rescale);
    timm's DropPath rescales the kept examples. Both are the identity at
    inference.

    Args:
        in_channels, out_channels: block input and output widths.
        stride: 1 or 2 (conv2 and the shortcut's average pool).
        alpha, beta: signal-propagation constants (beta = 1 / expected std).
        bottle_ratio, group_size, ch_div: the bottleneck (see `timm_bottleneck`).
        attention: `"eca"`, `"se"` or None.
        se_ratio, se_divisor: SE hidden width, `make_divisible(out * se_ratio,
            se_divisor, round_limit=0)` (timm's `SEModule`).
        attn_gain: factor on the gated branch (2.0).
        activation: a key of `GAMMAS`.
        eps: the convs' standardisation eps (timm's NFNets: 1e-5).
        extra_conv: include conv2b.
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
        self.stochdepth_rate = float(stochdepth_rate)
        self.seed = seed
        self.remat = bool(remat)

        self.mid_channels, self.groups = timm_bottleneck(
            self.out_channels, self.bottle_ratio, self.group_size, self.ch_div
        )
        conv = {"gamma": GAMMAS[activation], "eps": self.eps}
        # Created first: the weights then come in timm's state-dict order.
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
        # timm without skipinit: conv3's gain starts at 0, so each block starts as its shortcut.
        self.conv3 = ScaledStdConv2D(self.out_channels, 1, gain_initializer="zeros", name="conv3", **conv)
        self.attn_last = self._attention_layer()
        self.stochastic_depth = (
            StochasticDepth(self.stochdepth_rate, seed=seed, name="stochastic_depth")
            if self.stochdepth_rate > 0.0
            else None
        )

    def _attention_layer(self):
        if self.attention == "eca":
            return EfficientChannelAttention(self.out_channels, name="attn_last")
        if self.attention == "se":
            hidden = make_divisible(self.out_channels * self.se_ratio, self.se_divisor, round_limit=0.0)
            layer = SqueezeExcite(self.out_channels, hidden / self.out_channels, name="attn_last")
            if layer.hidden != hidden:
                raise ValueError(f"{self.name}: no SqueezeExcite of {hidden} hidden channels for {self.out_channels}")
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
        out = self.conv3(self.act(out))
        if self.attn_last is not None:
            out = (out * self.attn_last(out)) * ops.cast(self.attn_gain, out.dtype)
        return out, shortcut

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
                "stochdepth_rate": self.stochdepth_rate,
                "seed": self.seed,
                "remat": self.remat,
            }
        )
        return config
