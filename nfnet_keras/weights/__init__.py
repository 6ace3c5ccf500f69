"""Checkpoint readers (DeepMind, timm, Keras files), name mapping, download and cache.

`formats` reads files without executing their contents; `loading` maps their
names onto a model and refuses any file that does not fit it exactly.
"""

from nfnet_keras.weights.formats import CheckpointError, read_npz, read_safetensors, write_npz_atomic
from nfnet_keras.weights.loading import (
    WeightsMismatchError,
    assign_weights,
    imagenet_weights,
    load_pretrained,
    read_weights_file,
)

__all__ = [
    "CheckpointError",
    "WeightsMismatchError",
    "assign_weights",
    "imagenet_weights",
    "load_pretrained",
    "read_npz",
    "read_safetensors",
    "read_weights_file",
    "write_npz_atomic",
]
