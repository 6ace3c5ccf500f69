"""NFNet layers: weight-standardised conv, gamma-scaled activations, SE, stochastic depth, the block."""

from nfnet_keras.models.layers.activations import GAMMAS, ScaledActivation
from nfnet_keras.models.layers.nf_block import NFBlock, bottleneck_width
from nfnet_keras.models.layers.squeeze_excite import SqueezeExcite
from nfnet_keras.models.layers.stochastic_depth import StochasticDepth
from nfnet_keras.models.layers.ws_conv import WSConv2D

__all__ = [
    "GAMMAS",
    "NFBlock",
    "ScaledActivation",
    "SqueezeExcite",
    "StochasticDepth",
    "WSConv2D",
    "bottleneck_width",
]
