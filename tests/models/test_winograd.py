"""`winograd_conv3x3`: Winograd's F(2x2, 3x3) against the backend's direct convolution."""

import keras
import numpy as np
import pytest
from keras import ops

from nfnet_keras.models.layers.winograd import winograd_conv3x3

# (batch, height, width, in channels, out channels, groups, padding)
SHAPES = [
    (2, 8, 8, 4, 6, 1, "same"),
    (1, 7, 9, 6, 4, 2, "same"),  # odd sizes: the last tiles are cut
    (3, 7, 6, 8, 8, 4, "valid"),
    (1, 3, 3, 2, 5, 1, "valid"),  # a single output pixel
]


def _inputs(shape, seed=0):
    batch, height, width, channels, filters, groups, _ = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, height, width, channels)).astype("float32")
    kernel = rng.standard_normal((3, 3, channels // groups, filters)).astype("float32")
    return x, kernel


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])) + s[6])
def test_winograd_conv3x3_equals_the_direct_convolution(shape):
    x, kernel = _inputs(shape)
    groups, padding = shape[5], shape[6]
    expected = ops.convert_to_numpy(ops.conv(x, kernel, padding=padding))
    result = ops.convert_to_numpy(winograd_conv3x3(ops.convert_to_tensor(x), ops.convert_to_tensor(kernel), groups, padding))
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, atol=2e-6 * np.abs(expected).max())


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="gradients taken with tf.GradientTape")
def test_winograd_conv3x3_gradients_equal_the_direct_convolutions():
    import tensorflow as tf  # noqa: PLC0415

    x, kernel = (tf.constant(a) for a in _inputs(SHAPES[1], seed=1))
    upstream = tf.constant(np.random.default_rng(2).standard_normal((1, 7, 9, 4)).astype("float32"))

    def gradients(conv):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            loss = tf.reduce_sum(conv(x, kernel) * upstream)
        return [g.numpy() for g in tape.gradient(loss, [x, kernel])]

    def per_group_conv(x, k):  # TensorFlow has no CPU gradient for the grouped op
        return tf.concat([tf.nn.conv2d(a, b, 1, "SAME") for a, b in zip(tf.split(x, 2, -1), tf.split(k, 2, -1))], -1)

    direct = gradients(per_group_conv)
    winograd = gradients(lambda x, k: winograd_conv3x3(x, k, groups=2))
    for got, want in zip(winograd, direct):
        np.testing.assert_allclose(got, want, atol=2e-6 * np.abs(want).max())


def test_winograd_conv3x3_refuses_other_kernel_sizes():
    x = ops.zeros((1, 8, 8, 2))
    with pytest.raises(ValueError, match="3x3 kernel"):
        winograd_conv3x3(x, ops.zeros((5, 5, 2, 2)))
