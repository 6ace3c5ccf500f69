"""`load_model`: the model a user names (.keras file, run directory, registry name with weights)."""

import json

import keras
import numpy as np
import pytest

from support.runs import micro_classifier, write_micro_run

import nfnet_keras
from nfnet_keras.models import NFModel
from nfnet_keras.models.loading import ModelLoadError, load_model, predict_probabilities
from nfnet_keras.preprocessing import EvalPreprocessing
from nfnet_keras.weights import CheckpointError, WeightsMismatchError
from nfnet_keras.weights.run_directory import EMA_WEIGHTS_FILE, MODEL_FILE, RUN_CONFIG_FILE

MICRO = EvalPreprocessing(32, crop_padding=4)
NAMES = tuple(f"class {i}" for i in range(10))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory as train.py writes it: model.keras with class names, and ema.weights.h5."""
    directory = tmp_path_factory.mktemp("run")
    raw, ema = write_micro_run(directory, NAMES)
    images = np.random.default_rng(0).uniform(0, 255, (3, 40, 36, 3)).astype(np.float32)
    inputs = nfnet_keras.prepare_images(images, raw)
    return directory, inputs, {"raw": raw.predict(inputs, verbose=0), "ema": ema.predict(inputs, verbose=0)}


def test_run_directory_loads_its_model_with_the_ema_weights_preprocessing_and_class_names(run):
    directory, inputs, expected = run
    loaded = load_model(directory)
    assert isinstance(loaded.model, NFModel)
    assert loaded.model.preprocessing == MICRO
    assert loaded.model.class_names == NAMES
    assert loaded.source == f"{directory / MODEL_FILE} with the EMA weights of {directory / EMA_WEIGHTS_FILE}"
    np.testing.assert_allclose(loaded.model.predict(inputs, verbose=0), expected["ema"], atol=1e-6)


def test_noema_loads_the_raw_weights(run):
    directory, inputs, expected = run
    loaded = load_model(directory / MODEL_FILE, ema=False)
    assert loaded.source.endswith("(raw weights)")
    np.testing.assert_allclose(loaded.model.predict(inputs, verbose=0), expected["raw"], atol=1e-6)


def test_ema_required_but_missing_is_an_error(run, tmp_path):
    directory, _, _ = run
    (tmp_path / MODEL_FILE).write_bytes((directory / MODEL_FILE).read_bytes())
    with pytest.raises(ModelLoadError, match=f"no EMA weights next to the model .*{EMA_WEIGHTS_FILE}.*--noema"):
        load_model(tmp_path, ema=True)


def test_ema_weights_of_another_variant_are_refused_naming_the_file_and_the_weights(run, tmp_path):
    directory, _, _ = run
    (tmp_path / MODEL_FILE).write_bytes((directory / MODEL_FILE).read_bytes())
    nfnet_keras.create_model("nano", classes=10).save_weights(tmp_path / EMA_WEIGHTS_FILE)
    with pytest.raises(WeightsMismatchError) as error:
        load_model(tmp_path)
    message = str(error.value)
    assert message.startswith(f"Weights from {tmp_path / EMA_WEIGHTS_FILE} do not fit model 'nfnet_micro'")
    assert "missing (20): nf_block_4/conv0/bias" in message  # nano has 4 blocks, micro 5


def test_truncated_ema_weights_are_reported_with_the_files_name(run, tmp_path):
    directory, _, _ = run
    (tmp_path / MODEL_FILE).write_bytes((directory / MODEL_FILE).read_bytes())
    data = (directory / EMA_WEIGHTS_FILE).read_bytes()
    (tmp_path / EMA_WEIGHTS_FILE).write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=f"{tmp_path / EMA_WEIGHTS_FILE}: cannot read the Keras weights"):
        load_model(tmp_path)


@pytest.mark.parametrize("name", ["micro", "nfnet_micro"])
def test_model_name_with_a_keras_weights_file(run, name):
    directory, inputs, expected = run
    loaded = load_model(variant=name, weights=directory / EMA_WEIGHTS_FILE)
    assert loaded.model.preprocessing == MICRO
    assert loaded.model.class_names == tuple(str(i) for i in range(10))  # a weights file names no classes
    probabilities = predict_probabilities(loaded.model, inputs)  # a registry model has a softmax head
    np.testing.assert_allclose(probabilities, keras.ops.convert_to_numpy(keras.ops.softmax(expected["ema"])), atol=1e-6)


def test_model_name_without_weights_file_builds_a_random_model_of_the_given_classes():
    loaded = load_model(variant="nano", weights="NONE", classes=3, image_size=48)
    assert loaded.model.num_classes == 3
    assert loaded.model.input_shape == (None, 48, 48, 3)
    assert loaded.model.preprocessing == EvalPreprocessing(48, crop_padding=4)


def test_predict_probabilities_applies_a_softmax_to_logits(run):
    directory, inputs, expected = run
    probabilities = predict_probabilities(load_model(directory).model, inputs)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(probabilities.argmax(-1), expected["ema"].argmax(-1))


def test_model_saved_before_nfmodel_takes_its_settings_from_the_run_config(tmp_path):
    plain = micro_classifier(0)
    keras.Model(plain.inputs, plain.outputs, name="my_net").save(tmp_path / MODEL_FILE)
    (tmp_path / RUN_CONFIG_FILE).write_text(json.dumps({"variant": "nano", "eval_image_size": 48}))
    model = load_model(tmp_path).model
    assert isinstance(model, NFModel)
    assert model.preprocessing == EvalPreprocessing(32, crop_padding=4)  # its fixed input size wins
    assert model.class_names == tuple(str(i) for i in range(10))


def test_model_saved_before_nfmodel_without_settings_is_refused(tmp_path):
    plain = nfnet_keras.create_model("micro", classes=10, input_shape=(None, None, 3))
    keras.Model(plain.inputs, plain.outputs, name="my_net").save(tmp_path / "net.keras")
    with pytest.raises(ModelLoadError, match="cannot tell how .*net.keras prepares its images.*--variant"):
        load_model(tmp_path / "net.keras")
    assert load_model(tmp_path / "net.keras", variant="F0").model.preprocessing == EvalPreprocessing(256)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({}, "nothing to load"),
        ({"variant": "micro", "weights": "imagenet"}, "no ImageNet weights are published for nfnet_micro"),
        ({"variant": "F9"}, "Unknown model 'F9'"),
        ({"variant": "micro", "weights": "missing.weights.h5"}, "weights file not found: missing.weights.h5"),
        ({"variant": "micro", "classes": 10}, "applies to weights 'none' only"),
        ({"variant": "micro", "weights": "none", "ema": True}, "pass the EMA file as weights"),
        ({"model": "missing.keras"}, "model file not found: missing.keras"),
    ],
)
def test_bad_arguments_are_one_line_errors(arguments, message):
    with pytest.raises(ModelLoadError, match=message) as error:
        load_model(**arguments)
    assert "\n" not in str(error.value)


def test_a_model_name_with_a_keras_model_is_refused(run):
    directory, _, _ = run
    with pytest.raises(ModelLoadError, match="carries its own preprocessing"):
        load_model(directory, variant="micro")


def test_a_folder_without_a_model_is_not_a_run_directory(tmp_path):
    with pytest.raises(ModelLoadError, match=f"folder without {MODEL_FILE}"):
        load_model(tmp_path)


def test_a_weights_file_is_not_a_model(run):
    directory, _, _ = run
    with pytest.raises(ModelLoadError, match="is a h5 file, not a .keras model"):
        load_model(directory / EMA_WEIGHTS_FILE)


def test_a_fixed_input_size_cannot_be_overridden(run):
    directory, _, _ = run
    with pytest.raises(ModelLoadError, match="image size 64 differs from the model's fixed input size 32"):
        load_model(directory, image_size=64)


def test_a_timm_name_with_timms_safetensors_loads_them_by_timms_names_with_their_classes(tmp_path):
    from support.timm_golden import timm_state_dict, write_safetensors

    state = timm_state_dict(seed=0)
    state["head.fc.weight"], state["head.fc.bias"] = state["head.fc.weight"][:5], state["head.fc.bias"][:5]
    path = tmp_path / "model.safetensors"
    write_safetensors(state, path)
    loaded = load_model(variant="timm/eca_nfnet_l0", weights=str(path), image_size=64)
    kernel = keras.ops.convert_to_numpy(loaded.model.get_layer("predictions").kernel)
    np.testing.assert_array_equal(kernel, state["head.fc.weight"].T)
    assert str(path) in loaded.source
