"""The evaluation transform: resize (squash or shorter side) and centre crop, defined once.

Pipeline used for the accuracy DeepMind reports (``eval_preproc='resize_crop_32'``
in ``nfnets/dataset.py``)::

    pixels = load_image(path)                     # uint8 HWC RGB, 0..255
    x = eval_transform(pixels, model)             # F0: squash-resize to 288x288, crop 256
    x = preprocess_input(x)                       # (x - MEAN_RGB) / STDDEV_RGB
    logits = model(x[None])

or, for a list of files, ``prepare_images(paths, model)``. The sizes come from
the model's own :class:`~nfnet_keras.preprocessing.settings.EvalPreprocessing`.

One geometry, two executors: :func:`eval_transform` runs on ``keras.ops`` (any
backend, eager or traced), :func:`eval_transform_tf` on ``tf.image`` (inside
``tf.data`` under any Keras backend, and in the exported SavedModel graph).
Both call the same ``_resize_and_crop`` with their backend's resize; on the
TensorFlow backend the two are the same ops.

Backends: :func:`preprocess_input` and :func:`eval_transform` use ``keras.ops``
only. They accept numpy arrays or tensors of the active backend (TensorFlow or
JAX, chosen by ``KERAS_BACKEND``), return a tensor of that backend, and
:func:`preprocess_input` also works on symbolic ``keras.Input`` tensors. Only
:func:`eval_transform_tf` needs TensorFlow, which it imports when called. 
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

import numpy as np
from keras import ops

from nfnet_keras.preprocessing.normalization import check_image_shape
from nfnet_keras.preprocessing.settings import resolve_preprocessing

__all__ = ["eval_transform", "eval_transform_tf"]


def _resize_and_crop(images, preprocessing, resize, height_width, minimum):
    """Resize float32 `images` (HWC or NHWC) as `preprocessing.resize` says, then centre-crop `S`.

    `height_width` is the input's `(H, W)` and `minimum` the min of two of
    them: Python ints on the `keras.ops` path, `tf` tensors on the `tf.image`
    path (dynamic image sizes in `tf.data` and SavedModels).
    """
    size, resized = preprocessing.image_size, preprocessing.resized_size
    if preprocessing.resize == "squash":
        new_height = new_width = resized
        top = left = preprocessing.crop_offset
    else:
        height, width = height_width
        shorter = minimum(height, width)
        # torchvision's Resize(int): the shorter side to `resized`, the longer to floor(resized * long / short).
        new_height, new_width = resized * height // shorter, resized * width // shorter
        top, left = _centre_offset(new_height - size), _centre_offset(new_width - size)
    images = resize(images, (new_height, new_width), preprocessing.interpolation)
    return images[..., top : top + size, left : left + size, :]


def _centre_offset(excess):
    """torchvision's CenterCrop offset `int(round(excess / 2))`: halves round to even."""
    half = excess // 2
    return half + (excess % 2) * (half % 2)


def _keras_resize(images, size, interpolation):
    return ops.image.resize(images, size, interpolation=interpolation, antialias=False, data_format="channels_last")


def _tf_resize(images, size, interpolation):
    import tensorflow as tf  # noqa: PLC0415  (TF-only path; the module imports without TF)

    return tf.image.resize(images, size, method=interpolation, antialias=False)


def eval_transform(images, preprocessing, crop_padding=None):
    """A model's evaluation transform with `keras.ops`: DeepMind's `resize_crop_32` or timm's.

    With DeepMind's settings (`resize="squash"`) the whole image is
    squash-resized (aspect ratio *not* kept) to `S + crop_padding` on both
    sides with bicubic interpolation, no antialiasing, float output and no
    clamping (values may leave 0..255 slightly), then centre-cropped to `S`
    at offset `(crop_padding + 1) // 2`. timm's models (`resize="shorter_side"`)
    resize the shorter side instead and keep the aspect ratio (see
    `EvalPreprocessing`). The result is *not* normalised: apply
    `preprocess_input` next.

    Args:
        images: `(H, W, 3)` or `(N, H, W, 3)` RGB, uint8 or float, on the
            0..255 scale. A numpy array or a backend tensor.
        preprocessing: the model (its `model.preprocessing`), an
            `EvalPreprocessing`, or an `int` output side `S` (DeepMind's
            padding of 32 then applies).
        crop_padding: overrides the padding when not None.

    Returns:
        A float32 tensor of the active backend, `(S, S, 3)` or `(N, S, S, 3)`,
        on the 0..255 scale.

    Raises:
        ValueError: for a bad size or padding, or input that is not rank 3 or
            4 with 3 channels.
    """
    preprocessing = resolve_preprocessing(preprocessing, crop_padding)
    if not hasattr(images, "shape"):
        images = np.asarray(images)
    check_image_shape(images.shape, "eval_transform")
    height_width = tuple(images.shape[-3:-1])
    if preprocessing.resize == "shorter_side" and None in height_width:
        raise ValueError("eval_transform: a shorter-side resize needs the image height and width to be known")
    # Cast first: on JAX, resizing an integer image would round and clip back to the integer dtype.
    return _resize_and_crop(ops.cast(images, "float32"), preprocessing, _keras_resize, height_width, min)


def eval_transform_tf(images, preprocessing):
    """`eval_transform` with `tf.image` ops, for `tf.data` and SavedModel graphs.

    The same computation as :func:`eval_transform` on the TensorFlow backend,
    usable inside `tf.data` whatever the Keras backend. HWC or NHWC input.

    Args:
        images: a uint8 or float `tf.Tensor` on the 0..255 scale.
        preprocessing: as for :func:`eval_transform`.
    """
    import tensorflow as tf  # noqa: PLC0415

    preprocessing = resolve_preprocessing(preprocessing)
    images = tf.convert_to_tensor(images)
    height_width = tf.unstack(tf.shape(images)[-3:-1])
    result = _resize_and_crop(tf.cast(images, tf.float32), preprocessing, _tf_resize, height_width, tf.minimum)
    # Crop offsets computed from a dynamic shape leave the static one unknown: S is known.
    size = preprocessing.image_size
    return tf.ensure_shape(result, images.shape[:-3].concatenate([size, size, images.shape[-1]]))
