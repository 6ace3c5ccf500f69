"""NFModel: a model that carries its evaluation preprocessing and class names through saving."""

import keras
import numpy as np
import pytest

from nfnet_keras.models import NFModel, create_model
from nfnet_keras.preprocessing import EvalPreprocessing, imagenet_class_names


def tiny_model(classes=3, **settings):
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(classes, name="predictions")(keras.layers.GlobalAveragePooling2D()(inputs))
    return NFModel(inputs, outputs, name="tiny", **settings)


def test_settings_survive_a_keras_file_round_trip(tmp_path):
    model = tiny_model(preprocessing=EvalPreprocessing(8, crop_padding=2), class_names=["cat", "dog", "owl"])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, NFModel)
    assert loaded.preprocessing == EvalPreprocessing(8, crop_padding=2)
    assert loaded.class_names == ("cat", "dog", "owl")


def test_unnamed_classes_are_numbered():
    assert tiny_model().class_names == ("0", "1", "2")


def test_imagenet_stands_for_the_thousand_imagenet_names():
    model = tiny_model(classes=1000, class_names="imagenet")
    assert model.class_names == tuple(imagenet_class_names())
    assert model.get_config()["class_names"] == "imagenet"


def test_class_names_must_match_the_classifier():
    with pytest.raises(ValueError, match="2 class names for a model with 3 classes"):
        tiny_model(class_names=["a", "b"])


def test_a_string_is_not_a_list_of_class_names():
    with pytest.raises(TypeError, match="sequence of strings"):
        tiny_model(class_names="abc")


def test_a_feature_extractor_has_no_class_names():
    model = create_model("nano", include_top=False, pooling="avg")
    assert model.class_names is None and model.num_classes is None


def test_a_built_nfnet_knows_its_variants_evaluation_settings():
    assert create_model("micro", classes=10).preprocessing == EvalPreprocessing(32, crop_padding=4)
    assert create_model("F0", include_top=False).preprocessing == EvalPreprocessing(256, crop_padding=32)


def test_a_fixed_input_size_is_the_evaluation_size():
    model = create_model("nano", input_shape=(48, 48, 3), classes=2)
    assert model.preprocessing.image_size == 48


def test_a_thousand_class_nfnet_names_the_imagenet_classes():
    assert create_model("nano").class_names[0] == imagenet_class_names()[0]


def test_settings_do_not_change_what_the_model_computes():
    plain = tiny_model()
    carrying = tiny_model(preprocessing=EvalPreprocessing(8), class_names=["a", "b", "c"])
    carrying.set_weights(plain.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(plain.predict(x, verbose=0), carrying.predict(x, verbose=0))
