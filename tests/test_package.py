"""The public API: what the top level holds, where the rest lives, and what imports without TensorFlow."""

import warnings

import pytest

import nfnet_keras
from support.subprocesses import run_script

TOP_LEVEL = {
    "NFNet",
    "create_model",
    "model_names",
    "preprocess_input",
    "prepare_images",
    "decode_predictions",
}


def test_top_level_holds_model_constructors_and_the_image_helpers_only():
    families = {"NFNet": 17, "NFRegNet": 9, "NFResNet": 6, "ECANFNet": 4, "TimmNF": 2}  # NFNet: F0..F7+, timm's L0
    constructors = {
        family: [n for n in nfnet_keras.__all__ if n.startswith(family) and n not in (family, "TimmNFNet")]
        for family in families
    }
    assert {family: len(names) for family, names in constructors.items()} == families
    applications = {name for names in constructors.values() for name in names}
    assert set(nfnet_keras.__all__) == TOP_LEVEL | {"NFRegNet", "NFResNet", "TimmNFNet"} | applications


@pytest.mark.parametrize(
    "package", ["models", "weights", "preprocessing", "data", "training", "export", "analysis"]
)
def test_every_subpackage_declares_its_public_names(package):
    module = __import__(f"nfnet_keras.{package}", fromlist=["__all__"])
    assert isinstance(module.__all__, list)
    for name in module.__all__:
        assert hasattr(module, name), f"nfnet_keras.{package}.__all__ names missing {name}"


def test_moved_top_level_name_still_resolves_with_a_deprecation_warning():
    from nfnet_keras.training import NFNetSGD

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert nfnet_keras.NFNetSGD is NFNetSGD
    assert any("nfnet_keras.training.NFNetSGD" in str(w.message) for w in caught)


def test_unknown_top_level_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        nfnet_keras.NotAThing  # noqa: B018


def test_models_preprocessing_and_training_step_run_on_jax_without_tensorflow():
    result = run_script("without_tensorflow.py", [], "jax", timeout=600)
    assert result == {
        "backend": "jax",
        "loss_is_finite": True,
        "batch_shape": [2, 32, 32, 3],
        "tensorflow_loaded": False,
    }
