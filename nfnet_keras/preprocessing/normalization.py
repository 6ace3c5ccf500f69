"""Input normalisation: ImageNet mean and standard deviation on the 0..255 scale."""

import keras
import numpy as np
from keras import ops

__all__ = ["MEAN_RGB", "STDDEV_RGB", "normalize", "preprocess_input", "check_image_shape"]

#: Per-channel ImageNet mean of RGB pixels on the 0..255 scale.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
#: Per-channel ImageNet standard deviation of RGB pixels on the 0..255 scale.
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def normalize(x, mean=MEAN_RGB, std=STDDEV_RGB):
    """`(x - mean) / std` on float32 pixels, with plain arithmetic.

    The one definition of the normalisation. It uses only `-` and `/` with
    numpy constants, so it works unchanged on Keras tensors of any backend, on
    `tf.Tensor`s inside `tf.data` or a SavedModel graph, and on numpy arrays.

    Args:
        x: float32 RGB pixels on the 0..255 scale, channels last.
        mean: per-channel mean (three values).
        std: per-channel standard deviation (three values).
    """
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def check_image_shape(shape, what):
    """Raises `ValueError` unless `shape` is `(H, W, 3)` or `(N, H, W, 3)`."""
    if len(shape) not in (3, 4):
        raise ValueError(
            f"{what} expects a single image (H, W, 3) or a batch (N, H, W, 3). Received shape: {tuple(shape)}"
        )
    if shape[-1] is not None and shape[-1] != 3:
        raise ValueError(
            f"{what} expects RGB images with 3 channels in the last axis (channels_last). "
            f"Received shape: {tuple(shape)}"
        )


def preprocess_input(x, data_format=None, mean=MEAN_RGB, std=STDDEV_RGB):
    """Normalise RGB pixels for an NFNet: `(x - mean) / std`, ImageNet statistics by default.

    Args:
        x: RGB image(s) on the 0..255 scale, channels last: `(H, W, 3)` or
            `(N, H, W, 3)`. Any integer or float dtype; a numpy array, a
            backend tensor or a symbolic `keras.Input`.
        data_format: `None` (use `keras.config.image_data_format()`) or
            `"channels_last"`. `"channels_first"` is not supported.
        mean: per-channel mean; a model's own values are in
            `model.preprocessing.mean`.
        std: per-channel standard deviation (`model.preprocessing.std`).

    Returns:
        A float32 tensor of the active backend with the shape of `x`.

    Raises:
        ValueError: for `channels_first`, a rank other than 3 or 4, or a last
            dimension other than 3.
    """
    data_format = data_format or keras.config.image_data_format()
    if data_format != "channels_last":
        raise ValueError(
            "NFNet preprocessing supports only data_format='channels_last' (NHWC or HWC). "
            f"Received: data_format={data_format!r}"
        )
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    check_image_shape(x.shape, "preprocess_input")
    return normalize(ops.cast(x, "float32"), mean, std)
