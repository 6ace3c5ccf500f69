"""Inference-time folding of weight standardisation (for export and serving).

A trained `WSConv2D` recomputes `W_hat = (W - mean) * gain / sqrt(max(fan_in * var, eps))`
at every call. For inference that is a constant: `fold_weight_standardization`
returns a copy of the model in which every weight-standardised conv is a plain
convolution whose kernel is `W_hat`, computed once. Stochastic depth and dropout
are already the identity at inference, so the folded model computes the same
function with less work per call.
"""

import keras
import numpy as np

from nfnet_keras.weights import loading
from nfnet_keras.models.layers import NFBlock, WSConv2D

_STANDARDIZED = ("WSConv2D", "NFBlock")


def fold_weight_standardization(model):
    """Returns an inference copy of `model` with weight standardisation folded in.

    Args:
        model: an NFNet built by this package (any head, any input size).

    Returns:
        A new `keras.Model` with the same layer names and outputs; its convs have
        `kernel` (= the standardised kernel) and `bias`, and no `gain`.
    """
    config = model.get_config()
    _unstandardize(config)
    folded = keras.Model.from_config(config)
    arrays = {key: np.asarray(keras.ops.convert_to_numpy(v)) for key, v in loading.model_weights(model).items()}
    for prefix, conv in _ws_convs(model):
        arrays[f"{prefix}/kernel"] = np.asarray(keras.ops.convert_to_numpy(conv.standardized_kernel()))
        del arrays[f"{prefix}/gain"]
    loading.assign_weights(folded, arrays, f"model '{model.name}' (folded)")
    return folded


def _unstandardize(node):
    """Sets `standardize=False` in every WSConv2D/NFBlock config of a functional config."""
    if isinstance(node, dict):
        if node.get("class_name") in _STANDARDIZED and isinstance(node.get("config"), dict):
            node["config"]["standardize"] = False
        for value in node.values():
            _unstandardize(value)
    elif isinstance(node, list):
        for value in node:
            _unstandardize(value)


def _ws_convs(model):
    """`(weight-key prefix, layer)` for every standardised conv of the model."""
    for layer in model.layers:
        if isinstance(layer, WSConv2D) and layer.standardize:
            yield layer.name, layer
        elif isinstance(layer, NFBlock):
            for conv in layer.convs():
                if conv.standardize:
                    yield f"{layer.name}/{conv.name}", conv
