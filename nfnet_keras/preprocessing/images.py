"""`prepare_images`: files, bytes or arrays to one normalised batch for `model.predict`."""

import os

import numpy as np
from keras import ops

from nfnet_keras.preprocessing.decoding import load_image
from nfnet_keras.preprocessing.normalization import preprocess_input
from nfnet_keras.preprocessing.settings import resolve_preprocessing
from nfnet_keras.preprocessing.transform import eval_transform

__all__ = ["prepare_images"]


def _is_single_source(obj):
    """True for one encoded image: a path, bytes, a file object or a PIL image."""
    if isinstance(obj, (str, os.PathLike, bytes, bytearray, memoryview)):
        return True
    if hasattr(obj, "read"):
        return True
    from PIL import Image

    return isinstance(obj, Image.Image)


def _to_pixels(item):
    """Return one image as an ``(H, W, 3)`` array (PIL images and files decoded)."""
    from PIL import Image

    if isinstance(item, Image.Image):
        return np.asarray(item.convert("RGB"), dtype=np.uint8)
    if _is_single_source(item):
        return load_image(item)
    if isinstance(item, np.ndarray):
        return item
    if hasattr(item, "shape"):
        return ops.convert_to_numpy(item)
    return np.asarray(item)


def prepare_images(paths_or_arrays, preprocessing, crop_padding=None):
    """Load, transform and normalise images into one batch for inference.

    Runs :func:`load_image` (for paths and bytes), :func:`eval_transform` and
    :func:`preprocess_input` on each image and stacks the results. Images may
    have different sizes: each one is squash-resized on its own.

    Args:
        paths_or_arrays: a single image or a sequence of images; an image is a
            path, encoded bytes, a binary file object, a ``PIL.Image.Image`` or
            an ``(H, W, 3)`` RGB array (uint8 or float, 0..255). An
            ``(N, H, W, 3)`` array is taken as a batch of N images.
        preprocessing: the model the images are for (its
            ``model.preprocessing``), an ``EvalPreprocessing``, or an ``int``
            output side ``S`` (DeepMind's padding of 32 then applies).
        crop_padding: overrides the padding when not None.

    Returns:
        ``np.ndarray`` float32 of shape ``(N, S, S, 3)``, ready for
        ``model.predict``.

    Raises:
        ValueError: for an empty input, undecodable data or bad image shapes.
    """
    items = paths_or_arrays
    if _is_single_source(items):
        items = [items]
    elif hasattr(items, "shape"):
        if len(items.shape) == 3:
            items = [items]
        elif len(items.shape) != 4:
            raise ValueError(
                "prepare_images expects an image (H, W, 3) or a batch "
                f"(N, H, W, 3). Received shape: {tuple(items.shape)}"
            )
    preprocessing = resolve_preprocessing(preprocessing, crop_padding)
    batch = []
    for item in items:
        pixels = _to_pixels(item)
        x = preprocess_input(eval_transform(pixels, preprocessing), mean=preprocessing.mean, std=preprocessing.std)
        x = ops.convert_to_numpy(x)
        batch.append(x if x.ndim == 4 else x[None])
    if not batch:
        raise ValueError("prepare_images received no images.")
    return np.concatenate(batch, axis=0).astype(np.float32, copy=False)
