"""create_model: one registry of every model by name."""

import pytest

import nfnet_keras
from nfnet_keras.models import get_spec, model_names


def test_every_nfnet_variant_is_registered_under_a_lower_case_name():
    names = model_names()
    assert names[:2] == ["nfnet_f0", "nfnet_f0_plus"]
    assert {"nfnet_f7_plus", "nfnet_nano", "nfnet_micro"} <= set(names)
    assert model_names(pretrained_only=True)[:7] == [f"nfnet_f{i}" for i in range(7)]


def test_models_with_published_weights_are_deepminds_f0_to_f6_and_timms():
    timm = ["eca_nfnet_l0", "eca_nfnet_l1", "eca_nfnet_l2", "nfnet_l0", "nf_regnet_b1", "nf_resnet50"]
    timm += [f"dm_nfnet_f{i}" for i in range(7)]
    assert model_names(pretrained_only=True) == [f"nfnet_f{i}" for i in range(7)] + [f"timm/{n}" for n in timm]


@pytest.mark.parametrize("spelling", ["nfnet_f0_plus", "F0+", "f0plus", "F0PLUS", " nfnet_F0_plus "])
def test_variant_spellings_resolve_to_the_registered_name(spelling):
    assert get_spec(spelling).name == "nfnet_f0_plus"


def test_spec_carries_the_variant_table_entry():
    spec = get_spec("micro")
    assert (spec.family, spec.variant, spec.pretrained) == ("nfnet", "micro", False)
    assert (spec.config["test_imsize"], spec.config["eval_padding"]) == (32, 4)


@pytest.mark.parametrize(
    "name, resize",
    [("nfnet_f0", "squash"), ("nf_regnet_b0", "squash"), ("nf_resnet50", "squash"),
     ("timm/dm_nfnet_f0", "squash"), ("timm/eca_nfnet_l0", "shorter_side"), ("timm/nfnet_l0", "shorter_side")],
)
def test_each_model_resizes_for_evaluation_as_its_source_does(name, resize):
    # DeepMind's resize_crop_32 and timm's crop_mode "squash" (dm_nfnet) squash; timm's other models keep the aspect.
    assert get_spec(name).config["eval_resize"] == resize


def test_a_built_model_carries_its_resize_mode():
    model = nfnet_keras.create_model("timm/eca_nfnet_l0", input_shape=(64, 64, 3))
    assert (model.preprocessing.image_size, model.preprocessing.resize) == (64, "shorter_side")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown model 'resnet50'. Choose one of: nfnet_f0, "):
        get_spec("resnet50")


def test_create_model_builds_the_same_architecture_as_the_application_function():
    by_name = nfnet_keras.create_model("nano", classes=4, classifier_activation=None)
    direct = nfnet_keras.NFNet("nano", classes=4, classifier_activation=None)
    assert by_name.count_params() == direct.count_params()
    assert by_name.name == direct.name == "nfnet_nano"


def test_create_model_passes_family_overrides():
    model = nfnet_keras.create_model("nano", include_top=False, pooling="avg", depths=(1, 1, 1, 2))
    assert len([layer for layer in model.layers if layer.name.startswith("nf_block_")]) == 5


def test_imagenet_weights_for_a_name_without_them_fail_before_download():
    with pytest.raises(ValueError, match="No ImageNet weights"):
        nfnet_keras.create_model("nfnet_f7", weights="imagenet")
