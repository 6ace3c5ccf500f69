"""Model families, their configuration tables, layers, folding and MAC counting.

Families: NFNet-F (`nfnet`, table in `variants`), NF-RegNet (`nf_regnet`) and
NF-ResNet (`nf_resnet`), all built from the same layers and reachable by name
through `create_model`.
timm's own NFNets (`timm_nfnet`: `timm/eca_nfnet_l0`, `timm/nf_regnet_b1`, `timm/nf_resnet50`, ...)
have their own layers.

Everything here uses `keras.ops` only and imports without TensorFlow.
"""

from nfnet_keras.models import layers, nf_regnet, nf_resnet, nfnet, variants
from nfnet_keras.models import timm_nfnet
from nfnet_keras.models.base import NFModel
from nfnet_keras.models.flops import count_macs
from nfnet_keras.models.folding import fold_weight_standardization
from nfnet_keras.models.loading import LoadedModel, load_model
from nfnet_keras.models.nf_regnet import *  # noqa: F403  (NFRegNet and NFRegNetB0 ... NFRegNetB8)
from nfnet_keras.models.nf_resnet import *  # noqa: F403  (NFResNet and NFResNet50 ... NFResNet600)
from nfnet_keras.models.nfnet import *  # noqa: F403  (NFNet and NFNetF0 ... NFNetF7Plus)
from nfnet_keras.models.timm_nfnet import *  # noqa: F403  (TimmNFNet, ECANFNetL0 ... NFNetL0, TimmNFRegNetB1, ...)
from nfnet_keras.models.registry import ModelSpec, create_model, get_spec, model_names

__all__ = [
    "NFModel",
    "LoadedModel",
    "load_model",
    "ModelSpec",
    "create_model",
    "get_spec",
    "model_names",
    "layers",
    "nf_regnet",
    "nf_resnet",
    "timm_nfnet",
    "variants",
    "count_macs",
    "fold_weight_standardization",
    *nfnet.__all__,
    *nf_regnet.__all__,
    *nf_resnet.__all__,
    *timm_nfnet.__all__,
]
