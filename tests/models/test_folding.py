"""Folding weight standardisation into plain conv kernels for inference."""

import keras
import numpy as np
import pytest

import nfnet_keras
from nfnet_keras.models.folding import (
    FoldedNormFreeBlock,
    FoldedStdConv2D,
    fold_weight_standardization,
    winograd_convs,
)
from nfnet_keras.models.timm_nfnet import TimmNFNet
from nfnet_keras.weights import loading

# A small eca_nfnet_l0 (8-channel groups, one block per stage) for the cheap timm tests.
SMALL_TIMM = {"channels": (32, 64, 96, 128), "stem_chs": 32, "group_size": 8, "depths": (1, 1, 1, 1)}


def perturbed(model):
    """Random weights around timm's and DeepMind's inits, gains near 1, so no block is an identity."""
    rng = np.random.default_rng(0)
    for key, variable in loading.model_weights(model).items():
        base = 1.0 if key.endswith("gain") else 0.0
        variable.assign((base + 0.3 * rng.standard_normal(tuple(variable.shape))).astype(np.float32))
    return model


def _perturbed_nano(**kwargs):
    return perturbed(
        nfnet_keras.NFNet("nano", classes=10, input_shape=(None, None, 3), classifier_activation=None, **kwargs)
    )


def perturbed_small_timm(**kwargs):
    kwargs = {"classes": 10, "input_shape": (None, None, 3), "classifier_activation": None, **SMALL_TIMM, **kwargs}
    return perturbed(TimmNFNet("eca_nfnet_l0", **kwargs))


def relative_error(actual, expected):
    return np.max(np.abs(np.asarray(actual) - np.asarray(expected))) / np.max(np.abs(np.asarray(expected)))


def test_folded_model_computes_the_same_function():
    model = _perturbed_nano()
    folded = fold_weight_standardization(model)
    x = np.random.default_rng(1).standard_normal((3, 45, 37, 3)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    assert relative_error(folded(x, training=False), expected) <= 1e-5


def test_folded_model_has_no_gains_and_plain_kernels():
    model = _perturbed_nano()
    folded = fold_weight_standardization(model)
    keys = set(loading.model_weights(folded))
    assert not any(key.endswith("/gain") for key in keys)
    assert keys == {k for k in loading.model_weights(model) if not k.endswith("/gain")}
    block = folded.get_layer("nf_block_1")
    np.testing.assert_allclose(
        np.asarray(block.conv1.kernel), np.asarray(model.get_layer("nf_block_1").conv1.standardized_kernel()), rtol=0
    )


def _perturbed_wide_nano(**kwargs):
    """nano with 128-channel groups, so that its 3x3 convs take the Winograd form."""
    return _perturbed_nano(widths=(256, 256, 256, 256), group_width=128, **kwargs)


def test_winograd_folding_computes_the_same_function():
    model = _perturbed_wide_nano()
    folded = fold_weight_standardization(model, winograd=True)
    x = np.random.default_rng(1).standard_normal((2, 45, 37, 3)).astype(np.float32)
    assert relative_error(folded(x, training=False), np.asarray(model(x, training=False))) <= 1e-5


def test_winograd_folding_stores_the_stride_1_3x3_kernels_transformed():
    folded = fold_weight_standardization(_perturbed_wide_nano(), winograd=True)
    keys = set(loading.model_weights(folded))
    # Stage 1 starts at stride 1, so its conv1 qualifies; the other stages' first blocks stride.
    assert sorted(k for k in keys if k.endswith("winograd_kernel")) == [
        "nf_block_0/conv1/winograd_kernel",
        "nf_block_0/conv1b/winograd_kernel",
        "nf_block_1/conv1b/winograd_kernel",
        "nf_block_2/conv1b/winograd_kernel",
        "nf_block_3/conv1b/winograd_kernel",
    ]
    assert "nf_block_1/conv1/kernel" in keys


def _winograd_tiles(model):
    return list(winograd_convs(model).values())


def test_winograd_folding_for_an_image_size_fixes_the_input_and_takes_4x4_tiles_where_they_fit():
    model = _perturbed_wide_nano()
    folded = fold_weight_standardization(model, winograd=True, image_size=64)
    assert folded.input_shape == (None, 64, 64, 3)
    # Outputs 16, 16, 8, 4 and 2 px wide: 4x4 tiles fit the first three.
    assert _winograd_tiles(folded) == [4, 4, 4, 2, 2]
    x = np.random.default_rng(1).standard_normal((2, 64, 64, 3)).astype(np.float32)
    assert relative_error(folded(x, training=False), np.asarray(model(x, training=False))) <= 1e-5


def test_winograd_folding_without_an_image_size_takes_2x2_tiles_for_a_dynamic_input():
    folded = fold_weight_standardization(_perturbed_wide_nano(), winograd=True)
    assert folded.input_shape == (None, None, None, 3)
    assert set(_winograd_tiles(folded)) == {2}


@pytest.mark.parametrize("image_size", [0, 64.0, True])
def test_winograd_folding_refuses_an_image_size_that_is_not_a_positive_integer(image_size):
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        fold_weight_standardization(_perturbed_wide_nano(), winograd=True, image_size=image_size)


def test_winograd_folding_leaves_narrow_groups_direct():
    folded = fold_weight_standardization(_perturbed_nano(), winograd=True)
    assert not any(key.endswith("winograd_kernel") for key in loading.model_weights(folded))


@pytest.mark.parametrize("image_size", [None, 32])
def test_winograd_folded_model_round_trips_through_keras_saving(tmp_path, image_size):
    model = _perturbed_wide_nano(include_top=False, pooling="avg")
    folded = fold_weight_standardization(model, winograd=True, image_size=image_size)
    path = str(tmp_path / "folded.keras")
    folded.save(path)
    reloaded = keras.saving.load_model(path)
    assert _winograd_tiles(reloaded) == _winograd_tiles(folded)
    x = np.random.default_rng(2).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(reloaded(x)), np.asarray(folded(x)))


@pytest.mark.parametrize("build", [_perturbed_nano, perturbed_small_timm], ids=["nano", "timm"])
def test_folded_model_round_trips_through_keras_saving(tmp_path, build):
    folded = fold_weight_standardization(build(include_top=False, pooling="avg"))
    path = str(tmp_path / "folded.keras")
    folded.save(path)
    reloaded = keras.saving.load_model(path)
    x = np.random.default_rng(2).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(reloaded(x)), np.asarray(folded(x)))


def test_folded_eca_nfnet_l0_gives_the_same_logits_at_even_64_px():
    # Even input: timm's symmetric padding samples stride-2 convs one pixel off TensorFlow's SAME.
    model = perturbed(TimmNFNet("eca_nfnet_l0", input_shape=(None, None, 3), classifier_activation=None))
    folded = fold_weight_standardization(model)
    x = np.random.default_rng(1).standard_normal((2, 64, 64, 3)).astype(np.float32)
    assert relative_error(folded(x, training=False), model(x, training=False)) <= 1e-5


def test_folded_timm_model_gives_the_same_logits_at_odd_and_non_square_sizes():
    model = perturbed_small_timm()
    folded = fold_weight_standardization(model)
    x = np.random.default_rng(2).standard_normal((2, 45, 70, 3)).astype(np.float32)
    assert relative_error(folded(x, training=False), model(x, training=False)) <= 1e-5


def test_folded_timm_model_has_no_gains_and_timm_standardised_kernels():
    model = perturbed_small_timm()
    folded = fold_weight_standardization(model)
    keys = set(loading.model_weights(folded))
    assert keys == {k for k in loading.model_weights(model) if not k.endswith("/gain")}
    assert isinstance(folded.get_layer("stem_conv1"), FoldedStdConv2D)
    block = folded.get_layer("stages_1_0")
    assert isinstance(block, FoldedNormFreeBlock)
    np.testing.assert_allclose(
        np.asarray(block.conv2.kernel),
        np.asarray(model.get_layer("stages_1_0").conv2.standardized_kernel()),
        rtol=0,
    )


def test_folding_a_folded_timm_model_keeps_its_kernels():
    folded = fold_weight_standardization(perturbed_small_timm())
    refolded = fold_weight_standardization(folded)
    before, after = loading.model_weights(folded), loading.model_weights(refolded)
    assert set(after) == set(before)
    for key, variable in after.items():
        np.testing.assert_array_equal(np.asarray(variable), np.asarray(before[key]))


@pytest.mark.parametrize("variant", ["nf_regnet_b0", "nf_resnet26", "nf_seresnet26", "nf_ecaresnet26"])
def test_folded_nf_regnet_and_nf_resnet_give_the_same_logits_at_even_and_odd_sizes(variant):
    # One block per stage; the stem (single conv, max pool) and the blocks' attention are all there.
    kwargs = {"classes": 10, "input_shape": (None, None, 3), "classifier_activation": None, "depths": (1, 1, 1, 1)}
    model = perturbed(TimmNFNet(variant, **kwargs))
    folded = fold_weight_standardization(model)
    for size in (64, 65):
        x = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype(np.float32)
        assert relative_error(folded(x, training=False), np.asarray(model(x, training=False))) <= 1e-5
