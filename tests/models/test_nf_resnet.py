"""Spec tests for NF-ResNet 50 ... 600 (DeepMind's `nf_resnet.py`).

Expected parameter counts come from shared/reference/nfnet_reference.md (NF-ResNet
bullets of section 1.10). No DeepMind outputs exist for NF-ResNets, so the function is
checked against `support.nf_reference.nf_resnet`, a float64 numpy forward pass
written from DeepMind's code, on a small configuration with every weight perturbed.
"""

import keras
import numpy as np
import pytest
from support.golden import relative_error, write_perturbed_checkpoint
from support.nf_reference import nf_resnet as reference_nf_resnet

from nfnet_keras.models import NFModel, count_macs, create_model, get_spec, model_names
from nfnet_keras.models.nf_resnet import NFResNet, NFResNet50
from nfnet_keras.weights import loading

TOLERANCE = 1e-4  # max |ours - reference| / max |reference|, float32 on CPU
PARAMS = {"50": 25_557_048, "101": 44_549_193}
# A small NF-ResNet: DeepMind's width argument 0.25 (16 ... 128 channels), 5 blocks.
SMALL = {"width_multiplier": 0.25, "depths": (1, 2, 1, 1)}


def small(**kwargs):
    kwargs = {"input_shape": (64, 64, 3), "classes": 10, "classifier_activation": None, **SMALL, **kwargs}
    return NFResNet("50", **kwargs)


# -- the function -----------------------------------------------------------------


@pytest.mark.parametrize("use_se", [False, True])
@pytest.mark.parametrize("size", [64, 67])
def test_deepmind_layout_checkpoint_gives_the_reference_logits(tmp_path, use_se, size):
    """Odd sizes exercise the SAME max-pool and the strided shortcut convs' padding."""
    model = small(use_se=use_se, input_shape=(None, None, 3))
    tree = write_perturbed_checkpoint(model, tmp_path / "small.pkl", "NF_ResNet")
    loaded = small(use_se=use_se, input_shape=(None, None, 3), weights=str(tmp_path / "small.pkl"))
    x = np.random.default_rng(1).standard_normal((2, size, size, 3)).astype("float32")
    expected = reference_nf_resnet(tree, x, SMALL["depths"], width=0.25, use_se=use_se)["logits"]
    assert relative_error(loaded(x, training=False), expected) <= TOLERANCE


def test_checkpoint_of_the_other_se_setting_is_refused_by_name(tmp_path):
    write_perturbed_checkpoint(small(use_se=True), tmp_path / "se.pkl", "NF_ResNet")
    with pytest.raises(loading.WeightsMismatchError, match="not in the model.*squeeze_excite"):
        small(weights=str(tmp_path / "se.pkl"))


# -- sizes ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", PARAMS)
def test_parameter_count_equals_deepmind(variant):
    assert create_model(f"nf_resnet{variant}").count_params() == PARAMS[variant]


def test_count_macs_of_resnet50_equals_the_standard_resnet50():
    """The convs and classifier of ResNet-50 v1.5 (stride in the 3x3): 4.09 G MACs at 224 px."""
    assert round(count_macs(NFResNet50(), 224) / 1e9, 2) == 4.09


# -- structure --------------------------------------------------------------------


def test_stem_is_a_7x7_stride_2_conv_then_a_3x3_stride_2_max_pool():
    model = NFResNet50()
    stem, pool = model.get_layer("initial_conv"), model.get_layer("stem_pool")
    assert (stem.kernel_size, stem.strides, stem.filters) == ((7, 7), (2, 2), 64)
    assert (pool.pool_size, pool.strides, pool.padding) == ((3, 3), (2, 2), "same")


def test_blocks_are_dense_bottlenecks_with_strided_conv_shortcuts():
    model = NFResNet50()
    blocks = [model.get_layer(f"nf_block_{i}") for i in range(16)]
    assert [b.stride for b in blocks] == [1, 1, 1] + [2, 1, 1, 1] + [2, 1, 1, 1, 1, 1] + [2, 1, 1]
    assert [b.mid_channels for b in blocks] == [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3
    assert all(b.groups == 1 and b.conv1b is None and b.pool is None for b in blocks)
    shortcuts = [b.conv_shortcut.strides if b.conv_shortcut else None for b in blocks]
    assert shortcuts == [(1, 1), None, None, (2, 2), None, None, None, (2, 2)] + [None] * 5 + [(2, 2), None, None]


def test_squeeze_excite_is_off_by_default_and_gates_the_block_output_with_use_se():
    assert NFResNet50().get_layer("nf_block_0").squeeze_excite is None
    se = NFResNet50(use_se=True).get_layer("nf_block_0").squeeze_excite
    assert (se.channels, se.hidden) == (256, 64)


def test_head_pools_the_activated_last_stage_without_a_final_conv():
    model = NFResNet50()
    names = [layer.name for layer in model.layers]
    assert "final_conv" not in names
    assert names[names.index("stage4") :] == ["stage4", "final_act", "avg_pool", "predictions"]
    assert model.get_layer("final_act").activation == "relu"


def test_dropout_is_off_unless_a_drop_rate_is_given():
    assert "top_dropout" not in [layer.name for layer in NFResNet50().layers]
    assert NFResNet50(drop_rate=0.25).get_layer("top_dropout").rate == 0.25


def test_skip_gains_start_at_the_configured_init():
    model = small(skip_gain_init=0.5)
    assert keras.ops.convert_to_numpy(model.get_layer("nf_block_3").skip_gain) == 0.5


# -- the model's settings, arguments, registry --------------------------------------


def test_model_carries_224_px_preprocessing_and_imagenet_class_names():
    model = create_model("nf_resnet50")
    assert isinstance(model, NFModel)
    assert (model.preprocessing.image_size, model.preprocessing.crop_padding) == (224, 32)
    assert len(model.class_names) == 1000


def test_every_variant_is_registered_without_imagenet_weights():
    names = ["nf_resnet50", "nf_resnet101", "nf_resnet152", "nf_resnet200", "nf_resnet288", "nf_resnet600"]
    assert [n for n in model_names() if n.startswith("nf_resnet")] == names
    assert not set(names) & set(model_names(pretrained_only=True))
    assert get_spec("NF_ResNet101").config["depths"] == (3, 4, 23, 3)


def test_deepmind_variant_spelling_builds_the_same_model():
    assert NFResNet("ResNet50", include_top=False).count_params() == NFResNet("50", include_top=False).count_params()


def test_imagenet_weights_are_refused_with_one_line():
    with pytest.raises(ValueError, match=r"^No ImageNet weights are published for NF-ResNet-50: [^\n]*$"):
        create_model("nf_resnet50", weights="imagenet")


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(ValueError, match="Choose one of 50, 101, 152, 200, 288, 600"):
        NFResNet("34")
