"""The normalizer-free bottleneck block of DeepMind's NF models.

One layer serves DeepMind's three families, whose blocks differ only in their
bottleneck rule, where the squeeze-excite sits and how the shortcut
downsamples: NFNet-F (DeepMind's `nfnet.py`, `NFBlock`), NF-RegNet
(`nf_regnet.py`, `NFBlock`) and NF-ResNet (`nf_resnet.py`, `NFResBlock`).
"""

import keras
from keras import ops

from nfnet_keras.models.layers.activations import ScaledActivation
from nfnet_keras.models.layers.squeeze_excite import SqueezeExcite
from nfnet_keras.models.layers.stochastic_depth import StochasticDepth
from nfnet_keras.models.layers.winograd import winograd_applies
from nfnet_keras.models.layers.ws_conv import WSConv2D


#: Where the squeeze-excite gate of a block sits (None: no gate).
SE_POSITIONS = ("output", "bottleneck", None)
#: How a strided block downsamples its shortcut.
DOWNSAMPLES = ("avg_pool", "strided_conv")


def bottleneck_width(in_channels, out_channels, expansion, group_width, big_width=True):
    """DeepMind's bottleneck: `int(ch * expansion)` rounded down to whole groups.

    `group_width=None` means one group (a dense 3x3 conv, NF-ResNet's) and no rounding.
    Returns `(mid_channels, groups)`; raises ValueError when less than one group fits.
    """
    width = int((out_channels if big_width else in_channels) * expansion)
    if group_width is None:
        if width < 1:
            raise ValueError(f"bottleneck of {width} channels: raise the stage width / expansion")
        return width, 1
    groups = width // group_width
    if groups < 1:
        raise ValueError(
            f"bottleneck of {width} channels is smaller than group_width={group_width}; "
            "lower group_width or raise the stage width / expansion"
        )
    return group_width * groups, groups


@keras.saving.register_keras_serializable(package="nfnet_keras")
class NFBlock(keras.layers.Layer):
    """NF bottleneck block (DeepMind's `nfnet.NFBlock`), in the reference's exact order.

        out = act(x) * beta
        shortcut = conv_shortcut(avg_pool(out))   if stride > 1 (downsample="avg_pool")
                   conv_shortcut(out)             elif stride > 1 or in != out channels
                   x                              otherwise
        out = conv0(out)                          1x1 -> mid
        out = conv1(act(out))                     3x3, stride, groups
        out = conv1b(act(out))                    3x3, groups (use_two_convs)
        out = 2 * squeeze_excite(out) * out       se_position="bottleneck"
        out = conv2(act(out))                     1x1 -> out
        out = 2 * squeeze_excite(out) * out       se_position="output"
        out = stochastic_depth(out)               training only, if rate > 0
        return out * skip_gain * alpha + shortcut

    The defaults are NFNet-F's. DeepMind's NF-RegNet block (`nf_regnet.NFBlock`)
    is `big_width=False, group_width=8, use_two_convs=False,
    se_position="bottleneck"`; its NF-ResNet block (`nf_resnet.NFResBlock`) is
    `expansion=0.25, group_width=None, use_two_convs=False,
    downsample="strided_conv"` with `se_position=None` or `"output"`.

    `beta` (1 / expected std of the input) and `alpha` are constants computed by
    the model; `skip_gain` is a learnable scalar initialised to 0.

    Args:
        in_channels, out_channels: block input and output widths.
        expansion, group_width, big_width: bottleneck width rule (see
            `bottleneck_width`).
        stride: stride of conv1 and of the shortcut's downsampling.
        beta, alpha: signal-propagation constants.
        se_ratio: squeeze-excite hidden ratio.
        se_position: where the squeeze-excite gate sits: `"output"` (on the
            conv2 output), `"bottleneck"` (on the mid width, before conv2) or
            None (no gate).
        downsample: how a strided block's shortcut downsamples: `"avg_pool"`
            (2x2 average pool, then a 1x1 conv) or `"strided_conv"` (a 1x1
            conv with the block's stride).
        stochdepth_rate: per-example drop rate of the residual branch.
        activation: name of the gamma-scaled nonlinearity.
        use_two_convs: include conv1b (True for NFNets).
        skip_gain_init: initial skip gain (0 as in the reference).
        seed: optional seed for stochastic depth.
        standardize: False builds the convs in their folded inference form.
        winograd: with `standardize=False`, the 3x3 convs that
            `winograd.winograd_applies` to (stride 1, groups of at least 128
            channels) in their Winograd inference form (`WSConv2D(winograd=True)`).
        remat: recompute the residual branch in the backward pass instead of
            keeping its activations (`keras.remat`): less training memory for
            one more forward pass of the branch.  Stochastic depth stays
            outside the recomputed part, so the recomputation sees the same
            mask.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        expansion=0.5,
        group_width=128,
        big_width=True,
        stride=1,
        beta=1.0,
        alpha=0.2,
        se_ratio=0.5,
        stochdepth_rate=0.0,
        activation="gelu",
        use_two_convs=True,
        skip_gain_init=0.0,
        se_position="output",
        downsample="avg_pool",
        seed=None,
        standardize=True,
        remat=False,
        winograd=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.expansion = float(expansion)
        self.group_width = None if group_width is None else int(group_width)
        self.big_width = bool(big_width)
        self.stride = int(stride)
        self.beta = float(beta)
        self.alpha = float(alpha)
        self.se_ratio = float(se_ratio)
        self.stochdepth_rate = float(stochdepth_rate)
        self.activation = activation
        self.use_two_convs = bool(use_two_convs)
        self.skip_gain_init = float(skip_gain_init)
        if se_position not in SE_POSITIONS:
            raise ValueError(f"se_position must be one of {SE_POSITIONS}, got {se_position!r}")
        if downsample not in DOWNSAMPLES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLES}, got {downsample!r}")
        self.se_position = se_position
        self.downsample = downsample
        self.seed = seed
        self.standardize = bool(standardize)
        self.remat = bool(remat)
        self.winograd = bool(winograd)
        if self.winograd and self.standardize:
            raise ValueError("winograd=True is an inference form of the folded convs: it needs standardize=False")
        ws = {"standardize": self.standardize}

        self.mid_channels, self.groups = bottleneck_width(
            self.in_channels, self.out_channels, self.expansion, self.group_width, self.big_width
        )
        self.use_projection = self.stride > 1 or self.in_channels != self.out_channels

        # One activation instance serves every position: it holds no state.
        self.act = ScaledActivation(activation, name="act")
        self.conv0 = WSConv2D(self.mid_channels, 1, name="conv0", **ws)
        per_group = self.mid_channels // self.groups

        def winograd_3x3(stride):
            return self.winograd and winograd_applies((3, 3), (stride, stride), per_group)

        self.conv1 = WSConv2D(
            self.mid_channels, 3, strides=self.stride, groups=self.groups, name="conv1",
            winograd=winograd_3x3(self.stride), **ws,
        )
        self.conv1b = (
            WSConv2D(self.mid_channels, 3, groups=self.groups, name="conv1b", winograd=winograd_3x3(1), **ws)
            if self.use_two_convs
            else None
        )
        self.conv2 = WSConv2D(self.out_channels, 1, name="conv2", **ws)
        pooled = self.stride > 1 and self.downsample == "avg_pool"
        shortcut_stride = 1 if pooled else self.stride
        self.conv_shortcut = (
            WSConv2D(self.out_channels, 1, strides=shortcut_stride, name="conv_shortcut", **ws)
            if self.use_projection
            else None
        )
        # Keras' AveragePooling2D with "same" padding divides by the number of
        # valid elements, like Haiku's avg_pool: reuse it.
        self.pool = keras.layers.AveragePooling2D(2, strides=2, padding="same", name="shortcut_pool") if pooled else None
        se_channels = self.mid_channels if self.se_position == "bottleneck" else self.out_channels
        self.squeeze_excite = (
            SqueezeExcite(se_channels, self.se_ratio, name="squeeze_excite") if self.se_position else None
        )
        self.stochastic_depth = (
            StochasticDepth(self.stochdepth_rate, seed=seed, name="stochastic_depth")
            if self.stochdepth_rate > 0.0
            else None
        )

    def build(self, input_shape):
        if input_shape[-1] != self.in_channels:
            raise ValueError(f"{self.name}: expected {self.in_channels} input channels, got {input_shape[-1]}")
        self.skip_gain = self.add_weight(
            name="skip_gain", shape=(), initializer=keras.initializers.Constant(self.skip_gain_init)
        )
        # Spatial sizes too: the Winograd form picks its tile from them.
        batch, height, width = input_shape[:3]
        strided = tuple(None if side is None else -(-side // self.stride) for side in (height, width))
        self.conv0.build((batch, height, width, self.in_channels))
        self.conv1.build((batch, height, width, self.mid_channels))
        if self.conv1b is not None:
            self.conv1b.build((batch, *strided, self.mid_channels))
        self.conv2.build((batch, *strided, self.mid_channels))
        if self.conv_shortcut is not None:
            self.conv_shortcut.build((batch, *(strided if self.pool is not None else (height, width)), self.in_channels))
        if self.squeeze_excite is not None:
            self.squeeze_excite.build((batch, *strided, self.squeeze_excite.channels))

    def residual_and_shortcut(self, inputs):
        """Returns `(branch, shortcut)`: the branch (conv2 output, gated) before stochastic depth and skip gain."""
        out = self.act(inputs) * ops.cast(self.beta, inputs.dtype)
        if self.pool is not None:
            shortcut = self.conv_shortcut(self.pool(out))
        elif self.conv_shortcut is not None:
            shortcut = self.conv_shortcut(out)
        else:
            shortcut = inputs
        out = self.conv0(out)
        out = self.conv1(self.act(out))
        if self.conv1b is not None:
            out = self.conv1b(self.act(out))
        if self.se_position == "bottleneck":
            out = self._gate(out)
        out = self.conv2(self.act(out))
        if self.se_position == "output":
            out = self._gate(out)
        return out, shortcut

    def _gate(self, out):
        # DeepMind's `2 * se(out) * out`: the factor 2 keeps the branch's variance.
        return (self.squeeze_excite(out) * ops.cast(2.0, out.dtype)) * out

    def call(self, inputs, training=False):
        branch = keras.remat(self.residual_and_shortcut) if self.remat and training else self.residual_and_shortcut
        out, shortcut = branch(inputs)
        if self.stochastic_depth is not None:
            out = self.stochastic_depth(out, training=training)
        out = out * ops.cast(self.skip_gain, out.dtype)
        return out * ops.cast(self.alpha, out.dtype) + shortcut

    def compute_output_shape(self, input_shape):
        spatial = [None if s is None else -(-s // self.stride) for s in input_shape[1:3]]
        return (input_shape[0], *spatial, self.out_channels)

    def convs(self):
        """The block's `WSConv2D` layers (conv0, conv1, conv1b, conv2, conv_shortcut), those present."""
        return [c for c in (self.conv0, self.conv1, self.conv1b, self.conv2, self.conv_shortcut) if c is not None]

    def count_macs(self, height, width):
        """Multiply-accumulates of the block's convs and SE linears for one image."""
        macs, (h, w) = self.conv0.count_macs(height, width)
        m, (h, w) = self.conv1.count_macs(h, w)
        macs += m
        if self.conv1b is not None:
            macs += self.conv1b.count_macs(h, w)[0]
        macs += self.conv2.count_macs(h, w)[0]
        if self.conv_shortcut is not None:
            # A pooled shortcut's conv sees the downsampled map, a strided one the block input.
            macs += self.conv_shortcut.count_macs(*((h, w) if self.pool is not None else (height, width)))[0]
        if self.squeeze_excite is not None:
            macs += self.squeeze_excite.count_macs()
        return macs, (h, w)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "in_channels": self.in_channels,
                "out_channels": self.out_channels,
                "expansion": self.expansion,
                "group_width": self.group_width,
                "big_width": self.big_width,
                "stride": self.stride,
                "beta": self.beta,
                "alpha": self.alpha,
                "se_ratio": self.se_ratio,
                "stochdepth_rate": self.stochdepth_rate,
                "activation": self.activation,
                "use_two_convs": self.use_two_convs,
                "skip_gain_init": self.skip_gain_init,
                "se_position": self.se_position,
                "downsample": self.downsample,
                "seed": self.seed,
                "standardize": self.standardize,
                "winograd": self.winograd,
                "remat": self.remat,
            }
        )
        return config
