"""Winograd's F(2x2, 3x3) and F(4x4, 3x3) with stored filters against the backend's direct convolution."""

import numpy as np
import pytest
from keras import ops

from nfnet_keras.models.layers.winograd import (
    MIN_CHANNELS_PER_GROUP,
    TILES,
    winograd_applies,
    winograd_conv3x3,
    winograd_filters,
    winograd_tile,
)

# (batch, height, width, in channels, out channels, groups, padding)
SHAPES = [
    (2, 8, 8, 4, 6, 1, "same"),
    (1, 7, 9, 6, 4, 2, "same"),  # odd sizes: the last tiles are cut
    (3, 7, 6, 8, 8, 4, "valid"),
    (1, 3, 3, 2, 5, 1, "valid"),  # a single output pixel
    (1, 12, 16, 4, 4, 2, "same"),  # whole 4x4 tiles
]
# Largest error allowed, as a fraction of the output's largest magnitude: F(4x4, 3x3)'s
# larger transform coefficients round 10-20x more than F(2x2, 3x3)'s (module docstring).
TOLERANCES = {2: 2e-6, 4: 1e-5}


def _inputs(shape, seed=0):
    batch, height, width, channels, filters, groups, _ = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, height, width, channels)).astype("float32")
    kernel = rng.standard_normal((3, 3, channels // groups, filters)).astype("float32")
    return x, kernel


def _direct(x, kernel, groups, padding):
    """The direct convolution, one per group (the backends' grouped op is not on every CPU path)."""
    xs, ks = np.split(x, groups, axis=-1), np.split(kernel, groups, axis=-1)
    return np.concatenate([ops.convert_to_numpy(ops.conv(a, k, padding=padding)) for a, k in zip(xs, ks)], -1)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])) + s[6])
def test_winograd_conv3x3_with_stored_filters_equals_the_direct_convolution(shape, tile):
    x, kernel = _inputs(shape)
    groups, padding = shape[5], shape[6]
    expected = _direct(x, kernel, groups, padding)
    filters = winograd_filters(ops.convert_to_tensor(kernel), groups, tile)
    result = ops.convert_to_numpy(winograd_conv3x3(ops.convert_to_tensor(x), filters, groups, padding))
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, atol=TOLERANCES[tile] * np.abs(expected).max())


@pytest.mark.parametrize("tile, positions", [(2, 16), (4, 36)])
def test_winograd_filters_are_one_matrix_per_transform_position_and_group(tile, positions):
    _, kernel = _inputs(SHAPES[1])
    assert tuple(winograd_filters(ops.convert_to_tensor(kernel), groups=2, tile=tile).shape) == (2 * positions, 3, 2)


def test_winograd_filters_refuse_a_tile_without_transforms():
    with pytest.raises(ValueError, match="tile size in"):
        winograd_filters(np.zeros((3, 3, 2, 2), "float32"), tile=3)


@pytest.mark.parametrize("size", [(8, 8), (16, 16), (12, 64), (64, 64)])
def test_winograd_tile_is_four_for_outputs_of_whole_4x4_tiles_at_least_8_wide(size):
    assert winograd_tile(*size) == 4


@pytest.mark.parametrize("size", [(4, 4), (6, 6), (10, 10), (14, 16), (7, 9), (None, None), (None, 16)])
def test_winograd_tile_is_two_for_small_outputs_and_outputs_that_4x4_tiles_overhang(size):
    assert winograd_tile(*size) == 2


def test_winograd_filters_refuse_other_kernel_sizes():
    with pytest.raises(ValueError, match="3x3 kernel"):
        winograd_filters(np.zeros((5, 5, 2, 2), "float32"))


def test_winograd_conv3x3_refuses_filters_of_another_shape():
    x = np.zeros((1, 8, 8, 4), "float32")
    with pytest.raises(ValueError, match=r"filters \[\(m \+ 2\)\^2 \* groups"):
        winograd_conv3x3(x, np.zeros((16, 2, 4), "float32"), groups=1)
    with pytest.raises(ValueError, match=r"filters \[\(m \+ 2\)\^2 \* groups"):
        winograd_conv3x3(x, np.zeros((25, 4, 4), "float32"), groups=1)


def test_winograd_applies_to_wide_stride_1_3x3_convolutions_only():
    assert winograd_applies((3, 3), (1, 1), MIN_CHANNELS_PER_GROUP)
    assert not winograd_applies((3, 3), (1, 1), MIN_CHANNELS_PER_GROUP - 1)
    assert not winograd_applies((3, 3), (2, 2), 256)
    assert not winograd_applies((1, 1), (1, 1), 256)
