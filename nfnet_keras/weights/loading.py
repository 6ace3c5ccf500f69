"""Pretrained weights: DeepMind's checkpoints, timm's safetensors and Keras files.

Every source is first turned into a flat dict `{keras_key: ndarray}` whose keys
are the model's variable paths (`nf_block_3/conv1/kernel`,
`nf_block_3/skip_gain`, `predictions/bias`, ...).  `assign_weights` then checks
the dict against the model (every missing, unexpected, mis-shaped or
non-float32 entry is reported by name) and assigns it. Keras `.weights.h5`
and `.keras` files go the same way (`read_keras_weights`), so a file that does
not fit is an error, never a model with freshly initialised layers left in it.

DeepMind's Haiku layout needs no transposes (HWIO convs and (in, out) linears
are Keras' layouts), only names; timm's PyTorch layout needs the transposes
listed in `timm_to_keras`.
"""

import io
import logging
import os
import re
import zipfile

import numpy as np

from nfnet_keras.models import variants
from nfnet_keras.models.base import CLASSIFIER_LAYER
from nfnet_keras.weights import formats

logger = logging.getLogger(__name__)

BASE_WEIGHTS_URL = "https://storage.googleapis.com/dm-nfnets/"
# md5 of DeepMind's published files as recorded by a third party (ethanluoyc/jam
# checkpoints.py); unverified by DeepMind itself.
WEIGHTS_MD5 = {
    "F0": "0a41039da1cb43adf47f1b7d86ddfe0f",
    "F1": "c9126bbfaf855f9ddb7ff3b902558781",
    "F2": "7a018d8d1498020e2f5a8719a1e7f53f",
    "F3": "d8e1e78d26db659c486150dbaccbe78a",
    "F4": "f5974a7e3388aa81b91a9f1403e759a4",
    "F5": "8639e925de951030651ac775b9f915c3",
    "F6": "b16cca40ac1ecec2bd5e3273866da0c1",
}
CLASSIFIER_PREFIX = CLASSIFIER_LAYER + "/"
# Entries of each kind that a mismatch message names.
_LISTED = 8


class WeightsMismatchError(ValueError):
    """The weights do not fit the model; the message lists every problem by name."""


class WeightsDownloadError(OSError):
    """A checkpoint could not be downloaded, or the download has the wrong hash; the message is one line.

    It names the file, the URL and the reason (or both hashes), and where to
    put the file by hand.
    """


# ----------------------------------------------------------------------------
# Name mapping
# ----------------------------------------------------------------------------
_DM_PARAM = {"w": "kernel", "b": "bias", "bias": "bias", "gain": "gain", "skip_gain": "skip_gain"}
_DM_BLOCK = re.compile(r"^nf_block(?:_(\d+))?$")
# The root module of each DeepMind family's Haiku tree (`nfnet.py`, `nf_regnet.py`, `nf_resnet.py`).
DM_ROOTS = ("NFNet", "NF_RegNet", "NF_ResNet")


def dm_key(module, param):
    """Maps a Haiku `(module, param)` pair to the Keras key, e.g.

    `("NFNet/~/nf_block_3/~/squeeze_excite/~/linear_1", "b")` ->
    `"nf_block_3/squeeze_excite/linear_1/bias"`; `("NFNet/~/linear", "w")` ->
    `"predictions/kernel"`. NF-RegNet and NF-ResNet trees (`NF_RegNet/~/...`,
    `NF_ResNet/~/...`, stem `initial_conv`) map the same way. Raises KeyError
    for names outside these trees.
    """
    parts = module.split("/~/")
    if len(parts) < 2 or parts[0] not in DM_ROOTS or param not in _DM_PARAM:
        raise KeyError(f"{module}/{param}")
    parts = parts[1:]
    block = _DM_BLOCK.match(parts[0])
    if block:
        parts[0] = f"nf_block_{int(block.group(1) or 0)}"
    elif parts == ["linear"]:
        parts = ["predictions"]
    elif len(parts) != 1 or not re.match(r"^(stem_conv[0-3]|initial_conv|final_conv)$", parts[0]):
        raise KeyError(f"{module}/{param}")
    return "/".join(parts + [_DM_PARAM[param]])


def dm_to_keras(tree):
    """Flattens DeepMind's `{module: {param: array}}` tree to `{keras_key: array}`.

    Raises WeightsMismatchError naming every entry that is not part of an NFNet.
    """
    flat, unknown = {}, []
    for module, params in tree.items():
        for param, value in params.items():
            try:
                flat[dm_key(module, param)] = value
            except KeyError:
                unknown.append(f"{module}/{param}")
    if unknown:
        raise WeightsMismatchError(
            f"{len(unknown)} entries are not NFNet parameters (foreign checkpoint?): " + ", ".join(sorted(unknown)[:20])
        )
    return flat


_TIMM_BLOCK = re.compile(r"^stages\.(\d+)\.(\d+)\.(.+)$")
_TIMM_CONV = {"conv1": "conv0", "conv2": "conv1", "conv2b": "conv1b", "conv3": "conv2", "downsample.conv": "conv_shortcut"}
_TIMM_PARAM = {"weight": "kernel", "bias": "bias", "gain": "gain"}


def timm_to_keras(state):
    """Converts timm's `dm_nfnet_f*` state dict (PyTorch layout) to `{keras_key: array}`.

    Names: `stem.conv{1..4}` -> `stem_conv{0..3}`, block `conv1/conv2/conv2b/conv3`
    -> `conv0/conv1/conv1b/conv2`, `downsample.conv` -> `conv_shortcut`,
    `attn_last.fc1/fc2` -> `squeeze_excite/linear/linear_1`, `skipinit_gain` ->
    `skip_gain`, `head.fc` -> `predictions`; `stages.S.B` is numbered globally.
    Layouts: conv OIHW -> HWIO, gain (O,1,1,1) -> (O,), SE 1x1 conv
    (O,I,1,1) -> Dense (I,O), head (out,in) -> (in,out).
    """
    blocks = sorted({(int(m.group(1)), int(m.group(2))) for m in map(_TIMM_BLOCK.match, state) if m})
    block_index = {sb: i for i, sb in enumerate(blocks)}
    flat, unknown = {}, []
    for key, value in state.items():
        value = np.asarray(value)
        try:
            new_key, kind = _timm_key(key, block_index)
        except KeyError:
            unknown.append(key)
            continue
        if kind == "conv":
            value = np.transpose(value, (2, 3, 1, 0))
        elif kind == "gain":
            value = value.reshape(-1)
        elif kind == "se":
            value = value.reshape(value.shape[0], value.shape[1]).T
        elif kind == "dense":
            value = value.T
        elif kind == "scalar":
            value = value.reshape(())
        # np.array, not np.ascontiguousarray: the latter turns 0-d skip gains into shape (1,).
        flat[new_key] = np.array(value, order="C")
    if unknown:
        raise WeightsMismatchError(
            f"{len(unknown)} entries are not timm dm_nfnet parameters: " + ", ".join(sorted(unknown)[:20])
        )
    return flat


def _timm_key(key, block_index):
    match = _TIMM_BLOCK.match(key)
    if match:
        prefix = f"nf_block_{block_index[(int(match.group(1)), int(match.group(2)))]}"
        rest = match.group(3)
        if rest == "skipinit_gain":
            return f"{prefix}/skip_gain", "scalar"
        se = re.match(r"^attn_last\.(fc1|fc2)\.(weight|bias)$", rest)
        if se:
            name = "linear" if se.group(1) == "fc1" else "linear_1"
            kind = "se" if se.group(2) == "weight" else "vector"
            return f"{prefix}/squeeze_excite/{name}/{_TIMM_PARAM[se.group(2)]}", kind
        conv, _, param = rest.rpartition(".")
        if conv not in _TIMM_CONV or param not in _TIMM_PARAM:
            raise KeyError(key)
        return f"{prefix}/{_TIMM_CONV[conv]}/{_TIMM_PARAM[param]}", _conv_kind(param)
    stem = re.match(r"^stem\.conv([1-4])\.(weight|bias|gain)$", key)
    if stem:
        return f"stem_conv{int(stem.group(1)) - 1}/{_TIMM_PARAM[stem.group(2)]}", _conv_kind(stem.group(2))
    final = re.match(r"^final_conv\.(weight|bias|gain)$", key)
    if final:
        return f"final_conv/{_TIMM_PARAM[final.group(1)]}", _conv_kind(final.group(1))
    head = re.match(r"^head\.fc\.(weight|bias)$", key)
    if head:
        return f"predictions/{_TIMM_PARAM[head.group(1)]}", "dense" if head.group(1) == "weight" else "vector"
    raise KeyError(key)


def _conv_kind(param):
    return {"weight": "conv", "gain": "gain", "bias": "vector"}[param]


# ----------------------------------------------------------------------------
# Assignment
# ----------------------------------------------------------------------------
def model_weights(model):
    """`{keras_key: variable}` for every weight of an NFNet model."""
    return {_weight_key(layer, variable): variable for layer in model.layers for variable in layer.weights}


def _weight_key(layer, variable):
    """`nf_block_3/conv1/kernel`: the variable's path from its top-level layer on."""
    start = variable.path.find(layer.name + "/")
    return variable.path[start:] if start >= 0 else variable.path


def assign_weights(model, arrays, source, skip_classifier=False):
    """Checks `arrays` against `model` and assigns them.

    Args:
        model: the target model.
        arrays: `{keras_key: ndarray}`.
        source: a description of where the arrays come from, for messages.
        skip_classifier: leave `predictions/*` untouched (new head for
            fine-tuning, or a model without top).

    Raises:
        WeightsMismatchError: with a one-line message naming the first
            missing, unexpected, mis-shaped and non-float32 entries, and the
            variant the checkpoint looks like. Nothing is assigned then.
    """
    targets = model_weights(model)
    wanted = {k: v for k, v in targets.items() if not (skip_classifier and k.startswith(CLASSIFIER_PREFIX))}
    provided = {k: v for k, v in arrays.items() if not k.startswith(CLASSIFIER_PREFIX) or k in wanted}
    missing = sorted(set(wanted) - set(provided), key=_natural)
    unexpected = sorted(set(provided) - set(wanted), key=_natural)
    mismatched = []
    for key in sorted(set(wanted) & set(provided), key=_natural):
        value = np.asarray(provided[key])
        expected = tuple(wanted[key].shape)
        if value.shape != expected:
            mismatched.append(f"{key} (file shape {value.shape}, model shape {expected})")
        elif value.dtype != np.float32:
            mismatched.append(f"{key} (dtype {value.dtype}, expected float32)")
    if not (missing or unexpected or mismatched):
        for key, variable in wanted.items():
            variable.assign(provided[key])
        return
    problems = [
        f"{what} ({len(keys)}): " + ", ".join(keys[:_LISTED]) + _more(keys)
        for what, keys in (("missing", missing), ("not in the model", unexpected), ("mismatched", mismatched))
        if keys
    ]
    checkpoint_modules = {k.rsplit("/", 1)[0] for k in provided}
    model_modules = {k.rsplit("/", 1)[0] for k in wanted}
    if len(checkpoint_modules) != len(model_modules):
        # DeepMind's trees have one module per conv, SE linear, block and head: F0 94 ... F6 598.
        problems.insert(0, f"module count: file {len(checkpoint_modules)}, model {len(model_modules)}")
    blocks = {k.split("/")[0] for k in arrays if k.startswith("nf_block_")}
    model_blocks = {k.split("/")[0] for k in targets if k.startswith("nf_block_")}
    if blocks and len(blocks) != len(model_blocks):
        problems.append(
            f"the file has {len(blocks)} blocks{_variant_hint(len(blocks))}, the model {len(model_blocks)}"
        )
    raise WeightsMismatchError(f"Weights from {source} do not fit model '{model.name}': " + "; ".join(problems))


def _variant_hint(num_blocks):
    for name in variants.variant_names():
        if sum(variants.VARIANTS[name]["depths"]) == num_blocks and not name.endswith("+"):
            return f" (like NFNet-{name})"
    return ""


def _natural(key):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _more(items):
    return f", ... ({len(items) - _LISTED} more)" if len(items) > _LISTED else ""


# ----------------------------------------------------------------------------
# Loading from a weights argument
# ----------------------------------------------------------------------------
def read_weights_file(path):
    """Reads a weights file that names its entries into `{keras_key: ndarray}` (Keras files: `read_weights`).

    Supported: DeepMind pickles (plain-dict or Haiku FlatMapping form, read by a
    restricted unpickler), timm `.safetensors`, and the `.npz` files this
    package writes when it caches converted weights.
    """
    fmt = formats.sniff_format(path)
    if fmt == "pickle":
        tree = formats.load_haiku_pickle(path)
        return dm_to_keras(tree)
    if fmt == "safetensors":
        return timm_to_keras(formats.read_safetensors(path))
    if fmt == "npz":
        return formats.read_npz(path)
    raise formats.CheckpointError(f"{path}: a Keras {fmt} file names its weights by model: use read_weights")


def load_pretrained(model, weights, variant=None):
    """Loads `weights` ("imagenet" or a path) into `model` (called by `NFNet`).

    A model without a classifier (`include_top=False`), or one whose classifier
    shape differs from the checkpoint's (`classes != 1000`), gets everything
    but the classifier.

    Args:
        model: the freshly built model.
        weights: "imagenet" or the path of any supported weights file.
        variant: canonical variant name (for "imagenet").

    Raises:
        WeightsMismatchError: for weights that do not fit the model.
        CheckpointError: for an unreadable or unsafe file.
    """
    if weights == "imagenet":
        arrays, source = imagenet_weights(variant), f"DeepMind's NFNet-{variant} ImageNet checkpoint"
    else:
        source = os.fspath(weights)
        arrays = read_weights(source, model)
    target = model_weights(model).get(CLASSIFIER_PREFIX + "kernel")
    kernel = arrays.get(CLASSIFIER_PREFIX + "kernel")
    new_head = target is not None and kernel is not None and tuple(np.shape(kernel)) != tuple(target.shape)
    if new_head:
        logger.info("Classifier shape differs from %s: loading everything but `predictions`.", source)
    assign_weights(model, arrays, source, skip_classifier=target is None or new_head)
    return model


def read_weights(path, model):
    """Any supported weights file as `{keras_key: ndarray}`, keyed like `model_weights(model)`.

    Keras files need `model` to name their entries (`read_keras_weights`);
    the other formats name theirs (`read_weights_file`).
    """
    if formats.sniff_format(path) in KERAS_FORMATS:
        return read_keras_weights(path, model)
    return read_weights_file(path)


# ----------------------------------------------------------------------------
# Keras files
# ----------------------------------------------------------------------------
#: `formats.sniff_format` results of the files Keras writes (`.weights.h5`, `.keras`).
KERAS_FORMATS = ("h5", "keras_zip")
# Keras' weights files: one group per top-level layer under `layers/`, named after the
# layer's class in snake case and numbered per class in layer order (`ws_conv2d`,
# `ws_conv2d_1`, ...); nested layers under their attribute names (here, their layer
# names); each layer's own variables as `vars/0`, `vars/1`, ... in creation order.
# tests/weights/test_loading.py round-trips `save_weights` to catch a Keras change.
_LAYERS_GROUP = "layers"
_VARS_GROUP = "vars"
# The classifier's group in a file written by a model with a head (its only top-level Dense).
_CLASSIFIER_GROUP = "dense"
_KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"


def _snake_case(name):
    """Keras' group name of a class (`keras.src.utils.naming.to_snake_case`)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _keras_file_keys(model):
    """`{path of a dataset in a Keras weights file of model: keras_key}`."""
    keys, used = {}, {}
    for layer in model.layers:
        group = _snake_case(type(layer).__name__)
        if group in used:
            used[group] += 1
            group = f"{group}_{used[group]}"
        else:
            used[group] = 0
        counts = {}
        for variable in layer.weights:
            key = _weight_key(layer, variable)
            owner = key.rsplit("/", 1)[0]
            index = counts[owner] = counts.get(owner, -1) + 1
            nested = owner[len(layer.name) + 1 :]
            keys["/".join(filter(None, [_LAYERS_GROUP, group, nested, _VARS_GROUP, str(index)]))] = key
    return keys


def _read_keras_h5(path, read):
    """`read(layers)` on the `layers/` group (None when absent) of a `.weights.h5` file or `.keras` archive.

    Raises:
        CheckpointError: for a truncated or unreadable file.
    """
    import h5py  # noqa: PLC0415  (only Keras files need it)

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                contents = io.BytesIO(archive.read(_KERAS_ARCHIVE_WEIGHTS))
        else:
            contents = path
        with h5py.File(contents, "r") as h5:
            return read(h5.get(_LAYERS_GROUP))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise formats.CheckpointError(f"{path}: cannot read the Keras weights ({error})") from error


def read_keras_weights(path, model):
    """A Keras `.weights.h5` file or `.keras` archive as `{keras_key: ndarray}` of `model`.

    Entries are named by where `model` stores each variable in such a file, so
    that `assign_weights` reports by name what does not fit; an entry the
    model has no place for keeps its path in the file
    (`nf_block_4/conv0/vars/0`). The classifier of a file written with a head
    is `predictions/*` also for a model without one (`include_top=False`).

    Raises:
        CheckpointError: for a truncated or unreadable file.
    """
    import h5py  # noqa: PLC0415

    keys = _keras_file_keys(model)
    classifier = {"0": CLASSIFIER_PREFIX + "kernel", "1": CLASSIFIER_PREFIX + "bias"}

    def read(layers):
        arrays = {}

        def collect(name, node):
            if not isinstance(node, h5py.Dataset):
                return
            key = keys.get(f"{_LAYERS_GROUP}/{name}")
            if key is None and name.startswith(f"{_CLASSIFIER_GROUP}/{_VARS_GROUP}/"):
                key = classifier.get(name.rsplit("/", 1)[1])
            arrays[key or name] = node[()]

        if layers is not None:
            layers.visititems(collect)
        return arrays

    return _read_keras_h5(path, read)


def keras_file_classes(path):
    """Number of classes of the classifier stored in a Keras weights file, or None without one.

    Raises:
        CheckpointError: for a truncated or unreadable file.
    """

    def read(layers):
        kernel = None if layers is None else layers.get(f"{_CLASSIFIER_GROUP}/{_VARS_GROUP}/0")
        return int(kernel.shape[1]) if kernel is not None and len(kernel.shape) == 2 else None

    return _read_keras_h5(path, read)


def imagenet_weights(variant, cache_dir=None):
    """`{keras_key: ndarray}` of DeepMind's ImageNet NFNet-`variant`.

    Downloads `{variant}_haiku.npz` from `BASE_WEIGHTS_URL` with
    `keras.utils.get_file` (md5-checked) into
    `<cache_dir>/models/nfnet_keras/` (`cache_dir`: `$KERAS_HOME` or
    `~/.keras`), converts it, and caches the result as
    `nfnet_{variant}_imagenet_<md5>.npz` next to it, so later loads skip the
    pickle and the conversion. A file put there by hand is used as if
    downloaded.

    Raises:
        ValueError: for a variant without published weights.
        WeightsDownloadError: when the file cannot be fetched (offline, say)
            or does not have the expected md5.
    """
    if variant not in WEIGHTS_MD5:
        raise ValueError(
            f"No ImageNet weights are published for NFNet-{variant}; available: {', '.join(WEIGHTS_MD5)}"
        )
    from nfnet_keras.weights import hub  # noqa: PLC0415  (hub imports this module)

    folder = hub.keras_cache_folder(cache_dir)
    md5 = WEIGHTS_MD5[variant]
    converted = os.path.join(folder, f"nfnet_{variant.lower()}_imagenet_{md5[:8]}.npz")
    if os.path.exists(converted):
        try:
            return formats.read_npz(converted)
        except formats.CheckpointError:
            logger.warning("Converted weights cache %s is corrupt; converting again.", converted)
    arrays = read_weights_file(_download(f"{variant}_haiku.npz", md5, folder))
    formats.write_npz_atomic(converted, arrays)
    return arrays


def _download(file_name, md5, folder):
    """`folder/file_name`, fetched from `BASE_WEIGHTS_URL` unless it is there with the right md5 (`hub.download_file`)."""
    from nfnet_keras.weights import hub  # noqa: PLC0415  (hub imports this module)

    note = "; the expected md5 values are third-party records, not published by DeepMind"
    return hub.download_file(file_name, BASE_WEIGHTS_URL + file_name, folder, md5, "md5", hash_note=note)
