"""NFNetCrossEntropy: softmax cross-entropy on mixed, then smoothed, labels."""

import numpy as np
import pytest

import keras
from keras import ops

from nfnet_keras.training.losses import NFNetCrossEntropy

K = 7


def _reference(y, logits, smoothing=0.1):
    """DeepMind: y = (1-s) y + s/K; loss = mean(-sum(y * log_softmax(logits)))."""
    y = np.asarray(y, np.float64)
    logits = np.asarray(logits, np.float64)
    y = (1.0 - smoothing) * y + smoothing / y.shape[-1]
    z = logits - logits.max(-1, keepdims=True)
    log_softmax = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(np.mean(-(y * log_softmax).sum(-1)))


def _mixed_batch(n=6, seed=0):
    """MixUp-style soft labels: r * onehot(a) + (1 - r) * onehot(b)."""
    rng = np.random.default_rng(seed)
    eye = np.eye(K)
    a, b = rng.integers(0, K, n), rng.integers(0, K, n)
    r = rng.beta(0.2, 0.2, size=(n, 1))
    y = r * eye[a] + (1 - r) * eye[b]
    logits = 3.0 * rng.standard_normal((n, K))
    return y.astype("float32"), logits.astype("float32")


def test_matches_reference_on_mixed_soft_labels():
    y, logits = _mixed_batch()
    got = float(ops.convert_to_numpy(NFNetCrossEntropy()(y, logits)))
    assert got == pytest.approx(_reference(y, logits), rel=1e-6)


def test_smoothing_is_applied_after_mixing():
    # Smoothing before mixing would give the same labels (both maps are
    # affine, weights summing to 1), so check the smoothed target explicitly:
    # the loss with s is the loss of the explicitly smoothed labels with s=0.
    y, logits = _mixed_batch(seed=1)
    smoothed = 0.9 * y + 0.1 / K
    a = float(ops.convert_to_numpy(NFNetCrossEntropy(0.1)(y, logits)))
    b = float(ops.convert_to_numpy(NFNetCrossEntropy(0.0)(smoothed, logits)))
    assert a == pytest.approx(b, rel=1e-6)


def test_is_exactly_keras_categorical_crossentropy_with_logits():
    y, logits = _mixed_batch(seed=2)
    ours = ops.convert_to_numpy(NFNetCrossEntropy(0.1)(y, logits))
    keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    np.testing.assert_array_equal(ours, ops.convert_to_numpy(keras_loss(y, logits)))


def test_integer_labels_equal_one_hot():
    y, logits = _mixed_batch(seed=3)
    labels = np.array([0, 3, 6, 2, 1, 5])
    one_hot = np.eye(K, dtype="float32")[labels]
    loss = NFNetCrossEntropy()
    want = float(ops.convert_to_numpy(loss(one_hot, logits)))
    assert float(ops.convert_to_numpy(loss(labels, logits))) == pytest.approx(want, rel=1e-6)
    assert float(ops.convert_to_numpy(loss(labels[:, None], logits))) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_computed_in_float32_for_half_precision_logits(dtype):
    y, logits = _mixed_batch(seed=4)
    half = ops.cast(logits, dtype)
    upcast = ops.convert_to_numpy(ops.cast(half, "float32"))
    out = NFNetCrossEntropy()(y, half)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert float(ops.convert_to_numpy(out)) == pytest.approx(_reference(y, upcast), rel=1e-6)


def test_sum_reduction_and_sample_weight():
    y, logits = _mixed_batch(seed=5)
    per_example = ops.convert_to_numpy(NFNetCrossEntropy(reduction=None)(y, logits))
    assert per_example.shape == (6,)
    total = float(ops.convert_to_numpy(NFNetCrossEntropy(reduction="sum")(y, logits)))
    assert total == pytest.approx(per_example.sum(), rel=1e-6)


def test_get_config_round_trip():
    loss = NFNetCrossEntropy(label_smoothing=0.2, name="ce")
    config = loss.get_config()
    assert "from_logits" not in config and config["label_smoothing"] == 0.2
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is NFNetCrossEntropy and restored.get_config() == config
    assert restored.from_logits is True
