"""The normalizer-free bottleneck block of NFNet-F models."""

import keras
from keras import ops

from nfnet_keras.models.layers.activations import ScaledActivation
from nfnet_keras.models.layers.squeeze_excite import SqueezeExcite
from nfnet_keras.models.layers.stochastic_depth import StochasticDepth
from nfnet_keras.models.layers.ws_conv import WSConv2D


def bottleneck_width(in_channels, out_channels, expansion, group_width, big_width=True):
    """DeepMind's bottleneck: `int(ch * expansion)` rounded down to whole groups.

    Returns `(mid_channels, groups)`; raises ValueError when less than one group fits.
    """
    width = int((out_channels if big_width else in_channels) * expansion)
    groups = width // group_width
    if groups < 1:
        raise ValueError(
            f"bottleneck of {width} channels is smaller than group_width={group_width}; "
            "lower group_width or raise the stage width / expansion"
        )
    return group_width * groups, groups


@keras.saving.register_keras_serializable(package="nfnet_keras")
class NFBlock(keras.layers.Layer):
    """NFNet block (DeepMind's `nfnet.NFBlock`), in the reference's exact order.

        out = act(x) * beta
        shortcut = conv_shortcut(avg_pool(out))   if stride > 1
                   conv_shortcut(out)             elif in != out channels
                   x                              otherwise
        out = conv0(out)                          1x1 -> mid
        out = conv1(act(out))                     3x3, stride, groups
        out = conv1b(act(out))                    3x3, groups (use_two_convs)
        out = conv2(act(out))                     1x1 -> out
        out = 2 * squeeze_excite(out) * out
        out = stochastic_depth(out)               training only, if rate > 0
        return out * skip_gain * alpha + shortcut

    `beta` (1 / expected std of the input) and `alpha` are constants computed by
    the model; `skip_gain` is a learnable scalar initialised to 0.

    Args:
        in_channels, out_channels: block input and output widths.
        expansion, group_width, big_width: bottleneck width rule.
        stride: stride of conv1 and of the shortcut average pool.
        beta, alpha: signal-propagation constants.
        se_ratio: squeeze-excite hidden ratio.
        stochdepth_rate: per-example drop rate of the residual branch.
        activation: name of the gamma-scaled nonlinearity.
        use_two_convs: include conv1b (True for NFNets).
        skip_gain_init: initial skip gain (0 as in the reference).
        seed: optional seed for stochastic depth.
        standardize: False builds the convs in their folded inference form.
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
        seed=None,
        standardize=True,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.expansion = float(expansion)
        self.group_width = int(group_width)
        self.big_width = bool(big_width)
        self.stride = int(stride)
        self.beta = float(beta)
        self.alpha = float(alpha)
        self.se_ratio = float(se_ratio)
        self.stochdepth_rate = float(stochdepth_rate)
        self.activation = activation
        self.use_two_convs = bool(use_two_convs)
        self.skip_gain_init = float(skip_gain_init)
        self.seed = seed
        self.standardize = bool(standardize)
        self.remat = bool(remat)
        ws = {"standardize": self.standardize}

        self.mid_channels, self.groups = bottleneck_width(
            self.in_channels, self.out_channels, self.expansion, self.group_width, self.big_width
        )
        self.use_projection = self.stride > 1 or self.in_channels != self.out_channels

        # One activation instance serves every position: it holds no state.
        self.act = ScaledActivation(activation, name="act")
        self.conv0 = WSConv2D(self.mid_channels, 1, name="conv0", **ws)
        self.conv1 = WSConv2D(self.mid_channels, 3, strides=self.stride, groups=self.groups, name="conv1", **ws)
        self.conv1b = (
            WSConv2D(self.mid_channels, 3, groups=self.groups, name="conv1b", **ws) if self.use_two_convs else None
        )
        self.conv2 = WSConv2D(self.out_channels, 1, name="conv2", **ws)
        self.conv_shortcut = (
            WSConv2D(self.out_channels, 1, name="conv_shortcut", **ws) if self.use_projection else None
        )
        # Keras' AveragePooling2D with "same" padding divides by the number of
        # valid elements, like Haiku's avg_pool: reuse it.
        self.pool = (
            keras.layers.AveragePooling2D(2, strides=2, padding="same", name="shortcut_pool")
            if self.stride > 1
            else None
        )
        self.squeeze_excite = SqueezeExcite(self.out_channels, self.se_ratio, name="squeeze_excite")
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
        batch = input_shape[0]
        self.conv0.build((batch, None, None, self.in_channels))
        self.conv1.build((batch, None, None, self.mid_channels))
        if self.conv1b is not None:
            self.conv1b.build((batch, None, None, self.mid_channels))
        self.conv2.build((batch, None, None, self.mid_channels))
        if self.conv_shortcut is not None:
            self.conv_shortcut.build((batch, None, None, self.in_channels))
        self.squeeze_excite.build((batch, None, None, self.out_channels))

    def residual_and_shortcut(self, inputs):
        """Returns `(branch, shortcut)`: the gated branch before stochastic depth and skip gain."""
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
        out = self.conv2(self.act(out))
        out = (self.squeeze_excite(out) * ops.cast(2.0, out.dtype)) * out
        return out, shortcut

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
            macs += self.conv_shortcut.count_macs(h, w)[0]
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
                "seed": self.seed,
                "standardize": self.standardize,
                "remat": self.remat,
            }
        )
        return config
