"""Pretrained weights: DeepMind's checkpoints, timm's safetensors and Keras files.

Every source is first turned into a flat dict `{keras_key: ndarray}` whose keys
are the model's variable paths (`nf_block_3/conv1/kernel`,
`nf_block_3/skip_gain`, `predictions/bias`, ...).  `assign_weights` then checks
the dict against the model (every missing, unexpected, mis-shaped or
non-float32 entry is reported by name) and assigns it.

DeepMind's Haiku layout needs no transposes (HWIO convs and (in, out) linears
are Keras' layouts), only names; timm's PyTorch layout needs the transposes
listed in `timm_to_keras`.
"""

import hashlib
import logging
import os
import re

import numpy as np

from nfnet_keras.weights import formats
from nfnet_keras.models import variants

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
CLASSIFIER_PREFIX = "predictions/"


class WeightsMismatchError(ValueError):
    """The weights do not fit the model; the message lists every problem by name."""


# ----------------------------------------------------------------------------
# Name mapping
# ----------------------------------------------------------------------------
_DM_PARAM = {"w": "kernel", "b": "bias", "bias": "bias", "gain": "gain", "skip_gain": "skip_gain"}
_DM_BLOCK = re.compile(r"^nf_block(?:_(\d+))?$")


def dm_key(module, param):
    """Maps a Haiku `(module, param)` pair to the Keras key, e.g.

    `("NFNet/~/nf_block_3/~/squeeze_excite/~/linear_1", "b")` ->
    `"nf_block_3/squeeze_excite/linear_1/bias"`; `("NFNet/~/linear", "w")` ->
    `"predictions/kernel"`. Raises KeyError for names outside the NFNet tree.
    """
    parts = module.split("/~/")
    if len(parts) < 2 or parts[0] != "NFNet" or param not in _DM_PARAM:
        raise KeyError(f"{module}/{param}")
    parts = parts[1:]
    block = _DM_BLOCK.match(parts[0])
    if block:
        parts[0] = f"nf_block_{int(block.group(1) or 0)}"
    elif parts == ["linear"]:
        parts = ["predictions"]
    elif len(parts) != 1 or not re.match(r"^(stem_conv[0-3]|final_conv)$", parts[0]):
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
    result = {}
    for layer in model.layers:
        for variable in layer.weights:
            path = variable.path
            start = path.find(layer.name + "/")
            result[path[start:] if start >= 0 else path] = variable
    return result


def assign_weights(model, arrays, source, skip_classifier=False):
    """Checks `arrays` against `model` and assigns them.

    Args:
        model: the target model.
        arrays: `{keras_key: ndarray}`.
        source: a description of where the arrays come from, for messages.
        skip_classifier: leave `predictions/*` untouched (new head for
            fine-tuning, or a model without top).

    Raises:
        WeightsMismatchError: naming every missing, unexpected, mis-shaped or
            non-float32 entry, and the variant the checkpoint looks like.
    """
    targets = model_weights(model)
    wanted = {k: v for k, v in targets.items() if not (skip_classifier and k.startswith(CLASSIFIER_PREFIX))}
    provided = {k: v for k, v in arrays.items() if not k.startswith(CLASSIFIER_PREFIX) or k in wanted}
    problems = []
    missing = sorted(set(wanted) - set(provided), key=_natural)
    unexpected = sorted(set(provided) - set(wanted), key=_natural)
    if missing:
        problems.append(f"missing from the checkpoint ({len(missing)}): " + ", ".join(missing[:12]) + _more(missing))
    if unexpected:
        problems.append(
            f"not in the model ({len(unexpected)}): " + ", ".join(unexpected[:12]) + _more(unexpected)
        )
    for key in sorted(set(wanted) & set(provided), key=_natural):
        value = np.asarray(provided[key])
        expected = tuple(wanted[key].shape)
        if value.shape != expected:
            problems.append(f"{key}: checkpoint shape {value.shape}, model shape {expected}")
        elif value.dtype != np.float32:
            problems.append(f"{key}: dtype {value.dtype}, expected float32")
    checkpoint_modules = {k.rsplit("/", 1)[0] for k in provided}
    model_modules = {k.rsplit("/", 1)[0] for k in wanted}
    if problems and len(checkpoint_modules) != len(model_modules):
        # DeepMind's trees have one module per conv, SE linear, block and head: F0 94 ... F6 598.
        problems.insert(0, f"module count: checkpoint {len(checkpoint_modules)}, model {len(model_modules)}")
    if problems:
        blocks = {k.split("/")[0] for k in arrays if k.startswith("nf_block_")}
        model_blocks = {k.split("/")[0] for k in targets if k.startswith("nf_block_")}
        hint = ""
        if blocks and len(blocks) != len(model_blocks):
            hint = f" The checkpoint has {len(blocks)} blocks{_variant_hint(len(blocks))}; the model has {len(model_blocks)}."
        raise WeightsMismatchError(
            f"Weights from {source} do not fit model '{model.name}':\n  - " + "\n  - ".join(problems) + hint
        )
    for key, variable in wanted.items():
        variable.assign(provided[key])


def _variant_hint(num_blocks):
    for name in variants.variant_names():
        if sum(variants.VARIANTS[name]["depths"]) == num_blocks and not name.endswith("+"):
            return f" (like NFNet-{name})"
    return ""


def _natural(key):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _more(items):
    return f", ... ({len(items) - 12} more)" if len(items) > 12 else ""


# ----------------------------------------------------------------------------
# Loading from a weights argument
# ----------------------------------------------------------------------------
def read_weights_file(path):
    """Reads any supported weights file into `{keras_key: ndarray}` (not for Keras .h5/.keras).

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
    raise formats.CheckpointError(f"{path}: {fmt} files are loaded through Keras, not read_weights_file")


def load_pretrained(model, weights, variant=None, rebuild=None):
    """Loads `weights` ("imagenet" or a path) into `model` (called by `NFNet`).

    A model without a classifier (`include_top=False`), or one whose classifier
    shape differs from the checkpoint's (`classes != 1000`), gets everything
    but the classifier.

    Args:
        model: the freshly built model.
        weights: "imagenet" or a file path.
        variant: canonical variant name (for "imagenet").
        rebuild: callable `(include_top=True, classes=N, weights=None) -> model`
            that builds a twin of `model`; needed only for Keras `.h5` files
            whose head does not fit `model`.
    """
    if weights == "imagenet":
        arrays, source = imagenet_weights(variant), f"DeepMind's NFNet-{variant} ImageNet checkpoint"
    else:
        path = os.fspath(weights)
        fmt = formats.sniff_format(path)
        if fmt in ("h5", "keras_zip"):
            _load_keras_file(model, path, rebuild)
            return model
        arrays, source = read_weights_file(path), path
    target = model_weights(model).get(CLASSIFIER_PREFIX + "kernel")
    kernel = arrays.get(CLASSIFIER_PREFIX + "kernel")
    new_head = target is not None and kernel is not None and tuple(np.shape(kernel)) != tuple(target.shape)
    if new_head:
        logger.info("Classifier shape differs from %s: loading everything but `predictions`.", source)
    assign_weights(model, arrays, source, skip_classifier=target is None or new_head)
    return model


def _load_keras_file(model, path, rebuild):
    try:
        model.load_weights(path)
        return
    except ValueError as error:
        if rebuild is None:
            raise WeightsMismatchError(f"Keras weights {path} do not fit model '{model.name}': {error}") from error
        first_error = error
    # The head differs: load into a twin with the file's head, then copy the rest.
    classes = keras_file_classes(path)
    if classes is None:
        raise WeightsMismatchError(f"Keras weights {path} do not fit model '{model.name}': {first_error}")
    twin = rebuild(include_top=True, classes=classes, weights=None)
    try:
        twin.load_weights(path)
    except ValueError as error:
        raise WeightsMismatchError(f"Keras weights {path} do not fit model '{model.name}': {error}") from error
    arrays = {k: np.asarray(v) for k, v in model_weights(twin).items()}
    assign_weights(model, arrays, path, skip_classifier=True)


def keras_file_classes(path):
    """Number of classes of the classifier stored in a Keras weights file, if any.

    Keras 3 stores top-level layers under `layers/<class-based name>/vars/<i>`;
    the classifier is the model's only top-level `Dense` (SE linears are nested
    in their blocks).
    """
    import io  # noqa: PLC0415
    import zipfile  # noqa: PLC0415

    import h5py  # noqa: PLC0415

    def search(h5):
        for name, group in h5.get("layers", {}).items():
            kernel = group.get("vars/0") if name.startswith("dense") else None
            if kernel is not None and len(kernel.shape) == 2:
                return int(kernel.shape[1])
        return None

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as handle:
            with h5py.File(io.BytesIO(handle.read()), "r") as h5:
                return search(h5)
    with h5py.File(path, "r") as h5:
        return search(h5)


def imagenet_weights(variant, cache_dir=None):
    """`{keras_key: ndarray}` of DeepMind's ImageNet NFNet-`variant`.

    Downloads `{variant}_haiku.npz` from `BASE_WEIGHTS_URL` with
    `keras.utils.get_file` (md5-checked), converts it, and caches the result as
    `nfnet_{variant}_imagenet_<md5>.npz` next to it, so later loads skip the
    pickle and the conversion.
    """
    import keras  # noqa: PLC0415

    if variant not in WEIGHTS_MD5:
        raise ValueError(
            f"No ImageNet weights are published for NFNet-{variant}; available: {', '.join(WEIGHTS_MD5)}"
        )
    cache_dir = cache_dir or os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    subdir = os.path.join("models", "nfnet_keras")
    # keras.utils.get_file silently falls back to a temp dir if the cache dir does not exist yet.
    os.makedirs(os.path.join(cache_dir, subdir), exist_ok=True)
    md5 = WEIGHTS_MD5[variant]
    converted = os.path.join(cache_dir, subdir, f"nfnet_{variant.lower()}_imagenet_{md5[:8]}.npz")
    if os.path.exists(converted):
        try:
            return formats.read_npz(converted)
        except formats.CheckpointError:
            logger.warning("Converted weights cache %s is corrupt; converting again.", converted)
    file_name = f"{variant}_haiku.npz"
    try:
        path = keras.utils.get_file(
            file_name,
            BASE_WEIGHTS_URL + file_name,
            file_hash=md5,
            hash_algorithm="md5",
            cache_dir=cache_dir,
            cache_subdir=subdir,
        )
    except ValueError as error:
        raise ValueError(
            f"The downloaded {file_name} does not match the expected md5 {md5}. The file may be incomplete "
            f"or corrupt (delete it from {os.path.join(cache_dir, subdir)} and retry); note that the "
            f"expected md5 values are third-party records, not published by DeepMind. ({error})"
        ) from error
    arrays = read_weights_file(path)
    formats.write_npz_atomic(converted, arrays)
    return arrays


def file_md5(path, chunk_size=1 << 20):
    """md5 hex digest of a file (for checking downloaded checkpoints)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
