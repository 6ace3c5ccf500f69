"""The model to use, from what a user names: one loader for the predict command and `export.py`.

A user names a model in one of three ways (`load_model`):

- a `.keras` file, read with `keras.saving.load_model`;
- a `train.py` run directory: its model file, with the EMA weights saved
  beside it (`nfnet_keras.weights.run_directory` names both files) when they
  are there (`ema=None`), required (`ema=True`) or not (`ema=False`); a
  `.keras` file elsewhere gets the EMA weights of its own folder the same way;
- a registry name (`nfnet_keras.models.get_spec`: `nfnet_f0`, `F0`, `micro`,
  ...) with `weights`: `"imagenet"`, `"none"` (random initialisation) or a
  weights file (Keras `.weights.h5` or `.keras`, DeepMind checkpoint, timm
  `.safetensors`, converted `.npz`).

Every weights file is checked name by name
(`nfnet_keras.weights.loading.assign_weights`): one that does not fit the model
is an error naming what did not load, never a model with layers left at their
initial values.

The loaded model is an `NFModel`, which carries its evaluation preprocessing
and class names. A model saved before `NFModel` existed (a plain functional
model) does not: for it, and only here, they are rebuilt once, from the run
settings file beside it (its `variant` and `eval_image_size`) or else the
variant that `variant` or the model's name (`nfnet_f0`) gives, and its fixed
input size; 1,000 classes are ImageNet's, other classes are numbered.
"""

import dataclasses
import json
import os

import keras

from nfnet_keras.checks import check_integer
from nfnet_keras.models import applications, registry, timm_nfnet
from nfnet_keras.models.base import CLASSIFIER_LAYER, IMAGENET_CLASSES, NFModel
from nfnet_keras.preprocessing.imagenet import NUM_CLASSES
from nfnet_keras.preprocessing.settings import EvalPreprocessing
from nfnet_keras.weights import formats
from nfnet_keras.weights import loading as weights_loading
from nfnet_keras.weights import timm as timm_weights
from nfnet_keras.weights.run_directory import MODEL_FILE, RUN_CONFIG_FILE, RunDirectory

__all__ = ["LoadedModel", "ModelLoadError", "load_model", "predict_probabilities", "returns_logits"]

#: The `weights` values that name no file.
IMAGENET = "imagenet"
NO_WEIGHTS = "none"


class ModelLoadError(ValueError):
    """What the user named cannot be loaded (missing file, wrong kind of file, conflicting arguments)."""


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A loaded model and where it came from.

    Attributes:
        model: the `NFModel`, with its preprocessing and class names.
        source: what was loaded, for messages (`runs/a/model.keras with the
            EMA weights of runs/a/ema.weights.h5`).
    """

    model: NFModel
    source: str


def load_model(model=None, variant=None, weights=None, ema=None, classes=None, image_size=None, crop_padding=None):
    """Loads the model a user names: a `.keras` file, a run directory, or a registry name with weights.

    Args:
        model: a `.keras` file or a `train.py` run directory.
        variant: a registry name (see `nfnet_keras.models.model_names`), with
            `weights`. With `model`, only for a model saved before `NFModel`
            whose folder holds no run settings (see the module docstring).
        weights: with `variant`: `"imagenet"` (the default), `"none"` or the
            path of a weights file.
        ema: with `model`: None uses the EMA weights when they are there,
            True requires them, False loads the raw weights.
        classes: the number of classes with `weights="none"` (default 1000).
        image_size: the input side `S`: the size to build a registry model at,
            or a new evaluation size for a model without a fixed input size.
        crop_padding: replaces the model's evaluation crop padding.

    Returns:
        A `LoadedModel`.

    Raises:
        ModelLoadError: for conflicting or missing arguments, a missing or
            unreadable file, a file of the wrong kind, or a model without a
            classifier.
        nfnet_keras.weights.WeightsMismatchError: for weights that do not fit
            the model (the message names what did not load).
        nfnet_keras.weights.CheckpointError: for a truncated or unsafe file.
    """
    image_size = check_integer(image_size, "image_size", error=ModelLoadError, allow_none=True)
    crop_padding = check_integer(crop_padding, "crop_padding", minimum=0, error=ModelLoadError, allow_none=True)
    classes = check_integer(classes, "classes", error=ModelLoadError, allow_none=True)
    if isinstance(weights, str) and weights.lower() in (IMAGENET, NO_WEIGHTS):
        weights = weights.lower()
    if model is not None and weights is not None:
        raise ModelLoadError(
            "name either a .keras model or run directory, or a model name with weights, not both "
            "(a weights file goes with a model name)"
        )
    if model is None and variant is None:
        raise ModelLoadError("nothing to load: name a .keras model or run directory, or a model name with weights")
    if classes is not None and (model is not None or weights != NO_WEIGHTS):
        raise ModelLoadError("the number of classes applies to weights 'none' only; weights bring their classifier")
    if model is not None:
        loaded = _from_file(os.fspath(model), ema, variant, image_size, crop_padding)
    elif ema:
        raise ModelLoadError("EMA weights are those of a run directory; with a model name, pass the EMA file as weights")
    else:
        loaded = _from_registry(variant, weights or IMAGENET, classes, image_size)
    _set_preprocessing(loaded, image_size, crop_padding)
    return loaded


def returns_logits(model):
    """True when the model's classifier has no activation (`train.py`'s models return logits)."""
    activation = model.get_layer(CLASSIFIER_LAYER).activation
    return getattr(activation, "__name__", "") == "linear"


def predict_probabilities(model, inputs, batch_size=16):
    """Class probabilities `(N, K)` float32 for prepared inputs: the model's output, with a softmax for logits."""
    outputs = model.predict(inputs, batch_size=batch_size, verbose=0)
    if returns_logits(model):
        outputs = keras.ops.softmax(outputs, axis=-1)
    return keras.ops.convert_to_numpy(keras.ops.cast(outputs, "float32"))


# ----------------------------------------------------------------------------
# A .keras file or a run directory
# ----------------------------------------------------------------------------
def _check_file(path, what):
    """The format of the file at `path` (`formats.sniff_format`); a missing or unknown file is an error."""
    if not os.path.exists(path):
        raise ModelLoadError(f"{what} not found: {path}")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{what} is not a file: {path}")
    try:
        return formats.sniff_format(path)
    except formats.CheckpointError as error:
        raise ModelLoadError(f"{what} {path} is in an unknown format: {error}") from error


def _brief(error, limit=300):
    """The first line of `error`'s message, cut to `limit` characters: Keras' can hold a whole model config."""
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def _from_file(path, ema, variant, image_size, crop_padding):
    if os.path.isdir(path):
        run = RunDirectory.holding(path)
        if run is None:
            raise ModelLoadError(f"{path} is a folder without {MODEL_FILE}, not a train.py run directory")
        path = run.model
    fmt = _check_file(path, "model file")
    if fmt != "keras_zip":
        raise ModelLoadError(
            f"{path} is a {fmt} file, not a .keras model; a weights file goes with a model name "
            "(--variant NAME --weights PATH)"
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # a corrupt or foreign .keras file: Keras raises many kinds
        raise ModelLoadError(f"cannot load the Keras model {path}: {_brief(error)}") from error
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"{path} holds a {type(model).__name__}, not a Keras model")
    if not isinstance(model, NFModel):  # saved before NFModel: the same layers, settings added below
        model = NFModel(model.inputs, model.outputs, name=model.name)
        if model.num_classes == NUM_CLASSES:
            model.class_names = IMAGENET_CLASSES
    if model.num_classes is None:
        raise ModelLoadError(f"{path}: the model has no classifier (layer '{CLASSIFIER_LAYER}')")
    run = RunDirectory(os.path.dirname(os.path.abspath(path)))
    if model.preprocessing is None:
        model.preprocessing = _fallback_preprocessing(model, path, run, variant, image_size, crop_padding)
    elif variant is not None:
        raise ModelLoadError(
            f"{path} carries its own preprocessing and class names; a model name goes with weights, not with a "
            ".keras model"
        )

    if ema is None:
        ema = os.path.isfile(run.ema_weights)
    if not ema:
        return LoadedModel(model, f"{path} (raw weights)")
    if not os.path.isfile(run.ema_weights):
        raise ModelLoadError(f"no EMA weights next to the model ({run.ema_weights} is missing); use --noema")
    arrays = weights_loading.read_keras_weights(run.ema_weights, model)
    weights_loading.assign_weights(model, arrays, run.ema_weights)
    return LoadedModel(model, f"{path} with the EMA weights of {run.ema_weights}")


def _read_run_config(run):
    try:
        with open(run.run_config) as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _known_spec(name):
    try:
        return registry.get_spec(name)
    except (ValueError, TypeError):
        return None


def _fallback_preprocessing(model, path, run, variant, image_size, crop_padding):
    """The `EvalPreprocessing` of a model saved without one (before `NFModel`): the one fallback."""
    run_config = _read_run_config(run)
    if variant is not None:
        spec = _known_spec(variant)
        if spec is None:
            raise ModelLoadError(f"unknown model name {variant!r}; see nfnet_keras.models.model_names()")
    else:
        spec = _known_spec(run_config.get("variant")) or _known_spec(model.name)
    height, width = model.input_shape[1:3]
    size = image_size or (height if height == width else None) or run_config.get("eval_image_size")
    size = size or (spec and spec.config["test_imsize"])
    padding = crop_padding if crop_padding is not None else (spec and spec.config["eval_padding"])
    if not size or padding is None:
        raise ModelLoadError(
            f"cannot tell how {path} prepares its images (model {model.name!r}, saved before nfnet-keras 0.2, with "
            f"no {RUN_CONFIG_FILE} beside it): pass --variant, or --image_size and --crop_padding"
        )
    if spec is not None:  # the variant's resize mode and padding, at the size found
        return applications.eval_preprocessing(spec.config, int(size)).replace(crop_padding=crop_padding)
    return EvalPreprocessing(int(size), crop_padding=int(padding))


# ----------------------------------------------------------------------------
# A registry name with weights
# ----------------------------------------------------------------------------
def _from_registry(name, weights, classes, image_size):
    try:
        spec = registry.get_spec(name)
    except (ValueError, TypeError) as error:
        raise ModelLoadError(str(error)) from error
    input_shape = None if image_size is None else (image_size, image_size, 3)
    if weights == IMAGENET:
        if not spec.pretrained:
            raise ModelLoadError(
                f"no ImageNet weights are published for {spec.name}; choose one of "
                f"{', '.join(registry.model_names(pretrained_only=True))}, or weights 'none' or a file"
            )
        model = registry.create_model(spec.name, weights=IMAGENET, input_shape=input_shape)
        publisher = "timm's" if spec.name.startswith("timm/") else "DeepMind's"
        return LoadedModel(model, f"{spec.name} with {publisher} ImageNet weights")
    if weights == NO_WEIGHTS:
        model = registry.create_model(spec.name, classes=classes or NUM_CLASSES, input_shape=input_shape)
        return LoadedModel(model, f"{spec.name}, randomly initialised (weights 'none')")

    path = os.fspath(weights)
    file_format = _check_file(path, "weights file")
    if file_format == "safetensors" and spec.family == timm_nfnet.FAMILY:  # timm's names and layouts
        state_dict = formats.read_safetensors(path)
        classifier = state_dict.get(timm_weights.CLASSIFIER_KEY)
        if classifier is None:
            raise ModelLoadError(f"{path} holds no classifier weights ({timm_weights.CLASSIFIER_KEY})")
        model = registry.create_model(spec.name, classes=int(classifier.shape[0]), input_shape=input_shape)
        timm_weights.load_state_dict(model, state_dict, path)
        return LoadedModel(model, f"{spec.name} with the weights of {path}")
    keras_file = file_format in weights_loading.KERAS_FORMATS
    if keras_file:
        arrays, num_classes = None, weights_loading.keras_file_classes(path)
    else:
        arrays = weights_loading.read_weights_file(path)
        kernel = arrays.get(weights_loading.CLASSIFIER_PREFIX + "kernel")
        num_classes = None if kernel is None else int(kernel.shape[-1])
    if num_classes is None:
        raise ModelLoadError(f"{path} holds no classifier weights (a model saved with include_top=False?)")
    model = registry.create_model(spec.name, classes=num_classes, input_shape=input_shape)
    if keras_file:
        arrays = weights_loading.read_keras_weights(path, model)
    weights_loading.assign_weights(model, arrays, path)
    return LoadedModel(model, f"{spec.name} with the weights of {path}")


def _set_preprocessing(loaded, image_size, crop_padding):
    """Applies the `image_size` and `crop_padding` overrides to the model's preprocessing."""
    model = loaded.model
    height, width = model.input_shape[1:3]
    if height != width:
        raise ModelLoadError(f"the model's input is {height}x{width}; its evaluation crop is square")
    if image_size is not None and height is not None and image_size != height:
        raise ModelLoadError(f"image size {image_size} differs from the model's fixed input size {height}")
    model.preprocessing = model.preprocessing.replace(image_size=image_size, crop_padding=crop_padding)
