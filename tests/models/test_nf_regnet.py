"""Spec tests for NF-RegNet B0 ... B8 (DeepMind's `nf_regnet.py`).

Expected numbers come from shared/reference/nfnet_reference.md (NF-RegNet table and
bullets of section 1.10); the golden outputs are DeepMind's Haiku
`NF_RegNet(1000, 'B0', activation='silu')` for the parameters that
`support.golden.golden_params(model="nf_regnet_b0")` rebuilds.
"""

import keras
import numpy as np
import pytest
from support.golden import (
    golden_outputs,
    golden_params,
    relative_error,
    write_golden_checkpoint,
    write_perturbed_checkpoint,
)
from support.nf_reference import nf_regnet as reference_nf_regnet
from support.nf_reference import nf_regnet_count_flops
from support.subprocesses import run_script

import nfnet_keras
from nfnet_keras.models import NFModel, count_macs, create_model, fold_weight_standardization, get_spec, model_names
from nfnet_keras.models.nf_regnet import NFRegNet, NFRegNetB0
from nfnet_keras.weights import loading

B0 = "nf_regnet_b0"
TOLERANCE = 1e-4  # max |ours - DeepMind| / max |DeepMind|, float32 on CPU
# Reference section 1.10 (1000 classes).
PARAMS = {
    "B0": 8_595_372,
    "B1": 10_019_208,
    "B2": 13_785_904,
    "B3": 18_136_667,
    "B4": 29_315_830,
    "B5": 48_707_138,
    "B6": 70_045_805,
    "B7": 101_743_204,
    "B8": 142_314_441,
}
FAST = ("B0", "B1")
# A small NF-RegNet (24 ... 96 channels after the 0.75 multiplier) for the tests that run it.
SMALL = {"widths": (32, 48, 64, 128), "depths": (1, 2, 1, 1)}


@pytest.fixture(scope="module")
def golden_checkpoint(tmp_path_factory):
    """The golden parameters as a plain-dict pickle (the form DeepMind's `dm_params` writes)."""
    return str(write_golden_checkpoint(tmp_path_factory.mktemp("golden") / "B0_golden.pkl", model=B0))


@pytest.fixture(scope="module")
def golden_model(golden_checkpoint):
    return create_model(B0, weights=golden_checkpoint, input_shape=(None, None, 3), classifier_activation=None)


def small(**kwargs):
    kwargs = {"input_shape": (64, 64, 3), "classes": 10, "classifier_activation": None, **SMALL, **kwargs}
    return NFRegNet("B0", **kwargs)


# -- golden outputs (the "must show") ---------------------------------------


def test_golden_checkpoint_gives_deepmind_logits_at_224_px(golden_model):
    ref = golden_outputs(B0)
    assert relative_error(golden_model(ref["x"], training=False), ref["logits"]) <= TOLERANCE


def test_golden_checkpoint_gives_deepmind_logits_at_odd_225_px(golden_model):
    ref = golden_outputs(B0)
    assert relative_error(golden_model(ref["x_odd"], training=False), ref["logits_odd"]) <= TOLERANCE


def test_golden_checkpoint_gives_deepmind_pooled_features(golden_checkpoint):
    model = create_model(B0, weights=golden_checkpoint, include_top=False, pooling="avg")
    ref = golden_outputs(B0)
    assert relative_error(model(ref["x"], training=False), ref["pool"]) <= TOLERANCE


def test_golden_outputs_on_jax_backend(golden_checkpoint):
    result = run_script("golden_backend.py", ["--model", B0, golden_checkpoint], "jax", timeout=600)
    assert result["backend"] == "jax"
    assert set(result["errors"]) == {"logits", "logits_odd", "pool"}
    assert all(error <= TOLERANCE for error in result["errors"].values()), result["errors"]


def test_checkpoint_tree_is_deepmind_b0_module_for_module(golden_model):
    """Every module and shape of DeepMind's B0 tree, and nothing else, is a weight of the model."""
    expected = {key: value.shape for key, value in loading.dm_to_keras(golden_params(model=B0)).items()}
    assert {key: tuple(v.shape) for key, v in loading.model_weights(golden_model).items()} == expected


def test_small_model_matches_the_numpy_reference(tmp_path):
    model = small()
    tree = write_perturbed_checkpoint(model, tmp_path / "small.pkl", "NF_RegNet")
    loaded = small(weights=str(tmp_path / "small.pkl"))
    x = np.random.default_rng(1).standard_normal((2, 64, 64, 3)).astype("float32")
    expected = reference_nf_regnet(tree, x, SMALL["widths"], SMALL["depths"])["logits"]
    assert relative_error(loaded(x, training=False), expected) <= TOLERANCE


# -- sizes ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", FAST)
def test_parameter_count_equals_deepmind(variant):
    assert create_model(f"nf_regnet_{variant.lower()}").count_params() == PARAMS[variant]


@pytest.mark.slow
@pytest.mark.parametrize("variant", [v for v in PARAMS if v not in FAST])
def test_parameter_count_equals_deepmind_large_variants(variant):
    assert create_model(f"nf_regnet_{variant.lower()}").count_params() == PARAMS[variant]


@pytest.mark.parametrize("variant", FAST)
def test_count_macs_at_test_size_equals_deepmind_count_flops(variant):
    spec = get_spec(f"nf_regnet_{variant.lower()}")
    size = spec.config["test_imsize"]
    expected = nf_regnet_count_flops(spec.config["widths"], spec.config["depths"], size)
    assert count_macs(create_model(spec.name), size) == expected


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["B3", "B4", "B8"])
def test_count_macs_at_test_size_equals_deepmind_count_flops_large_variants(variant):
    """Variants whose test size divides by 32 (DeepMind's counter uses fractional map sizes otherwise)."""
    spec = get_spec(f"nf_regnet_{variant.lower()}")
    size = spec.config["test_imsize"]
    expected = nf_regnet_count_flops(spec.config["widths"], spec.config["depths"], size)
    assert count_macs(create_model(spec.name), size) == expected


# -- structure --------------------------------------------------------------------


def test_every_stage_starts_with_a_stride_2_block_with_an_average_pool_shortcut():
    model = NFRegNetB0()
    blocks = [model.get_layer(f"nf_block_{i}") for i in range(16)]
    assert [b.stride for b in blocks] == [2] + [2, 1, 1] + [2, 1, 1, 1, 1, 1] * 2  # depths 1, 3, 6, 6
    assert all((b.pool is not None) == (b.stride == 2) for b in blocks)
    assert model.get_layer("initial_conv").strides == (2, 2)


def test_first_block_has_no_expansion_and_the_others_expand_by_2_25_in_groups_of_8():
    model = NFRegNetB0()
    first, second = model.get_layer("nf_block_0"), model.get_layer("nf_block_1")
    assert (first.mid_channels, first.groups) == (32, 4)  # int(36 * 1) rounded down to 8s
    assert (second.mid_channels, second.groups) == (80, 10)  # int(36 * 2.25) = 81 -> 80
    assert first.conv1b is None


def test_squeeze_excite_gates_the_bottleneck_before_conv2():
    block = NFRegNetB0().get_layer("nf_block_1")
    assert block.se_position == "bottleneck"
    assert (block.squeeze_excite.channels, block.squeeze_excite.hidden) == (80, 40)


def test_final_conv_has_1280_over_440_of_the_last_width():
    assert NFRegNetB0().get_layer("final_conv").filters == 960  # int(1280 * 330 // 440)


def test_fresh_classifier_is_zero():
    kernel = keras.ops.convert_to_numpy(NFRegNetB0().get_layer("predictions").kernel)
    assert not kernel.any()


def test_blocks_use_gamma_scaled_silu():
    model = NFRegNetB0()
    assert model.get_layer("final_act").activation == "silu"
    assert model.get_layer("nf_block_3").activation == "silu"


def test_stage_outputs_are_named_layers_for_feature_extraction():
    model = NFRegNetB0(include_top=False)
    shapes = [tuple(model.get_layer(f"stage{k}").output.shape) for k in range(1, 5)]
    assert [s[-1] for s in shapes] == [36, 78, 156, 330]


# -- the model's settings, arguments, registry --------------------------------------


def test_model_carries_its_test_size_preprocessing_and_imagenet_class_names():
    model = create_model("nf_regnet_b1")
    assert isinstance(model, NFModel)
    assert (model.preprocessing.image_size, model.preprocessing.crop_padding) == (256, 32)
    assert len(model.class_names) == 1000 and model.class_names[0] == "tench"


def test_every_variant_is_registered_without_imagenet_weights():
    names = [f"nf_regnet_b{i}" for i in range(9)]
    assert [n for n in model_names() if n.startswith("nf_regnet")] == names
    assert not set(names) & set(model_names(pretrained_only=True))
    assert get_spec("NF_RegNet_B3").config["test_imsize"] == 320


def test_imagenet_weights_are_refused_with_one_line():
    with pytest.raises(ValueError, match=r"^No ImageNet weights are published for NF-RegNet-B0: [^\n]*$"):
        create_model(B0, weights="imagenet")


def test_application_functions_are_exported_by_the_models_package():
    assert nfnet_keras.models.NFRegNetB8.__name__ == "NFRegNetB8"
    assert NFRegNetB0(weights=None, include_top=False).name == B0


def test_saved_model_keeps_its_blocks_and_settings(tmp_path):
    model = small()
    x = np.random.default_rng(0).standard_normal((1, 64, 64, 3)).astype("float32")
    model.save(tmp_path / "small.keras")
    loaded = keras.saving.load_model(tmp_path / "small.keras")
    assert loaded.get_layer("nf_block_2").se_position == "bottleneck"
    assert loaded.preprocessing == model.preprocessing
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-6)


def test_folded_model_computes_the_same_function(tmp_path):
    model = small()
    write_perturbed_checkpoint(model, tmp_path / "small.pkl", "NF_RegNet")
    model = small(weights=str(tmp_path / "small.pkl"))
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype("float32")
    assert relative_error(fold_weight_standardization(model)(x), model(x)) <= TOLERANCE
