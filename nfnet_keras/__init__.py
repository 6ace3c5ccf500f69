"""nfnet-keras: Normalizer-Free Networks (NFNet-F0..F7, F0+..F7+) for Keras 3."""

from nfnet_keras import layers, variants
from nfnet_keras.flops import count_macs
from nfnet_keras.imagenet import decode_predictions, imagenet_class_names
from nfnet_keras.model import (
    NFNet,
    NFNetF0,
    NFNetF0Plus,
    NFNetF1,
    NFNetF1Plus,
    NFNetF2,
    NFNetF2Plus,
    NFNetF3,
    NFNetF3Plus,
    NFNetF4,
    NFNetF4Plus,
    NFNetF5,
    NFNetF5Plus,
    NFNetF6,
    NFNetF6Plus,
    NFNetF7,
    NFNetF7Plus,
)
from nfnet_keras.preprocessing import eval_transform, load_image, prepare_images, preprocess_input

__version__ = "0.1.0"
