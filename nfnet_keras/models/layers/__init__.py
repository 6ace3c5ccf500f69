"""NFNet layers: weight-standardised convs, gamma-scaled activations, SE and ECA, stochastic depth, the blocks.

DeepMind's form (`WSConv2D`, `NFBlock`) and timm's (`ScaledStdConv2D`,
`NormFreeBlock`, `EfficientChannelAttention`, `SymmetricMaxPool2D`) compute
differently; see each class.
"""

from nfnet_keras.models.layers.activations import GAMMAS, ScaledActivation
from nfnet_keras.models.layers.eca import EfficientChannelAttention
from nfnet_keras.models.layers.nf_block import NFBlock, bottleneck_width
from nfnet_keras.models.layers.squeeze_excite import SqueezeExcite
from nfnet_keras.models.layers.std_conv_timm import ScaledStdConv2D, conv2d_symmetric
from nfnet_keras.models.layers.stochastic_depth import StochasticDepth
from nfnet_keras.models.layers.timm_block import NormFreeBlock, SymmetricMaxPool2D
from nfnet_keras.models.layers.ws_conv import WSConv2D

__all__ = [
    "GAMMAS",
    "EfficientChannelAttention",
    "NFBlock",
    "NormFreeBlock",
    "ScaledActivation",
    "ScaledStdConv2D",
    "SqueezeExcite",
    "StochasticDepth",
    "SymmetricMaxPool2D",
    "WSConv2D",
    "bottleneck_width",
    "conv2d_symmetric",
]
