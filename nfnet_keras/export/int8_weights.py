"""Kernels put on the int8 grid of TFLite's quantiser, rounded so that their sums survive.

TFLite's quantiser (dynamic-range `int8` and full-integer `int8_full`) stores
every conv and dense kernel as int8 per output channel, symmetrically:
`q = round(w / s)` with `s = max|w| / 127`. Rounding each tap to the nearest
level leaves a kernel's sum off by up to half a level per tap, and for
NFNets that sum is what matters most: a weight-standardised kernel has zero
mean over each output channel, and natural images are smooth, so a conv's
response to a nearly flat patch is small, while the rounding error of the
sum of its taps times the patch's mean is not. On the default `train.py`
model, the first conv's rounding alone made 65 % of the error (variance) that
int8 weights add to the logits (benchmarks/RESULTS.md, "Where the int8
agreement goes").

`snap_kernels` puts every kernel of a (folded) model on that grid itself, with
the same scales (each output channel keeps its largest magnitude, so the
quantiser computes the same `s`), choosing among the two nearest levels of
each tap so that each sum is the nearest level to the float sum: over the
spatial taps of each input and output channel of a conv whose kernel is wider
than 1x1, over the inputs of each output channel otherwise (1x1 convs, dense
layers). The taps nearest to half a level are the ones rounded the other way.
The quantiser then finds exactly these integers. Each tap moves by less than
one level (nearest rounding: at most half); only the export's int8
conversions use the result (`nfnet_keras.export.run`).

numpy and Keras only (no TensorFlow); works on any model whose weights
`nfnet_keras.weights.loading.model_weights` names.
"""

import keras
import numpy as np

from nfnet_keras.weights import loading

__all__ = ["LEVELS", "grid_scales", "round_keeping_sums", "snap_kernels"]

#: Largest int8 magnitude of TFLite's symmetric weight quantisation (levels -127..127).
LEVELS = 127


def grid_scales(kernel):
    """Per-output-channel (last axis) step `max|w| / 127` of a kernel, float64; 0 for an all-zero channel."""
    kernel = np.asarray(kernel, np.float64)
    return np.abs(kernel.reshape(-1, kernel.shape[-1])).max(axis=0) / LEVELS


def round_keeping_sums(levels):
    """Rounds `levels` `(taps, groups)` to integers whose column sums are the rounded float sums.

    Each element goes to one of its two nearest integers; elements at the
    extreme level (`|x| >= 127`) keep theirs, so each column's largest
    magnitude, and with it the quantiser's scale, is kept.
    """
    levels = np.asarray(levels, np.float64)
    rounded = np.round(levels)
    residual = levels - rounded  # in [-0.5, 0.5]
    missing = np.round(levels.sum(axis=0)) - rounded.sum(axis=0)  # whole levels the sum lacks (+) or has over (-)
    fixed = np.abs(levels) >= LEVELS
    # Rank each column's taps: most rounded down first (for +1), most rounded up first (for -1).
    up_rank = np.argsort(np.argsort(np.where(fixed, np.inf, -residual), axis=0, kind="stable"), axis=0)
    down_rank = np.argsort(np.argsort(np.where(fixed, np.inf, residual), axis=0, kind="stable"), axis=0)
    rounded += (up_rank < missing) & (residual > 0)
    rounded -= (down_rank < -missing) & (residual < 0)
    return rounded


def _snapped(kernel):
    kernel = np.asarray(kernel, np.float64)
    scales = grid_scales(kernel)
    safe = np.where(scales > 0, scales, 1.0)
    levels = kernel / safe
    if kernel.ndim == 4 and kernel.shape[0] * kernel.shape[1] > 1:  # spatial taps, per (input, output) channel
        taps = kernel.shape[0] * kernel.shape[1]
        integers = round_keeping_sums(levels.reshape(taps, -1)).reshape(kernel.shape)
    else:
        integers = round_keeping_sums(levels.reshape(-1, kernel.shape[-1])).reshape(kernel.shape)
    return (integers * scales).astype(np.float32)


def snap_kernels(model):
    """Puts every kernel of `model` (at least two dimensions) on TFLite's int8 grid, sums kept; in place.

    Args:
        model: a built model of this package, usually the folded copy of
            `nfnet_keras.models.fold_weight_standardization` (a kernel that
            is standardised at call time would be re-standardised off the grid).

    Returns:
        The weight keys changed (`nf_block_0/conv1/kernel`, ...).
    """
    snapped = []
    for key, variable in loading.model_weights(model).items():
        if key.endswith("/kernel") and len(variable.shape) >= 2:
            variable.assign(_snapped(keras.ops.convert_to_numpy(variable)))
            snapped.append(key)
    return snapped
