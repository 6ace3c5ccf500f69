"""The model to export: loaded like the predict command's, with the export's own settings.

`load_export_model` loads what the user named through
`nfnet_keras.models.loading.load_model` (a `.keras` file, a `train.py` run
directory with its EMA weights, or a registry name with weights), applies the
export's overrides (`--image_size`, `--crop_padding`, `--class_names`) to the
model's own preprocessing and class names, and makes sure it computes in
float32. Everything downstream (the serving graph, the TFLite calibration, the
parity table) reads the image size, the preprocessing and the class names from
the model.

TensorFlow backend only (`require_tensorflow_backend`).
"""

import keras
import numpy as np

from nfnet_keras.models.loading import LoadedModel, load_model
from nfnet_keras.weights import loading as weights_loading

__all__ = ["ExportError", "require_tensorflow_backend", "load_export_model", "as_float32", "read_class_names"]


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
    """Loads the model to export, with its preprocessing and class names settled.

    Args:
        model_path, variant, weights, ema, classes, image_size, crop_padding:
            as `model`, ... of `nfnet_keras.models.loading.load_model`.
        class_names_file: a text file with one class name per line, replacing
            the model's class names.

    Returns:
        A `nfnet_keras.models.loading.LoadedModel` whose model computes in
        float32 (`as_float32`).

    Raises:
        ExportError: for anything that stops the load (the message says what).
    """
    require_tensorflow_backend()
    try:
        loaded = load_model(
            model_path,
            variant=variant,
            weights=weights,
            ema=ema,
            classes=classes,
            image_size=image_size,
            crop_padding=crop_padding,
        )
    except ValueError as error:  # ModelLoadError, WeightsMismatchError, CheckpointError
        raise ExportError(str(error)) from error
    model, source = loaded.model, loaded.source
    if class_names_file is not None:
        names = read_class_names(class_names_file)
        try:
            model.class_names = names
        except ValueError as error:
            raise ExportError(f"{class_names_file}: {error}") from error
    if not _is_float32(model):
        policy = next(layer.dtype_policy.name for layer in model.layers if layer.dtype_policy.name != "float32")
        source += f" (computes in {policy}; exported in float32)"
        model = as_float32(model)
    return LoadedModel(model, source)


def read_class_names(path):
    """Class names from a text file, one per line (blank lines are skipped)."""
    try:
        with open(path, encoding="utf-8") as handle:
            names = [line.strip() for line in handle]
    except OSError as error:
        raise ExportError(f"cannot read the class names file {path}: {error}") from error
    return tuple(name for name in names if name)


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
    """`model` itself when it computes in float32, else a float32 copy with the same weights and settings.

    A model trained with `--mixed_precision bf16/fp16` keeps float32 weights but
    computes in bfloat16/float16; the export computes in float32 (TF Serving,
    TFLite and the folding of the standardised kernels all want float32).
    """
    if _is_float32(model):
        return model
    config = model.get_config()
    _float32_policies(config)
    copy = type(model).from_config(config)
    arrays = {
        key: np.asarray(keras.ops.convert_to_numpy(variable), np.float32)
        for key, variable in weights_loading.model_weights(model).items()
    }
    weights_loading.assign_weights(copy, arrays, f"model '{model.name}' (float32 copy)")
    return copy
