"""Model families, their configuration tables, layers, folding and MAC counting.

Everything here uses `keras.ops` only and imports without TensorFlow.
"""

from nfnet_keras.models import layers, variants
from nfnet_keras.models.base import NFModel
from nfnet_keras.models.flops import count_macs
from nfnet_keras.models.folding import fold_weight_standardization
from nfnet_keras.models.nfnet import (
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
from nfnet_keras.models.registry import ModelSpec, create_model, get_spec, model_names

__all__ = [
    "NFModel",
    "ModelSpec",
    "create_model",
    "get_spec",
    "model_names",
    "layers",
    "variants",
    "count_macs",
    "fold_weight_standardization",
    "NFNet",
    "NFNetF0",
    "NFNetF0Plus",
    "NFNetF1",
    "NFNetF1Plus",
    "NFNetF2",
    "NFNetF2Plus",
    "NFNetF3",
    "NFNetF3Plus",
    "NFNetF4",
    "NFNetF4Plus",
    "NFNetF5",
    "NFNetF5Plus",
    "NFNetF6",
    "NFNetF6Plus",
    "NFNetF7",
    "NFNetF7Plus",
]
