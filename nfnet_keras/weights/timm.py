"""timm's NormFreeNet state dicts (`model.safetensors`) into the models of `nfnet_keras.models.timm_nfnet`.

The Keras layers of those models are named after timm's modules, so every
variable has exactly one timm key (`timm_key`) and one layout conversion:

| Keras variable | timm tensor | conversion |
|---|---|---|
| `stem_conv1/kernel` (kh, kw, in, out) | `stem.conv1.weight` (out, in, kh, kw) | transpose |
| `stem_conv/bias` (NF-RegNet, NF-ResNet) | `stem.conv.bias` | none |
| `stages_2_0/conv2/gain` (out,) | `stages.2.0.conv2.gain` (out, 1, 1, 1) | reshape |
| `stages_2_0/downsample_conv/bias` | `stages.2.0.downsample.conv.bias` | none |
| `stages_2_0/attn_last/kernel` (k, 1, 1) | `stages.2.0.attn_last.conv.weight` (1, 1, k) | transpose |
| `stages_2_0/attn_last/linear/kernel` (in, out) | `stages.2.0.attn_last.fc1.weight` (out, in, 1, 1) | squeeze, .T |
| `stages_2_0/attn/linear_1/bias` (NF-RegNet) | `stages.2.0.attn.fc2.bias` | none |
| `predictions/kernel` (in, out) | `head.fc.weight` (out, in) | transpose |

A state dict is checked against the model by timm's names before anything
is assigned: a missing, unexpected or mis-shaped tensor is a
`WeightsMismatchError` (a `ValueError`) whose one-line message names it.

`weights="imagenet"` is timm's pretrained `model.safetensors` from the
Hugging Face Hub (`IMAGENET_WEIGHTS`, `load_imagenet`), for these models and
for `timm/dm_nfnet_f0` ... `f6`, our NFNet-F models with timm's port of
DeepMind's weights (mapped by `nfnet_keras.weights.loading.timm_to_keras`).
"""

import logging
import os
import re

import numpy as np

from nfnet_keras.models.base import CLASSIFIER_LAYER
from nfnet_keras.weights import formats, hub, loading

logger = logging.getLogger(__name__)

__all__ = [
    "CLASSIFIER_KEY",
    "DM_PREFIX",
    "IMAGENET_WEIGHTS",
    "expected_state_dict",
    "imagenet_file",
    "load",
    "load_imagenet",
    "load_state_dict",
    "load_weights",
    "timm_key",
]

#: timm's names of its ports of DeepMind's NFNet-F models (our `nfnet.py` architecture).
DM_PREFIX = "dm_nfnet_"
# timm model -> pretrained tag of its default_cfgs (timm/models/nfnet.py, checked at commit 36d930ff;
# the NF-RegNet and NF-ResNet tags against timm 1.0.31's `timm.list_pretrained("nf_*")`). Every other
# timm NFNet (eca_nfnet_l3, nf_regnet_b0/b2-b5, nf_resnet26/101, nf_seresnet*, nf_ecaresnet*) has none.
_TAGS = {
    "eca_nfnet_l0": "ra2_in1k",
    "eca_nfnet_l1": "ra2_in1k",
    "eca_nfnet_l2": "ra3_in1k",
    "nfnet_l0": "ra2_in1k",
    "nf_regnet_b1": "ra2_in1k",
    "nf_resnet50": "ra2_in1k",
    **{f"{DM_PREFIX}f{i}": "dm_in1k" for i in range(7)},
}
#: `{timm model: HubFile}` of the ImageNet weights `weights="imagenet"` loads. The files' sizes and
#: sha256 are not recorded (not known without reaching the Hub): a file is taken as it comes and
#: then checked tensor by tensor, by name and shape, against the model.
IMAGENET_WEIGHTS = {model: hub.HubFile(f"timm/{model}.{tag}") for model, tag in _TAGS.items()}

_HEAD = "head.fc."
#: timm's classifier kernel, `(classes, features)`.
CLASSIFIER_KEY = _HEAD + "weight"
# Keras sub-layer path inside a block -> timm module path and layout. `attn` (RegNet-style blocks,
# after conv2) and `attn_last` (after conv3) are ECA (timm's Conv1d) or SE (a 1x1 Conv2d pair).
_MODULES = {
    "conv1": ("conv1", "conv"),
    "conv2": ("conv2", "conv"),
    "conv2b": ("conv2b", "conv"),
    "conv3": ("conv3", "conv"),
    "downsample_conv": ("downsample.conv", "conv"),
    **{
        f"{gate}{inner}": (f"{gate}.{module}", layout)
        for gate in ("attn", "attn_last")
        for inner, module, layout in (
            ("", "conv", "eca"),
            ("/linear", "fc1", "pointwise"),
            ("/linear_1", "fc2", "pointwise"),
        )
    },
}
_PARAMS = {"kernel": "weight", "bias": "bias", "gain": "gain"}
# Entries of each kind a mismatch message names.
_LISTED = 8


def timm_key(keras_key):
    """The timm state-dict key and layout of a Keras variable key.

    `"stages_2_0/attn_last/kernel"` -> `("stages.2.0.attn_last.conv.weight", "eca")`.
    Layouts: `conv`, `gain`, `vector`, `eca`, `pointwise` (SE 1x1 conv as a
    Dense), `dense` (the classifier).

    Raises:
        KeyError: for a key that is not a variable of a timm NFNet.
    """
    layer, *inner, param = keras_key.split("/")
    inner = "/".join(inner)
    block = re.fullmatch(r"stages_(\d+)_(\d+)", layer)
    # The deep stem's stem_conv1 ... stem_conv4, or the single stem_conv (timm's stem.conv).
    stem = re.fullmatch(r"stem_conv([1-4]?)", layer)
    if param not in _PARAMS:
        raise KeyError(keras_key)
    if block and inner in _MODULES:
        module, layout = _MODULES[inner]
        module = f"stages.{block.group(1)}.{block.group(2)}.{module}"
    elif stem and not inner:
        module, layout = f"stem.conv{stem.group(1)}", "conv"
    elif layer == "final_conv" and not inner:
        module, layout = "final_conv", "conv"
    elif layer == CLASSIFIER_LAYER and not inner and param != "gain":
        module, layout = "head.fc", "dense"
    else:
        raise KeyError(keras_key)
    if param == "gain":
        layout = "gain"
    elif param == "bias":
        layout = "vector"
    return f"{module}.{_PARAMS[param]}", layout


def _timm_shape(shape, layout):
    """The timm (PyTorch) shape of a Keras variable shape."""
    if layout == "conv":
        kh, kw, fan, out = shape
        return (out, fan, kh, kw)
    if layout == "gain":
        return (shape[0], 1, 1, 1)
    if layout == "eca":
        return tuple(reversed(shape))
    if layout == "pointwise":
        return (shape[1], shape[0], 1, 1)
    if layout == "dense":
        return (shape[1], shape[0])
    return tuple(shape)


def _to_keras(array, layout):
    """A timm tensor in the Keras layout (shapes already checked)."""
    if layout == "conv":
        array = np.transpose(array, (2, 3, 1, 0))
    elif layout == "gain":
        array = array.reshape(-1)
    elif layout == "eca":
        array = np.transpose(array, (2, 1, 0))
    elif layout == "pointwise":
        array = array[:, :, 0, 0].T
    elif layout == "dense":
        array = array.T
    return np.array(array, dtype=np.float32, order="C")


def _layouts(model):
    """`{timm_key: (keras_key, layout, timm_shape)}` for every variable of `model`, in model order."""
    table = {}
    for keras_key, variable in loading.model_weights(model).items():
        try:
            key, layout = timm_key(keras_key)
        except KeyError:
            raise ValueError(f"model '{model.name}' is not a timm NFNet: no timm name for {keras_key}") from None
        table[key] = (keras_key, layout, _timm_shape(tuple(variable.shape), layout))
    return table


def expected_state_dict(model):
    """`{timm_key: shape}`: the state dict timm would have for `model`, in PyTorch layouts."""
    return {key: shape for key, (_, _, shape) in _layouts(model).items()}


def load_state_dict(model, state_dict, source="a timm state dict"):
    """Checks a timm state dict against `model` by timm's names and shapes, then assigns it.

    The classifier (`head.fc.*`) is left out when the model has none
    (`include_top=False`) or a different number of classes, for fine-tuning.
    Floating tensors of any precision are assigned as float32.

    Args:
        model: a model built by `nfnet_keras.models.timm_nfnet`.
        state_dict: `{timm_key: array}` in PyTorch layouts.
        source: where the state dict comes from, for messages.

    Raises:
        WeightsMismatchError: one line naming the missing, unexpected and
            mis-shaped (or non-floating) tensors. Nothing is assigned then.
    """
    table = _layouts(model)
    state = {key: np.asarray(value) for key, value in state_dict.items()}
    head = table.get(_HEAD + "weight")
    file_head = state.get(_HEAD + "weight")
    new_head = head is not None and file_head is not None and file_head.shape != head[2]
    if new_head:
        logger.info("Classifier shape differs from %s: loading everything but %s*.", source, _HEAD)
        table = {key: entry for key, entry in table.items() if not key.startswith(_HEAD)}
    if head is None or new_head:
        state = {key: value for key, value in state.items() if not key.startswith(_HEAD)}
    missing = [key for key in table if key not in state]
    unexpected = [key for key in state if key not in table]
    mismatched = []
    for key in (key for key in state if key in table):
        value, expected = state[key], table[key][2]
        if value.shape != expected:
            mismatched.append(f"{key} (file shape {value.shape}, model shape {expected})")
        elif value.dtype.kind != "f":
            mismatched.append(f"{key} (dtype {value.dtype}, expected floating point)")
    if missing or unexpected or mismatched:
        problems = [
            f"{what} ({len(keys)}): {_listing(keys)}"
            for what, keys in (("missing", missing), ("not in the model", unexpected), ("mismatched", mismatched))
            if keys
        ]
        raise loading.WeightsMismatchError(
            f"timm weights from {source} do not fit model '{model.name}': " + "; ".join(problems)
        )
    arrays = {keras_key: _to_keras(state[key], layout) for key, (keras_key, layout, _) in table.items()}
    loading.assign_weights(model, arrays, source, skip_classifier=new_head)
    return model


def _listing(keys):
    more = f", ... ({len(keys) - _LISTED} more)" if len(keys) > _LISTED else ""
    return ", ".join(keys[:_LISTED]) + more


def load_weights(model, path):
    """Loads a weights file into a timm NFNet: timm's safetensors by timm's names, Keras files by ours.

    Args:
        model: a model built by `nfnet_keras.models.timm_nfnet`.
        path: timm's `model.safetensors` (PyTorch layouts), or a Keras
            `.weights.h5` / `.keras` file or an `.npz` keyed like the model's
            variables (`nfnet_keras.weights.loading`).

    Raises:
        WeightsMismatchError: for weights that do not fit the model.
        CheckpointError: for an unreadable file.
    """
    path = os.fspath(path)
    if formats.sniff_format(path) == "safetensors":
        return load_state_dict(model, formats.read_safetensors(path), path)
    return loading.load_pretrained(model, path)


def load(model, weights, model_name):
    """Loads `weights` into a model of timm's `model_name`: `"imagenet"` (`load_imagenet`) or a file."""
    if weights == "imagenet":
        return load_imagenet(model, model_name)
    return load_weights(model, weights)


def imagenet_file(model_name, cache_dir=None):
    """The local path of timm's ImageNet `model.safetensors` for `model_name` (`hub.fetch`).

    Args:
        model_name: timm's model name (`"eca_nfnet_l0"`, `"dm_nfnet_f0"`).
        cache_dir: the Keras cache root (default `$KERAS_HOME` or `~/.keras`).

    Raises:
        ValueError: for a model without published weights.
        WeightsDownloadError: when the file is neither cached nor downloadable.
    """
    if model_name not in IMAGENET_WEIGHTS:
        raise ValueError(
            f"timm publishes no ImageNet weights for {model_name}; available: {', '.join(IMAGENET_WEIGHTS)}"
        )
    return hub.fetch(IMAGENET_WEIGHTS[model_name], cache_dir)


def load_imagenet(model, model_name, cache_dir=None):
    """Loads timm's ImageNet weights for `model_name` into `model` (fetched by `imagenet_file`).

    timm's light models load by timm's names (`load_state_dict`); `dm_nfnet_*`
    into an NFNet-F model by DeepMind's layer names (`loading.load_pretrained`).
    Either way every tensor is checked by name and shape before anything is
    assigned, and the classifier is left out for a model without one or with
    another number of classes.

    Raises:
        ValueError: for a model without published weights.
        WeightsDownloadError: when the file is neither cached nor downloadable.
        WeightsMismatchError: for a file that does not fit the model.
        CheckpointError: for an unreadable file.
    """
    path = imagenet_file(model_name, cache_dir)
    if model_name.startswith(DM_PREFIX):
        return loading.load_pretrained(model, path)
    source = f"timm's {IMAGENET_WEIGHTS[model_name].repo_id} ({path})"
    return load_state_dict(model, formats.read_safetensors(path), source)
