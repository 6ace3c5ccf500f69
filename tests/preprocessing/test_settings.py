"""EvalPreprocessing: the evaluation settings a model carries."""

import pytest

from nfnet_keras.preprocessing import MEAN_RGB, STDDEV_RGB, EvalPreprocessing, resolve_preprocessing


def test_defaults_are_deepminds_resize_crop_32():
    settings = EvalPreprocessing(256)
    assert (settings.crop_padding, settings.interpolation) == (32, "bicubic")
    assert (settings.mean, settings.std) == (MEAN_RGB, STDDEV_RGB)
    assert (settings.resized_size, settings.crop_offset) == (288, 16)


def test_a_config_saved_without_a_resize_mode_squashes_as_before():
    config = {"image_size": 32, "crop_padding": 4, "interpolation": "bicubic", "mean": MEAN_RGB, "std": STDDEV_RGB}
    assert EvalPreprocessing.from_config(config).resize == "squash"


def test_odd_padding_rounds_the_crop_offset_up_as_deepmind_does():
    assert EvalPreprocessing(32, crop_padding=5).crop_offset == 3


def test_config_round_trips():
    settings = EvalPreprocessing(
        32, crop_padding=4, interpolation="bilinear", mean=(1, 2, 3), std=(4, 5, 6), resize="shorter_side"
    )
    assert EvalPreprocessing.from_config(settings.get_config()) == settings


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 0}, "image_size must be a positive integer"),
        ({"image_size": True}, "image_size must be a positive integer"),
        ({"image_size": 32, "crop_padding": -1}, "crop_padding must be a non-negative integer"),
        ({"image_size": 32, "interpolation": "nearest"}, "interpolation must be one of"),
        ({"image_size": 32, "resize": "crop"}, "resize must be one of"),
        ({"image_size": 32, "mean": (1, 2)}, "mean must have 3 values"),
        ({"image_size": 32, "std": (1, 0, 1)}, "std must be positive"),
    ],
)
def test_bad_values_are_refused_with_a_message_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EvalPreprocessing(**kwargs)


def test_unknown_config_key_is_refused():
    with pytest.raises(ValueError, match="unknown preprocessing keys"):
        EvalPreprocessing.from_config({"image_size": 32, "crop_pct": 0.9})


def test_resolve_accepts_a_size_with_deepminds_padding():
    assert resolve_preprocessing(64) == EvalPreprocessing(64, crop_padding=32)


def test_resolve_padding_overrides_the_given_settings():
    assert resolve_preprocessing(EvalPreprocessing(32, crop_padding=4), crop_padding=0).crop_padding == 0


def test_resolve_reads_a_models_own_settings():
    class Model:
        preprocessing = EvalPreprocessing(32, crop_padding=4)

    assert resolve_preprocessing(Model()) == EvalPreprocessing(32, crop_padding=4)


def test_resolve_refuses_a_model_without_settings():
    class Model:
        name = "foreign"
        preprocessing = None

    with pytest.raises(ValueError, match="'foreign' carries no evaluation preprocessing"):
        resolve_preprocessing(Model())
