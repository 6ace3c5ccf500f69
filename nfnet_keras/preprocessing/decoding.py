"""Decoding image files to uint8 RGB pixels: PIL on the host, `tf.io` in graphs.

Both decoders give the same pixels for JPEG (TensorFlow's `INTEGER_ACCURATE`
DCT is what Pillow's libjpeg uses) and PNG: greyscale and palette images
become RGB, an alpha channel is dropped, EXIF orientation is not applied (as
in DeepMind's colab and `keras.utils.load_img`).

16-bit PNGs become 8 bits by keeping the high byte, ``v >> 8`` (=
``floor(v / 256)``), for every channel: that is what libpng's
``png_set_strip_16`` (hence `tf.io`) and Pillow's 16-bit RGB(A) reader do.
Pillow's ``convert("RGB")`` of a 16-bit greyscale image (mode ``I;16``) clips
at 255 instead, so :func:`load_image` converts that mode itself.
"""

import io
import os

import numpy as np

__all__ = ["load_image", "decode_image"]


def _describe_source(source):
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    return repr(getattr(source, "name", source))


def _is_16_bit_grey(image):
    # Pillow >= 10 opens 16-bit grey PNGs as "I;16"; older versions as "I".
    return image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG")


def _high_byte_grey(image):
    """A 16-bit greyscale PIL image as uint8 RGB, keeping each value's high byte (as libpng and `tf.io` do)."""
    grey = np.clip(np.asarray(image).astype(np.int64), 0, 65535) >> 8
    return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1)


def load_image(path_or_bytes):
    """Read an image file into a uint8 RGB array, as DeepMind's colab does.

    The image is decoded with PIL and converted with ``convert("RGB")``
    (greyscale, palette and CMYK images become RGB; an alpha channel is
    dropped), except 16-bit greyscale, which keeps each value's high byte
    like `decode_image` (see the module docstring). EXIF orientation is not
    applied, as in the colab and in ``keras.utils.load_img``.

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
            array = _high_byte_grey(image) if _is_16_bit_grey(image) else np.asarray(image.convert("RGB"), np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"Cannot decode {_describe_source(source)} as an image: {err}"
        ) from err
    return array


def decode_image(contents):
    """Decode an encoded image (JPEG, PNG, BMP, GIF) to a uint8 `(H, W, 3)` `tf.Tensor`.

    JPEGs go through `tf.io.decode_jpeg(..., dct_method="INTEGER_ACCURATE")`
    (pixel-identical to Pillow); other formats through
    `tf.io.decode_image(..., channels=3, expand_animations=False)`. Usable
    inside `tf.data` and SavedModel graphs. Needs TensorFlow.
    """
    import tensorflow as tf  # noqa: PLC0415  (graph-side decoder; the module imports without TF)

    contents = tf.convert_to_tensor(contents, tf.string)
    image = tf.cond(
        tf.io.is_jpeg(contents),
        lambda: tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image
