"""nfnet-keras: Normalizer-Free Networks for Keras 3.

The top level holds what a user of the models needs: the model constructors
(keras.applications-style functions, `NFNet`, and `create_model(name)` with
`model_names()`), `preprocess_input`,
`prepare_images` and `decode_predictions`. Everything else lives in its
subpackage:

- `nfnet_keras.models`: families, configuration tables, layers, folding, MACs.
- `nfnet_keras.weights`: checkpoint readers, name mapping, download and cache.
- `nfnet_keras.preprocessing`: the evaluation transform, normalisation,
  decoding, ImageNet labels.
- `nfnet_keras.data`: image sources, augmentation, the tf.data pipeline
  (TensorFlow).
- `nfnet_keras.training`: AGC, optimizers, EMA, schedules, losses, SAM,
  distribution, and the `train.py` run.
- `nfnet_keras.export`: SavedModel/TF Serving and TFLite/LiteRT (TensorFlow).
- `nfnet_keras.analysis`: signal propagation.
"""

import importlib
import warnings

from nfnet_keras.models import nf_regnet as _nf_regnet
from nfnet_keras.models import nf_resnet as _nf_resnet
from nfnet_keras.models import nfnet as _nfnet
from nfnet_keras.models import timm_nfnet as _timm_nfnet
from nfnet_keras.models.nf_regnet import *  # noqa: F403  (NFRegNet and NFRegNetB0 ... NFRegNetB8)
from nfnet_keras.models.nf_resnet import *  # noqa: F403  (NFResNet and NFResNet50 ... NFResNet600)
from nfnet_keras.models.nfnet import *  # noqa: F403  (NFNet and NFNetF0 ... NFNetF7Plus)
from nfnet_keras.models.timm_nfnet import *  # noqa: F403  (TimmNFNet, ECANFNetL0 ... ECANFNetL3, NFNetL0)
from nfnet_keras.models.registry import create_model, model_names
from nfnet_keras.preprocessing import decode_predictions, prepare_images, preprocess_input

__version__ = "0.2.0"

__all__ = [
    *_nfnet.__all__,
    *_nf_regnet.__all__,
    *_nf_resnet.__all__,
    *_timm_nfnet.__all__,
    "create_model",
    "decode_predictions",
    "model_names",
    "prepare_images",
    "preprocess_input",
]

# Names the top level exported before 0.2, and where they live now. They still
# resolve, with a DeprecationWarning, so that existing code keeps running.
_MOVED = {
    "AGCAdamW": "nfnet_keras.training",
    "AGCSGD": "nfnet_keras.training",
    "NFNetCrossEntropy": "nfnet_keras.training",
    "NFNetSGD": "nfnet_keras.training",
    "NFNetTrainer": "nfnet_keras.training",
    "WarmupCosineDecay": "nfnet_keras.training",
    "adaptive_clip_gradients": "nfnet_keras.training",
    "unitwise_norm": "nfnet_keras.training",
    "with_agc": "nfnet_keras.training",
    "count_macs": "nfnet_keras.models",
    "fold_weight_standardization": "nfnet_keras.models",
    "eval_transform": "nfnet_keras.preprocessing",
    "imagenet_class_names": "nfnet_keras.preprocessing",
    "load_image": "nfnet_keras.preprocessing",
    "SignalPropagation": "nfnet_keras.analysis",
    "plot_signal_propagation": "nfnet_keras.analysis",
    "set_activation_gamma": "nfnet_keras.analysis",
    "set_skip_gains": "nfnet_keras.analysis",
    "signal_propagation": "nfnet_keras.analysis",
}


def __getattr__(name):
    if name in _MOVED:
        module = _MOVED[name]
        warnings.warn(
            f"nfnet_keras.{name} moved to {module}.{name}; import it from there.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'nfnet_keras' has no attribute {name!r}")
