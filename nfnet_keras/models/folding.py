"""Inference-time folding of weight standardisation (for export and serving).

A trained `WSConv2D` recomputes `W_hat = (W - mean) * gain / sqrt(max(fan_in * var, eps))`
at every call, and timm's `ScaledStdConv2D` recomputes
`W_hat = (W - mean) / sqrt(var + eps) * gain * gamma / sqrt(fan_in)`. For
inference both are constants: `fold_weight_standardization` returns a copy of
the model in which every weight-standardised conv is a plain convolution whose
kernel is `W_hat`, computed once, with the padding the conv had (TensorFlow's
"SAME" for DeepMind's, timm's symmetric padding for timm's). Stochastic depth
and dropout are already the identity at inference, so the folded model computes
the same function with less work per call.

`winograd=True` also stores the kernels of the wide 3x3 stride-1 convolutions
of DeepMind's blocks in Winograd's transform domain (`WSConv2D(winograd=True)`,
`nfnet_keras.models.layers.winograd`): the same function up to float32
rounding, faster in XLA-compiled CPU servables (`export.py --jit_compile`). The
tile of each conv suits its output size at the image size the copy is folded for
(`image_size`).
"""

import keras
import numpy as np
from keras import ops

from nfnet_keras.models.layers import NFBlock, NormFreeBlock, ScaledStdConv2D, WSConv2D, conv2d_symmetric
from nfnet_keras.models.layers.winograd import winograd_filters
from nfnet_keras.weights import loading

__all__ = ["FoldedNormFreeBlock", "FoldedStdConv2D", "fold_weight_standardization", "winograd_convs"]

# DeepMind's layers fold through their own `standardize=False`.
_STANDARDIZED = ("WSConv2D", "NFBlock")
#: The convs of a `NormFreeBlock`, by attribute (None where the block has none).
NORM_FREE_BLOCK_CONVS = ("downsample_conv", "conv1", "conv2", "conv2b", "conv3")


@keras.saving.register_keras_serializable(package="nfnet_keras")
class FoldedStdConv2D(ScaledStdConv2D):
    """The folded inference form of timm's `ScaledStdConv2D`: a plain convolution with symmetric padding.

    `kernel` already holds `W_hat` (float32 weights, autocast under mixed
    precision); there is no `gain` and nothing is recomputed per call. The
    padding, strides and groups are those of the `ScaledStdConv2D` it folds,
    and so is the config (`gamma`, `eps` and `gain_initializer` are kept but
    unused), so that a config switches form by its class name alone.
    """

    def build(self, input_shape):
        self.add_kernel(input_shape, autocast=True)
        self.add_bias()

    def standardized_kernel(self):
        """The float32 kernel the convolution uses: `kernel` itself."""
        return ops.cast(ops.convert_to_tensor(self.kernel), "float32")

    def call(self, inputs):
        return conv2d_symmetric(inputs, self.kernel, self.strides, self.groups, self.padding) + self.bias


@keras.saving.register_keras_serializable(package="nfnet_keras")
class FoldedNormFreeBlock(NormFreeBlock):
    """The folded inference form of timm's `NormFreeBlock`: the same block with `FoldedStdConv2D` convs.

    Takes `NormFreeBlock`'s arguments and config; its weights are the block's
    without the convs' gains.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Replaced before build: the block's convs are never built, so they hold no weights.
        for attribute in NORM_FREE_BLOCK_CONVS:
            conv = getattr(self, attribute)
            if conv is not None:
                setattr(self, attribute, FoldedStdConv2D.from_config(conv.get_config()))


# Config class names of the standardised timm layers -> their folded forms.
_FOLDED_CLASSES = {"ScaledStdConv2D": FoldedStdConv2D, "NormFreeBlock": FoldedNormFreeBlock}


def fold_weight_standardization(model, winograd=False, image_size=None):
    """Returns an inference copy of `model` with weight standardisation folded in.

    Args:
        model: a model built by this package (any family, any head, any input
            size); a model that is already folded is copied as it is.
        winograd: also store the kernels of the 3x3 convs of DeepMind's blocks
            (`NFBlock`) that `winograd.winograd_applies` to in the transform
            domain (`WSConv2D(winograd=True)`); for XLA-compiled CPU servables.
        image_size: with `winograd`, the side of the square images the folded
            model is for: its input takes that size only, and each Winograd
            conv gets the tile that suits its output size
            (`winograd.winograd_tile`). Default: the model's input as it is
            (tiles for its size where static; 2x2 tiles, any size, where not).

    Returns:
        A new `keras.Model` with the same layer names and outputs; its convs have
        `kernel` (= the standardised kernel) or, in the Winograd form,
        `winograd_kernel`, and `bias`, and no `gain`.
    """
    config = model.get_config()
    _to_inference_form(config, winograd)
    if winograd and image_size is not None:
        _fix_image_size(config, image_size)
    folded = keras.Model.from_config(config)
    arrays = {key: np.asarray(keras.ops.convert_to_numpy(v)) for key, v in loading.model_weights(model).items()}
    for prefix, conv in _convs(model):
        if _standardizes(conv):
            arrays[f"{prefix}/kernel"] = np.asarray(keras.ops.convert_to_numpy(conv.standardized_kernel()))
            del arrays[f"{prefix}/gain"]
    for prefix, conv in _convs(folded):
        if getattr(conv, "winograd", False) and f"{prefix}/kernel" in arrays:  # absent: already in this form
            filters = winograd_filters(arrays.pop(f"{prefix}/kernel"), conv.groups, conv.winograd_tile)
            arrays[f"{prefix}/winograd_kernel"] = np.asarray(keras.ops.convert_to_numpy(filters))
    loading.assign_weights(folded, arrays, f"model '{model.name}' (folded)")
    return folded


def winograd_convs(model):
    """The model's convs in the Winograd form: weight-key prefix (`nf_block_3/conv1b`) -> output tile size."""
    return {prefix: conv.winograd_tile for prefix, conv in _convs(model) if getattr(conv, "winograd", False)}


def _to_inference_form(node, winograd):
    """Rewrites a functional config in place: every standardised conv or block in its folded form."""
    if isinstance(node, dict):
        config = node.get("config")
        class_name = node.get("class_name")
        if isinstance(config, dict) and class_name in _STANDARDIZED:
            config["standardize"] = False
            if winograd and class_name == "NFBlock":
                config["winograd"] = True
        elif isinstance(config, dict) and class_name in _FOLDED_CLASSES:
            folded = _FOLDED_CLASSES[class_name]
            node.update(
                class_name=folded.__name__,
                module=folded.__module__,
                registered_name=keras.saving.get_registered_name(folded),
            )
        for value in node.values():
            _to_inference_form(value, winograd)
    elif isinstance(node, list):
        for value in node:
            _to_inference_form(value, winograd)


def _fix_image_size(config, image_size):
    """Sets the image input of a functional config to `image_size` x `image_size`.

    The layers' recorded build shapes are dropped, so that each layer builds
    for the shape it is called with.
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    for layer in config["layers"]:
        layer.pop("build_config", None)
        if layer["class_name"] == "InputLayer":
            batch, _, _, channels = layer["config"]["batch_shape"]
            layer["config"]["batch_shape"] = (batch, image_size, image_size, channels)


def _convs(model):
    """`(weight-key prefix, layer)` for every top-level layer and every conv inside the model's blocks."""
    for layer in model.layers:
        if isinstance(layer, NFBlock):
            convs = layer.convs()
        elif isinstance(layer, NormFreeBlock):
            convs = [getattr(layer, attribute) for attribute in NORM_FREE_BLOCK_CONVS]
        else:
            yield layer.name, layer
            continue
        for conv in convs:
            if conv is not None:
                yield f"{layer.name}/{conv.name}", conv


def _standardizes(layer):
    if isinstance(layer, WSConv2D):
        return layer.standardize
    return isinstance(layer, ScaledStdConv2D) and not isinstance(layer, FoldedStdConv2D)
