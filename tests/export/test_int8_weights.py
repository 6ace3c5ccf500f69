"""Kernels on TFLite's int8 weight grid with their sums kept (`nfnet_keras.export.int8_weights`)."""

import keras
import numpy as np

import nfnet_keras
from nfnet_keras.export import int8_weights
from nfnet_keras.models import fold_weight_standardization
from nfnet_keras.weights import loading


def _levels(shape, seed=0):
    """Float levels in (-127, 127) with one tap at +-127 per column, as `kernel / grid_scales(kernel)` gives."""
    rng = np.random.default_rng(seed)
    levels = rng.uniform(-120, 120, shape)
    levels[rng.integers(0, shape[0], shape[1]), np.arange(shape[1])] = rng.choice([-127.0, 127.0], shape[1])
    return levels


def _folded_nano():
    keras.utils.set_random_seed(0)
    model = nfnet_keras.NFNet("nano", classes=10, input_shape=(32, 32, 3))
    return fold_weight_standardization(model)


def test_each_columns_sum_is_the_nearest_level_to_its_float_sum():
    levels = _levels((9, 500))
    rounded = int8_weights.round_keeping_sums(levels)
    np.testing.assert_array_equal(rounded.sum(axis=0), np.round(levels.sum(axis=0)))
    # Rounding each tap to nearest misses the sum by more than half a level in most columns.
    assert np.mean(np.abs(np.round(levels).sum(axis=0) - levels.sum(axis=0)) > 0.5) > 0.3


def test_each_tap_goes_to_one_of_its_two_nearest_levels():
    levels = _levels((27, 300), seed=1)
    rounded = int8_weights.round_keeping_sums(levels)
    np.testing.assert_array_equal(rounded, np.round(rounded))
    assert np.all(np.abs(rounded - levels) < 1.0)
    assert np.all((rounded == np.floor(levels)) | (rounded == np.ceil(levels)))


def test_taps_at_the_extreme_level_keep_it_so_the_scale_is_kept():
    levels = _levels((9, 300), seed=2)
    rounded = int8_weights.round_keeping_sums(levels)
    extreme = np.abs(levels) >= int8_weights.LEVELS
    np.testing.assert_array_equal(rounded[extreme], levels[extreme])
    np.testing.assert_array_equal(np.abs(rounded).max(axis=0), int8_weights.LEVELS)


def test_grid_scales_are_the_largest_magnitude_of_each_output_channel_over_127():
    kernel = np.zeros((3, 3, 2, 4), np.float32)
    kernel[1, 2, 0, :3] = [-2.54, 1.27, 0.127]
    np.testing.assert_allclose(int8_weights.grid_scales(kernel), [0.02, 0.01, 0.001, 0.0], rtol=1e-6)


def test_snap_kernels_puts_every_kernel_on_the_grid_with_its_tap_sums_kept():
    model = _folded_nano()
    before = {key: np.asarray(keras.ops.convert_to_numpy(v)) for key, v in loading.model_weights(model).items()}
    snapped = int8_weights.snap_kernels(model)
    after = {key: np.asarray(keras.ops.convert_to_numpy(v)) for key, v in loading.model_weights(model).items()}
    kernels = [key for key, value in before.items() if key.endswith("/kernel") and value.ndim >= 2]
    assert sorted(snapped) == sorted(kernels) and any(before[key].ndim == 2 for key in kernels)
    for key in kernels:
        scales = int8_weights.grid_scales(before[key])
        np.testing.assert_allclose(int8_weights.grid_scales(after[key]), scales, rtol=1e-6)
        levels = after[key].astype(np.float64) / scales
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3, err_msg=key)
        float_levels = before[key].astype(np.float64) / scales
        # Sums over the spatial taps of each (input, output) channel pair; over the inputs for 1x1 and dense.
        axes = (0, 1) if before[key].ndim == 4 and before[key].shape[0] * before[key].shape[1] > 1 else None
        if axes is None:
            axes = tuple(range(before[key].ndim - 1))
        np.testing.assert_allclose(levels.sum(axis=axes), np.round(float_levels.sum(axis=axes)), atol=1e-3)


def test_snap_kernels_leaves_every_other_weight_unchanged():
    model = _folded_nano()
    before = {key: np.asarray(keras.ops.convert_to_numpy(v)) for key, v in loading.model_weights(model).items()}
    snapped = set(int8_weights.snap_kernels(model))
    for key, variable in loading.model_weights(model).items():
        if key not in snapped:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), before[key], err_msg=key)


def test_an_all_zero_output_channel_stays_zero():
    model = _folded_nano()
    kernel = model.get_layer("predictions").kernel
    value = np.asarray(keras.ops.convert_to_numpy(kernel))
    value[:, 3] = 0.0
    kernel.assign(value)
    int8_weights.snap_kernels(model)
    snapped = np.asarray(keras.ops.convert_to_numpy(kernel))
    assert np.all(snapped[:, 3] == 0.0) and np.all(np.isfinite(snapped))
    assert np.any(snapped[:, 2] != 0.0)
