"""Folding weight standardisation into plain conv kernels for inference."""

import keras
import numpy as np

import nfnet_keras
from nfnet_keras.weights import loading
from nfnet_keras.models.folding import fold_weight_standardization


def _perturbed_nano(**kwargs):
    model = nfnet_keras.NFNet("nano", classes=10, input_shape=(None, None, 3), classifier_activation=None, **kwargs)
    rng = np.random.default_rng(0)
    for key, variable in loading.model_weights(model).items():
        base = 1.0 if key.endswith("gain") else 0.0
        variable.assign((base + 0.3 * rng.standard_normal(tuple(variable.shape))).astype(np.float32))
    return model


def test_folded_model_computes_the_same_function():
    model = _perturbed_nano()
    folded = fold_weight_standardization(model)
    x = np.random.default_rng(1).standard_normal((3, 45, 37, 3)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    actual = np.asarray(folded(x, training=False))
    assert np.max(np.abs(actual - expected)) <= 1e-5 * np.max(np.abs(expected))


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


def test_folded_model_round_trips_through_keras_saving(tmp_path):
    folded = fold_weight_standardization(_perturbed_nano(include_top=False, pooling="avg"))
    path = str(tmp_path / "folded.keras")
    folded.save(path)
    reloaded = keras.saving.load_model(path)
    x = np.random.default_rng(2).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(reloaded(x)), np.asarray(folded(x)))
