"""The TF Serving servable of an NFNet: model source, EMA, folding, endpoints, layout.

TensorFlow backend only: the SavedModel is traced from TensorFlow ops
(`keras.export.ExportArchive`), so that TF Serving, `tf.saved_model.load` and
the TFLite converter read plain TF ops. `require_tensorflow_backend()` raises
a clear error on any other Keras backend (the exporter, `export.py`, sets
`KERAS_BACKEND=tensorflow` itself).

1. `load_export_model(...)` reads the model to export: a `.keras` file
   (`train.py`'s `model.keras`, with the EMA weights of `ema.weights.h5` next
   to it when present and wanted, and `run_config.json` for the variant and
   evaluation size), a weights file with `variant` (a Keras `.weights.h5`, a
   DeepMind checkpoint or timm `.safetensors`), `"imagenet"` or `"none"`
   (random initialisation). It also settles the input size, the evaluation
   crop padding and the class names.
2. `build_archive(export_model, top_k)` folds weight standardisation into
   plain conv kernels (`nfnet_keras.models.fold_weight_standardization`, once, at
   export) and defines the endpoints, all of which call the folded model with
   `training=False` (stochastic depth and dropout off):

   - `serving_default`: `images`, a batch of encoded images (`tf.string [N]`:
     JPEG, PNG, GIF, BMP or WebP bytes; each image may have its own size) ->
     `probabilities` (float32 `[N, K]`), `top_k_indices` (int32 `[N, k]`),
     `top_k_probabilities` (float32 `[N, k]`), `top_k_class_names`
     (string `[N, k]`). The graph decodes (JPEGs with
     `dct_method="INTEGER_ACCURATE"`, pixel-identical to Pillow), applies the
     reference evaluation transform (bicubic squash-resize to `S + padding`,
     centre crop `S`) and the ImageNet normalisation: the served probabilities
     are `model.predict(nfnet_keras.prepare_images(images, S, padding))`.
     Bytes that are not an image fail the call with `InvalidArgumentError`
     ("Unknown image file format. One of JPEG, ... required."), as a bad
     request; the serving process is unaffected.
   - `predict_pixels`: `pixels`, float32 `[N, S, S, 3]` RGB on the 0..255
     scale, already resized and cropped (`nfnet_keras.preprocessing.eval_transform`), not
     normalised -> `probabilities`.
   - `predict_pixels_uint8`: the same with uint8 pixels.

   The probabilities are the classifier's softmax (a softmax is added when the
   classifier returns logits, as `train.py`'s models do).
3. `VersionWriter` writes the TF Serving layout `<export_dir>/<name>/<version>/`
   through a hidden staging directory in the same folder that is renamed into
   place only when everything is written, so a failed or interrupted export
   leaves no partial version behind (TF Serving ignores the non-numeric
   staging names). An existing version is refused unless `overwrite=True`.
"""

import dataclasses
import json
import os
import re
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from nfnet_keras.data import augment
from nfnet_keras.weights import formats
from nfnet_keras.data import sources
from nfnet_keras.models import folding
from nfnet_keras.preprocessing import imagenet
from nfnet_keras.models import variants
from nfnet_keras.weights import loading
from nfnet_keras.models.nfnet import NFNet

__all__ = [
    "ExportError",
    "ExportModel",
    "EMA_FILE",
    "RUN_CONFIG_FILE",
    "require_tensorflow_backend",
    "check_integer",
    "load_export_model",
    "as_float32",
    "read_class_names",
    "build_archive",
    "describe_signatures",
    "check_name",
    "existing_versions",
    "next_version",
    "VersionWriter",
]

#: EMA weights file that `train.py` writes next to `model.keras`.
EMA_FILE = "ema.weights.h5"
#: Run settings file that `train.py` writes next to `model.keras`.
RUN_CONFIG_FILE = "run_config.json"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


class ExportError(ValueError):
    """The export cannot go ahead (bad input, missing file, existing version...)."""


def require_tensorflow_backend(what="Exporting a SavedModel"):
    """Raises `ExportError` unless Keras runs on the TensorFlow backend."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ExportError(
            f"{what} needs the TensorFlow backend, but Keras runs on {backend!r}. Set "
            "KERAS_BACKEND=tensorflow before Keras is imported (export.py does this itself); a JAX-backend "
            "SavedModel would hold XlaCallModule ops that TF Serving and TFLite may not run."
        )


@dataclasses.dataclass
class ExportModel:
    """The model to export and what the serving graph needs to know about it.

    Attributes:
        model: the Keras model with the chosen weights (not folded).
        image_size: the input side `S` of the exported signatures.
        crop_padding: the evaluation transform's padding (resize to `S + padding`).
        class_names: one name per class, in class-index order.
        logits: True when the classifier returns logits (the export adds a softmax).
        source: where the model and its weights came from, for the summary.
        variant: the canonical variant name, or None when unknown.
        run_dataset: the `--dataset` of the `train.py` run that wrote the model, if known.
    """

    model: keras.Model
    image_size: int
    crop_padding: int
    class_names: tuple
    logits: bool
    source: str
    variant: str = None
    run_dataset: str = ""

    @property
    def num_classes(self):
        return len(self.class_names)

    def probabilities(self, inputs, batch_size=16):
        """Keras-side probabilities for normalised inputs `(N, S, S, 3)` (the parity reference)."""
        outputs = np.asarray(self.model.predict(inputs, batch_size=batch_size, verbose=0))
        return _softmax(outputs) if self.logits else outputs


def _softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


# ----------------------------------------------------------------------------
# Loading the model to export
# ----------------------------------------------------------------------------
def load_export_model(
    model_path=None,
    variant=None,
    weights=None,
    ema=None,
    image_size=None,
    crop_padding=None,
    class_names_file=None,
    classes=None,
):
    """Loads the model to export and settles its input size, padding and class names.

    Exactly one source: `model_path` (a `.keras` file), or `variant` with
    `weights` (`"imagenet"`, `"none"` for random initialisation, or the path of
    a Keras `.weights.h5`, a DeepMind checkpoint, timm `.safetensors` or a
    converted `.npz`; default `"imagenet"`).

    Args:
        model_path: a `.keras` model (e.g. `runs/default/model.keras`), or a
            `train.py` run directory holding `model.keras`.
        variant: `F0` ... `F7+`, `nano`, `micro`. With `model_path` it only
            supplies the default input size and padding.
        weights: see above; only with `variant`, not with `model_path`.
        ema: for `model_path`: None uses `ema.weights.h5` next to the model
            when it exists, True requires it, False uses the raw weights.
        image_size: the input side `S` (default: the model's fixed input size,
            else `eval_image_size` of the run, else the variant's test size).
        crop_padding: evaluation padding (default: the variant's `eval_padding`).
        class_names_file: a text file with one class name per line (default:
            ImageNet names for 1000 classes, the run's dataset's names, else
            "0".."K-1").
        classes: number of classes for `weights="none"` (default 1000).

    Returns:
        An `ExportModel`.

    Raises:
        ExportError: for a missing or unreadable file, a file in an unknown
            format, conflicting or missing arguments, or a model without a
            classifier.
    """
    require_tensorflow_backend()
    if model_path is not None and weights is not None:
        raise ExportError(
            "Give either a .keras model (--model) or --variant with --weights, not both. A .weights.h5 file "
            "goes with --weights and --variant."
        )
    if model_path is None and variant is None:
        raise ExportError(
            "Nothing to export: pass --model PATH.keras, or --variant NAME with --weights (imagenet, none or a path)."
        )
    check_integer(image_size, "image_size")
    check_integer(classes, "classes")
    check_integer(crop_padding, "crop_padding", minimum=0)
    if variant is not None:
        try:
            config = variants.get_config(variant)
        except (ValueError, TypeError) as error:
            raise ExportError(str(error)) from error
        variant = variants.canonical_name(variant)
    if model_path is not None:
        if classes is not None:
            raise ExportError("--classes applies to --weights none only; a .keras model has its own classifier.")
        export_model = _load_keras_model(os.fspath(model_path), variant, ema, image_size, crop_padding)
    else:
        if ema:
            raise ExportError(
                "--ema selects the ema.weights.h5 next to a .keras model (--model); with --weights, pass the EMA "
                "weights file itself as --weights."
            )
        export_model = _load_variant(variant, config, weights or "imagenet", image_size, crop_padding, classes)
    names = _class_names(export_model, class_names_file, model_path)
    export_model.class_names = names
    return export_model


def check_integer(value, flag, minimum=1):
    """Raises `ExportError` unless `value` is None or an integer (not a bool) of at least `minimum`."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise ExportError(f"--{flag} must be {kind}, got {value!r}")


def _run_config(model_path):
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), RUN_CONFIG_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _variant_from_name(name):
    """`nfnet_f0_plus` -> `F0+` (the model names `NFNet` gives), else None."""
    if not name.startswith("nfnet_"):
        return None
    candidate = variants.canonical_name(name[len("nfnet_") :].replace("_plus", "+"))
    return candidate if candidate in variants.VARIANTS else None


def _check_file(path, what):
    if not os.path.exists(path):
        raise ExportError(f"{what} not found: {path}")
    if not os.path.isfile(path):
        raise ExportError(f"{what} is not a file: {path}")
    try:
        return formats.sniff_format(path)
    except formats.CheckpointError as error:
        raise ExportError(f"{what} {path} is in an unknown format: {error}") from error


def _load_keras_model(path, variant, ema, image_size, crop_padding):
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "model.keras")):
        path = os.path.join(path, "model.keras")  # a train.py run directory
    fmt = _check_file(path, "model file")
    if fmt != "keras_zip":
        raise ExportError(
            f"{path} is a {fmt} file, not a .keras model. Pass weights files as --weights PATH with --variant "
            "(Keras .weights.h5, DeepMind checkpoints, timm .safetensors)."
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # a corrupt or foreign .keras file
        raise ExportError(f"cannot load the Keras model {path}: {error}") from error
    if not isinstance(model, keras.Model):
        raise ExportError(f"{path} holds a {type(model).__name__}, not a Keras model")
    _check_classifier(model, path)

    source = f"{path} (raw weights)"
    ema_path = os.path.join(os.path.dirname(os.path.abspath(path)), EMA_FILE)
    if ema is None:
        ema = os.path.isfile(ema_path)
    if ema:
        if not os.path.isfile(ema_path):
            raise ExportError(f"--ema: no EMA weights next to the model ({ema_path} is missing); use --noema")
        try:
            model.load_weights(ema_path)
        except Exception as error:
            raise ExportError(f"the EMA weights {ema_path} do not fit the model {path}: {error}") from error
        source = f"{path} with the EMA weights of {ema_path}"
    if not _is_float32(model):
        policy = next(layer.dtype_policy.name for layer in model.layers if layer.dtype_policy.name != "float32")
        source += f" (computes in {policy}; exported in float32)"
        model = as_float32(model)

    run = _run_config(path)
    variant = variant or _known_variant(run.get("variant")) or _variant_from_name(model.name)
    config = variants.get_config(variant) if variant else None
    height, width = model.input_shape[1:3]
    if height != width:
        raise ExportError(f"the model's input is {height}x{width}; only square inputs are exported")
    if height is not None and image_size is not None and image_size != height:
        raise ExportError(f"--image_size {image_size} differs from the model's fixed input size {height}")
    image_size = image_size or height or run.get("eval_image_size") or (config and config["test_imsize"])
    if crop_padding is None and config is not None:
        crop_padding = config["eval_padding"]
    if not image_size or crop_padding is None:
        raise ExportError(
            f"cannot tell the variant of {path} (model name {model.name!r}, no {RUN_CONFIG_FILE} beside it): pass "
            "--variant, or --image_size and --crop_padding"
        )
    export_model = ExportModel(
        model=model,
        image_size=int(image_size),
        crop_padding=int(crop_padding),
        class_names=(),
        logits=_returns_logits(model),
        source=source,
        variant=variant,
        run_dataset=str(run.get("dataset") or ""),
    )
    return export_model


def _known_variant(name):
    if not isinstance(name, str):
        return None
    name = variants.canonical_name(name)
    return name if name in variants.VARIANTS else None


def _is_float32(model):
    return all(getattr(layer.dtype_policy, "name", "float32") == "float32" for layer in model.layers)


def _float32_policies(node):
    """Sets every mixed-precision dtype policy (and float16/bfloat16 tensor dtype) of a config to float32."""
    if isinstance(node, dict):
        if "DTypePolicy" in str(node.get("class_name", "")) and isinstance(node.get("config"), dict):
            node["config"]["name"] = "float32"
        for key, value in node.items():
            if key == "dtype" and value in ("float16", "bfloat16", "mixed_float16", "mixed_bfloat16"):
                node[key] = "float32"
            else:
                _float32_policies(value)
    elif isinstance(node, list):
        for value in node:
            _float32_policies(value)


def as_float32(model):
    """`model` itself when it computes in float32, else a float32 copy with the same weights.

    A model trained with `--mixed_precision bf16/fp16` keeps float32 weights but
    computes in bfloat16/float16; the export computes in float32 (TF Serving,
    TFLite and the folding of the standardised kernels all want float32).
    """
    if _is_float32(model):
        return model
    config = model.get_config()
    _float32_policies(config)
    copy = keras.Model.from_config(config)
    arrays = {
        key: np.asarray(keras.ops.convert_to_numpy(variable), np.float32)
        for key, variable in loading.model_weights(model).items()
    }
    loading.assign_weights(copy, arrays, f"model '{model.name}' (float32 copy)")
    return copy


def _check_classifier(model, where):
    try:
        model.get_layer("predictions")
    except ValueError as error:
        raise ExportError(
            f"{where}: the model has no classifier (layer 'predictions'); export needs include_top=True"
        ) from error


def _returns_logits(model):
    activation = model.get_layer("predictions").activation
    return getattr(activation, "__name__", "") == "linear"


def _load_variant(variant, config, weights, image_size, crop_padding, classes):
    image_size = image_size or config["test_imsize"]
    crop_padding = config["eval_padding"] if crop_padding is None else crop_padding
    input_shape = (image_size, image_size, 3)
    if classes is not None and weights != "none":
        raise ExportError("--classes applies to --weights none only; a checkpoint has its own classifier.")
    try:
        if weights == "none":
            model = NFNet(variant, weights=None, classes=classes or 1000, input_shape=input_shape)
            source = f"NFNet-{variant}, random initialisation (--weights none)"
        elif weights == "imagenet":
            model = NFNet(variant, weights="imagenet", input_shape=input_shape)
            source = f"NFNet-{variant}, DeepMind's ImageNet weights"
        else:
            path = os.fspath(weights)
            fmt = _check_file(path, "weights file")
            if fmt in ("h5", "keras_zip"):
                num_classes = loading.keras_file_classes(path)
                if num_classes is None:
                    raise ExportError(f"{path} holds no classifier weights (a model saved with include_top=False?)")
                model = NFNet(variant, weights=path, classes=num_classes, input_shape=input_shape)
            else:
                arrays = loading.read_weights_file(path)
                kernel = arrays.get(loading.CLASSIFIER_PREFIX + "kernel")
                if kernel is None:
                    raise ExportError(f"{path} holds no classifier weights ('predictions/kernel')")
                model = NFNet(variant, weights=None, classes=int(np.shape(kernel)[-1]), input_shape=input_shape)
                loading.assign_weights(model, arrays, path)
            source = f"NFNet-{variant} with the weights of {path}"
    except ExportError:
        raise
    except (ValueError, OSError) as error:
        raise ExportError(str(error)) from error
    return ExportModel(
        model=model,
        image_size=int(image_size),
        crop_padding=int(crop_padding),
        class_names=(),
        logits=_returns_logits(model),
        source=source,
        variant=variant,
    )


def read_class_names(path):
    """Class names from a text file, one per line (blank lines are skipped)."""
    try:
        with open(path, encoding="utf-8") as handle:
            names = [line.strip() for line in handle]
    except OSError as error:
        raise ExportError(f"cannot read the class names file {path}: {error}") from error
    return tuple(name for name in names if name)


def _class_names(export_model, class_names_file, model_path):
    num_classes = int(export_model.model.output_shape[-1])
    if class_names_file is not None:
        names = read_class_names(class_names_file)
        if len(names) != num_classes:
            raise ExportError(
                f"{class_names_file} has {len(names)} class names, the model {num_classes} classes"
            )
        return names
    if num_classes == imagenet.NUM_CLASSES:
        return tuple(imagenet.imagenet_class_names())
    if model_path is not None:
        names = _dataset_class_names(export_model.run_dataset)
        if names is not None and len(names) == num_classes:
            return names
    return tuple(str(i) for i in range(num_classes))


def _dataset_class_names(dataset):
    """Class names of the dataset a run was trained on (bundled sample, npz or folder), else None."""
    if dataset == sources.BUNDLED_SAMPLE:
        return tuple(sources.CIFAR10_CLASSES)
    if not dataset or dataset.startswith("tfds:"):
        return None
    try:
        return sources.load_source(dataset, verify=False).class_names
    except (ValueError, OSError):
        return None


# ----------------------------------------------------------------------------
# The serving graph
# ----------------------------------------------------------------------------
def build_archive(export_model, top_k=5):
    """Folds the model and defines the endpoints (see the module docstring).

    Args:
        export_model: an `ExportModel`.
        top_k: number of classes in the `top_k_*` outputs (at most the number
            of classes).

    Returns:
        `(archive, folded_model, k)`: a `keras.export.ExportArchive` ready for
        `write_out`, the folded Keras model it serves, and the `k` used.
    """
    require_tensorflow_backend()
    if top_k is None:
        raise ExportError("--top_k must be a positive integer, got None")
    check_integer(top_k, "top_k")
    k = min(int(top_k), export_model.num_classes)
    size, padding = export_model.image_size, export_model.crop_padding
    folded = folding.fold_weight_standardization(export_model.model)
    names = tf.constant(list(export_model.class_names), dtype=tf.string)
    logits = export_model.logits

    def probabilities(pixels):
        outputs = folded(augment.normalize(pixels), training=False)
        return tf.nn.softmax(outputs, axis=-1) if logits else tf.cast(outputs, tf.float32)

    def prepare(encoded):
        return augment.eval_transform(sources.decode_image(encoded), size, padding)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serving_default(images):
        pixels = tf.map_fn(prepare, images, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        probs = probabilities(pixels)
        top_probs, top_indices = tf.math.top_k(probs, k=k)
        return {
            "probabilities": probs,
            "top_k_indices": top_indices,
            "top_k_probabilities": top_probs,
            "top_k_class_names": tf.gather(names, top_indices),
        }

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="pixels")])
    def predict_pixels(pixels):
        return {"probabilities": probabilities(pixels)}

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="pixels")])
    def predict_pixels_uint8(pixels):
        return {"probabilities": probabilities(tf.cast(pixels, tf.float32))}

    # No `archive.track(folded)`: the endpoints capture the variables they use, and tracking the
    # model as well stores every weight twice (keras.Variable wrappers and the tf.Variables the
    # traced functions capture; keras-team/keras#23553, also `model.export` in Keras 3.15).
    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", serving_default)
    archive.add_endpoint("predict_pixels", predict_pixels)
    archive.add_endpoint("predict_pixels_uint8", predict_pixels_uint8)
    return archive, folded, k


def describe_signatures(saved_model_dir):
    """`{signature: {"inputs": {name: (dtype, shape)}, "outputs": {...}, "method": str}}` of a SavedModel.

    Read from `saved_model.pb` (what `saved_model_cli show --all` prints), with
    unknown dimensions as -1.
    """
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: PLC0415

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    result = {}
    for meta_graph in proto.meta_graphs:
        for key, signature in meta_graph.signature_def.items():
            if key.startswith("__"):
                continue

            def tensors(mapping):
                return {
                    name: (
                        tf.dtypes.as_dtype(info.dtype).name,
                        [int(d.size) for d in info.tensor_shape.dim] if not info.tensor_shape.unknown_rank else None,
                    )
                    for name, info in sorted(mapping.items())
                }

            result[key] = {
                "inputs": tensors(signature.inputs),
                "outputs": tensors(signature.outputs),
                "method": signature.method_name,
                "tags": list(meta_graph.meta_info_def.tags),
            }
    return result


# ----------------------------------------------------------------------------
# TF Serving layout
# ----------------------------------------------------------------------------
def check_name(name):
    """Validates a model name used as a directory name."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ExportError(
            f"--name must be a plain directory name (letters, digits, '.', '_', '-'; not starting with '.'), "
            f"got {name!r}"
        )
    return name


def existing_versions(base):
    """The integer version directories in `base` (TF Serving's `model_base_path`)."""
    if not os.path.isdir(base):
        return []
    return sorted(int(e.name) for e in os.scandir(base) if e.is_dir() and e.name.isdigit())


def next_version(*bases):
    """One more than the highest version found in any of `bases` (1 when there is none)."""
    found = [v for base in bases for v in existing_versions(base)]
    return max(found, default=0) + 1


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


class VersionWriter:
    """Writes version directories atomically: staging directories renamed into place.

    `VersionWriter([final, ...], overwrite)` refuses any existing `final`
    unless `overwrite`, and creates one hidden staging directory per target
    next to it (same file system, so the final rename is atomic). Write into
    `staging(final)`; on leaving the `with` block normally every staging
    directory is renamed to its target (replacing an existing one when
    `overwrite`); on an exception (or `KeyboardInterrupt`) the staging
    directories are deleted and nothing else changes.
    """

    def __init__(self, targets, overwrite=False):
        self.targets = [os.path.abspath(os.fspath(t)) for t in targets]
        self.overwrite = overwrite
        self._staging = {}
        self._created = []
        self.check()

    def check(self):
        for target in self.targets:
            if os.path.exists(target) and not self.overwrite:
                raise ExportError(
                    f"{target} already exists: pass --overwrite to replace it, or another --version "
                    "(the default is the next free version)"
                )

    def staging(self, target):
        return self._staging[os.path.abspath(os.fspath(target))]

    def __enter__(self):
        try:
            for target in self.targets:
                parent = os.path.dirname(target)
                missing = []
                probe = parent
                while not os.path.exists(probe):
                    missing.append(probe)
                    probe = os.path.dirname(probe)
                os.makedirs(parent, exist_ok=True)
                self._created.extend(reversed(missing))
                staging = tempfile.mkdtemp(prefix=f".incomplete-{os.path.basename(target)}-", dir=parent)
                self._staging[target] = staging
                os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; a server may run as another user
        except BaseException:
            self._discard()
            raise
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is not None:
            self._discard()
            return False
        try:
            self._commit()
        except BaseException:
            self._discard()
            raise
        return False

    def _commit(self):
        self.check()
        for target in self.targets:
            staging = self._staging.pop(target)
            replaced = None
            if os.path.exists(target):
                parent, base = os.path.split(target)
                replaced = tempfile.mkdtemp(prefix=f".replaced-{base}-", dir=parent)
                os.rmdir(replaced)
                os.rename(target, replaced)
            try:
                os.rename(staging, target)
            except BaseException:
                if replaced is not None:
                    os.rename(replaced, target)
                self._staging[target] = staging
                raise
            if replaced is not None:
                shutil.rmtree(replaced, ignore_errors=True)

    def _discard(self):
        for staging in self._staging.values():
            shutil.rmtree(staging, ignore_errors=True)
        self._staging.clear()
        for directory in reversed(self._created):  # folders this writer created, innermost first
            try:
                os.rmdir(directory)
            except OSError:
                pass
        self._created.clear()
