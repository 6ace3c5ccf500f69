"""Image preprocessing for NFNets: DeepMind's evaluation transform and normalisation.

Pipeline used for the accuracy DeepMind reports (``eval_preproc='resize_crop_32'``
in ``nfnets/dataset.py``)::

    pixels = load_image(path)                     # uint8 HWC RGB, 0..255
    x = eval_transform(pixels, image_size=256)    # squash-resize to 288x288, crop 256
    x = preprocess_input(x)                       # (x - MEAN_RGB) / STDDEV_RGB
    logits = model(x[None])

or, for a list of files, ``prepare_images(paths, image_size)``.

Backends: :func:`preprocess_input` and :func:`eval_transform` use ``keras.ops``
only. They accept numpy arrays or tensors of the active backend (TensorFlow or
JAX, chosen by ``KERAS_BACKEND``), return a tensor of that backend, and
:func:`preprocess_input` also works on symbolic ``keras.Input`` tensors. No part
of this module is TensorFlow-only. :func:`load_image` and
:func:`prepare_images` are host-side helpers built on PIL and numpy.

Numerics across backends: ``keras.ops.image.resize`` calls ``tf.image.resize``
on TensorFlow and ``jax.image.resize`` on JAX. Both use the Keys cubic kernel
(a = -0.5) with half-pixel centres and drop and renormalise out-of-range taps,
but TensorFlow looks the kernel up in a table with a 1/1024-pixel step (it
rounds each sampling phase), while JAX evaluates it exactly. On the JAX backend
:func:`eval_transform` therefore reproduces DeepMind's TensorFlow pipeline only
approximately: for 256 -> 288 (F0) the difference is at most about 0.04 on a
natural photo and 0.2 on uniform noise, on the 0..255 scale (below 1e-3, resp.
4e-3, after :func:`preprocess_input`), anywhere in the image, not just at the
borders. Where every sampling phase is a multiple of 1/1024 pixel (e.g.
37 -> 256) the backends agree to float32 round-off (about 1e-4).

Only the channels_last (NHWC / HWC) layout is supported.
"""

import io
import os

import keras
import numpy as np
from keras import ops

__all__ = [
    "MEAN_RGB",
    "STDDEV_RGB",
    "preprocess_input",
    "eval_transform",
    "load_image",
    "prepare_images",
]

#: Per-channel ImageNet mean of RGB pixels on the 0..255 scale.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
#: Per-channel ImageNet standard deviation of RGB pixels on the 0..255 scale.
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def _check_channels_last(data_format):
    data_format = data_format or keras.config.image_data_format()
    if data_format != "channels_last":
        raise ValueError(
            "NFNet preprocessing supports only data_format='channels_last' "
            f"(NHWC or HWC). Received: data_format={data_format!r}"
        )


def _check_image_shape(shape, what):
    if len(shape) not in (3, 4):
        raise ValueError(
            f"{what} expects a single image (H, W, 3) or a batch "
            f"(N, H, W, 3). Received shape: {tuple(shape)}"
        )
    if shape[-1] is not None and shape[-1] != 3:
        raise ValueError(
            f"{what} expects RGB images with 3 channels in the last axis "
            f"(channels_last). Received shape: {tuple(shape)}"
        )


def preprocess_input(x, data_format=None):
    """Normalise RGB pixels for an NFNet: ``(x - MEAN_RGB) / STDDEV_RGB``.

    Args:
        x: RGB image(s) on the 0..255 scale, channels last: ``(H, W, 3)`` or
            ``(N, H, W, 3)``. Any integer or float dtype; a numpy array, a
            backend tensor or a symbolic ``keras.Input``.
        data_format: ``None`` (use ``keras.config.image_data_format()``) or
            ``"channels_last"``. ``"channels_first"`` is not supported.

    Returns:
        A float32 tensor of the active backend with the shape of ``x``.

    Raises:
        ValueError: for ``channels_first``, a rank other than 3 or 4, or a last
            dimension other than 3.
    """
    _check_channels_last(data_format)
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    _check_image_shape(x.shape, "preprocess_input")
    x = ops.cast(x, "float32")
    mean = ops.convert_to_tensor(MEAN_RGB, dtype="float32")
    std = ops.convert_to_tensor(STDDEV_RGB, dtype="float32")
    return (x - mean) / std


def eval_transform(images, image_size, crop_padding=32):
    """DeepMind's NFNet evaluation transform ``resize_crop_32``.

    The whole image is squash-resized (aspect ratio *not* kept) to
    ``(image_size + crop_padding, image_size + crop_padding)`` with bicubic
    interpolation, no antialiasing, float output and no clamping (values may
    leave 0..255 slightly), then centre-cropped to ``image_size`` at offset
    ``(crop_padding + 1) // 2`` (16 for the default padding of 32). This is
    ``tf.image.resize(..., method="bicubic", antialias=False)`` followed by
    the crop, as in DeepMind's ``dataset.py``.

    The result is *not* normalised: apply :func:`preprocess_input` next.

    Args:
        images: ``(H, W, 3)`` or ``(N, H, W, 3)`` RGB, uint8 or float, on the
            0..255 scale. A numpy array or a backend tensor.
        image_size: output side ``S`` (the variant's ``test_imsize``, e.g. 256
            for F0), a positive int.
        crop_padding: pixels added to ``S`` before the centre crop, a
            non-negative int.

    Returns:
        A float32 tensor of the active backend, ``(S, S, 3)`` or
        ``(N, S, S, 3)``, on the 0..255 scale.

    Raises:
        ValueError: for a non-positive ``image_size``, a negative
            ``crop_padding``, or input that is not rank 3 or 4 with 3 channels.
    """
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, (int, np.integer))
        or image_size <= 0
    ):
        raise ValueError(
            f"image_size must be a positive int. Received: {image_size!r}"
        )
    if (
        isinstance(crop_padding, bool)
        or not isinstance(crop_padding, (int, np.integer))
        or crop_padding < 0
    ):
        raise ValueError(
            f"crop_padding must be a non-negative int. Received: {crop_padding!r}"
        )
    if not hasattr(images, "shape"):
        images = np.asarray(images)
    _check_image_shape(images.shape, "eval_transform")
    image_size = int(image_size)
    resized_size = image_size + int(crop_padding)
    offset = ((resized_size - image_size) + 1) // 2
    # Cast first: on JAX, resizing an integer image would round and clip back
    # to the integer dtype.
    images = ops.cast(images, "float32")
    images = ops.image.resize(
        images,
        (resized_size, resized_size),
        interpolation="bicubic",
        antialias=False,
        data_format="channels_last",
    )
    window = slice(offset, offset + image_size)
    if len(images.shape) == 3:
        return images[window, window, :]
    return images[:, window, window, :]


def _describe_source(source):
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    return repr(getattr(source, "name", source))


def load_image(path_or_bytes):
    """Read an image file into a uint8 RGB array, as DeepMind's colab does.

    The image is decoded with PIL and converted with ``convert("RGB")``
    (greyscale, palette and CMYK images become RGB; an alpha channel is
    dropped). EXIF orientation is not applied, as in the colab and in
    ``keras.utils.load_img``.

    Args:
        path_or_bytes: a file path (``str`` or ``os.PathLike``), the encoded
            file contents (``bytes``, ``bytearray``, ``memoryview``) or a
            binary file object.

    Returns:
        ``np.ndarray`` of dtype uint8 and shape ``(H, W, 3)``.

    Raises:
        ValueError: if the data cannot be decoded as an image; the message
            names the source.
        OSError: if a path cannot be read (e.g. ``FileNotFoundError``).
    """
    from PIL import Image, UnidentifiedImageError

    source = path_or_bytes
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:  # I/O errors propagate unchanged
            data = handle.read()
    elif hasattr(source, "read"):
        data = source.read()
    else:
        raise TypeError(
            "load_image expects a path, bytes or a binary file object. "
            f"Received: {type(source).__name__}"
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"Cannot decode {_describe_source(source)} as an image: {err}"
        ) from err
    return array


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


def prepare_images(paths_or_arrays, image_size, crop_padding=32):
    """Load, transform and normalise images into one batch for inference.

    Runs :func:`load_image` (for paths and bytes), :func:`eval_transform` and
    :func:`preprocess_input` on each image and stacks the results. Images may
    have different sizes: each one is squash-resized on its own.

    Args:
        paths_or_arrays: a single image or a sequence of images; an image is a
            path, encoded bytes, a binary file object, a ``PIL.Image.Image`` or
            an ``(H, W, 3)`` RGB array (uint8 or float, 0..255). An
            ``(N, H, W, 3)`` array is taken as a batch of N images.
        image_size: output side ``S`` (the variant's ``test_imsize``).
        crop_padding: passed to :func:`eval_transform`.

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
    batch = []
    for item in items:
        pixels = _to_pixels(item)
        x = preprocess_input(eval_transform(pixels, image_size, crop_padding))
        x = ops.convert_to_numpy(x)
        batch.append(x if x.ndim == 4 else x[None])
    if not batch:
        raise ValueError("prepare_images received no images.")
    return np.concatenate(batch, axis=0).astype(np.float32, copy=False)
