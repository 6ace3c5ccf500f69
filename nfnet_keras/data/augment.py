"""NFNet training augmentation in TensorFlow ops, as in DeepMind's ``dataset.py``.

DeepMind trains NFNets with ``augment_name='cutmix_mixup_randaugment_NNN'``
(``nfnets/dataset.py`` and ``nfnets/autoaugment.py``). Per image, in order:

1. :func:`train_transform`: the Inception-style random crop
   (``sample_distorted_bounding_box`` with area ``[0.08, 1]``, aspect
   ``[3/4, 4/3]``, ``min_object_covered=0.1``, 10 attempts, and DeepMind's
   centre-crop fallback), a random horizontal flip, and a bicubic resize to the
   training size (float, unclamped, not normalised).
2. :func:`mixup_cutmix`: the batch is formed at twice its size; the first half
   of the output is MixUp of quarters 1 and 2 with a per-example ratio
   ``r ~ Beta(0.2, 0.2)`` (:func:`sample_mixup_ratio`), the second half CutMix
   of quarters 3 and 4 with a box of side ``sqrt(1 - U) * size`` around a
   uniform centre, clipped to the image (:func:`sample_cutmix_box`), whose label
   ratio is the exact fraction of pixels taken from the first image. Labels are
   ``r * onehot1 + (1 - r) * onehot2``.
3. :func:`randaugment` per mixed image: clip to ``[0, 255]``, cast to uint8,
   ``N`` layers each applying one of 16 ops chosen uniformly at magnitude ``M``,
   cast back. The pipeline then normalises with
   :func:`nfnet_keras.preprocessing.normalize`.

Evaluation needs no augmentation: the pipeline runs the one evaluation
transform, :func:`nfnet_keras.preprocessing.eval_transform_tf`.

Randomness is stateless: every random function takes a ``seed``, a shape
``[2]`` integer tensor (or a Python int), and uses ``tf.random.stateless_*`` /
``tf.image.stateless_*`` ops. The input pipeline derives one seed per example
from the run seed and the example's position, so results do not depend on the
parallelism of ``tf.data``.

Which parts come from Keras core and which are ours
----------------------------------------------------
Everything here is written with ``tf.image`` / ``tf.random`` ops, because no
Keras 3.15 augmentation layer does what DeepMind's pipeline does *and* stays
reproducible under a parallel ``tf.data`` map:

* Inception crop: Keras has no ``RandomResizedCrop``; ours is built on
  ``tf.image.stateless_sample_distorted_bounding_box``, as DeepMind's is.
* MixUp / CutMix: ``keras.layers.MixUp`` and ``keras.layers.CutMix`` mix each
  image with a random permutation of the *same* batch (an image can be paired
  with itself), apply one method to the whole batch and, for CutMix, draw the
  box from ``Beta(alpha, alpha)`` with a batch-level recipe. DeepMind pairs
  disjoint quarters of a double-size batch, MixUp on one half and CutMix on the
  other. Ours: :func:`mixup_cutmix`.
* RandAugment: ``keras.layers.RandAugment`` cannot reproduce DeepMind's policy.
  It has 11 ops (no Invert, Cutout or SolarizeAdd), maps magnitudes through a
  normalised ``factor`` in ``[0, 1]`` instead of DeepMind's per-op rules
  (``M/10 * 30`` degrees, ``M/10 * 100`` pixels, enhance factor
  ``M/10 * 1.8 + 0.1``, ...), draws one op sequence per call (the same for a
  whole batch), and computes all ops every step. Ours: :func:`randaugment`, a
  port of the 16 TF ops in DeepMind's ``autoaugment.py`` (TPU-EfficientNet
  lineage) with ``tfa.image`` transforms replaced by
  ``tf.raw_ops.ImageProjectiveTransformV3`` (nearest, constant fill 128, which
  is what DeepMind's wrap/unwrap around ``tfa.image.transform`` computes).
* Flip: ``keras.layers.RandomFlip("horizontal")`` does the same flip as
  ``tf.image.random_flip_left_right``, but it draws from a stateful
  ``SeedGenerator``; inside a parallel ``tf.data`` map that gives different
  flips from run to run even with ``seed=`` set (checked with Keras 3.15.1).
  We use ``tf.image.stateless_random_flip_left_right``.

DeepMind quirks (``dm_quirks=True``, the default, reproduces them)
-----------------------------------------------------------------
DeepMind's ops run on uint8 tensors, which gives two behaviours that differ
from the PIL operations they are named after:

* ``Solarize`` compares uint8 pixels with ``int(M/10 * 256)`` converted to
  uint8, i.e. modulo 256: at ``M = 10`` the threshold is 0 and every pixel is
  inverted; at ``M = 15`` it is 128, as at ``M = 5``.
* ``Contrast`` blends towards the grey level ``num_pixels / 256`` (the sum of
  the histogram divided by 256) instead of the mean grey value.

With ``dm_quirks=False`` Solarize uses the threshold without wrapping (256 or
more leaves the image unchanged) and Contrast uses the rounded mean grey value,
as ``PIL.ImageEnhance.Contrast`` does. Other details kept from DeepMind:
Posterize keeps ``int(M/10 * 4)`` bits (so a larger ``M`` posterizes *less*;
more than 8 bits is treated as 8); at ``M = 5`` the enhance factor is exactly
1.0, so Color, Contrast, Brightness and Sharpness leave the image unchanged;
translation (100 px at ``M = 10``) and Cutout (half-side 40 px at ``M = 10``)
are absolute pixel counts chosen for 224 px ImageNet images. Pass
``translate_const`` / ``cutout_const`` to scale them for small images.
"""

import functools
import math
import numbers

import numpy as np
import tensorflow as tf

from nfnet_keras.checks import check_integer
from nfnet_keras.preprocessing.settings import DEFAULT_CROP_PADDING

__all__ = [
    "RANDAUGMENT_OPS",
    "GEOMETRIC_OPS",
    "MAX_LEVEL",
    "REPLACE_VALUE",
    "TRANSLATE_CONST",
    "CUTOUT_CONST",
    "RANDAUGMENT_REFERENCE_SIZE",
    "scaled_randaugment_constants",
    "as_seed",
    "height_width",
    "center_crop_window",
    "inception_crop_window",
    "inception_crop",
    "train_transform",
    "sample_mixup_ratio",
    "sample_cutmix_box",
    "cutmix_mask",
    "mixup_cutmix",
    "clip_to_uint8",
    "randaugment_op_arg",
    "apply_randaugment_op",
    "sample_randaugment_layers",
    "randaugment",
    "autocontrast",
    "equalize",
    "invert",
    "rotate",
    "posterize",
    "solarize",
    "solarize_add",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "cutout",
]

#: DeepMind's RandAugment op list, in its order (the op index is uniform over it).
RANDAUGMENT_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Cutout",
    "SolarizeAdd",
)
#: Ops whose magnitude gets a random sign.
GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
#: Magnitudes are divided by this (``_MAX_LEVEL`` in ``autoaugment.py``).
MAX_LEVEL = 10.0
#: Fill value for pixels uncovered by geometric ops and for Cutout.
REPLACE_VALUE = 128
#: Pixels of translation at magnitude 10 (DeepMind's RandAugment hparams).
TRANSLATE_CONST = 100
#: Cutout half-side in pixels at magnitude 10 (DeepMind's RandAugment hparams).
CUTOUT_CONST = 40
#: The image side DeepMind's pixel constants are sized for.
RANDAUGMENT_REFERENCE_SIZE = 224


def scaled_randaugment_constants(image_size):
    """`(translate_const, cutout_const)` for `image_size`, DeepMind's values scaled from 224 px.

    At 224 px and above these are DeepMind's 100 and 40 pixels; smaller images
    get proportionally smaller shifts and cutouts (32 px: 14 and 6), so that a
    magnitude means the same fraction of the image.
    """
    scale = image_size / RANDAUGMENT_REFERENCE_SIZE
    return min(TRANSLATE_CONST, round(TRANSLATE_CONST * scale)), min(CUTOUT_CONST, round(CUTOUT_CONST * scale))


# ---------------------------------------------------------------------------
# Seeds and sizes
# ---------------------------------------------------------------------------


def as_seed(seed):
    """Return ``seed`` as a shape ``[2]`` int64 tensor for stateless ops.

    Args:
        seed: a Python int, a scalar integer tensor (taken as ``[seed, 0]``) or a
            shape ``[2]`` integer tensor.
    """
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"seed must be an int or an integer tensor. Received: {seed!r}")
    if isinstance(seed, (int, np.integer)):
        return tf.constant([int(seed), 0], dtype=tf.int64)
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer:
        raise TypeError(f"seed must have an integer dtype. Received: {seed.dtype}")
    seed = tf.cast(seed, tf.int64)
    if seed.shape.rank == 0:
        return tf.stack([seed, tf.constant(0, tf.int64)])
    if seed.shape.rank != 1 or (seed.shape[0] is not None and seed.shape[0] != 2):
        raise ValueError(f"seed must be a scalar or have shape [2]. Received shape {seed.shape}")
    return seed


def _split(seed, num):
    return tf.random.experimental.stateless_split(as_seed(seed), num)


def height_width(image_size):
    """`image_size` as a `(height, width)` pair of positive ints; an int `S` means `(S, S)`.

    Raises:
        ValueError: for anything else (a bool, a float, a pair with a zero side, ...).
    """
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    try:
        height, width = image_size
    except (TypeError, ValueError):
        raise ValueError(
            f"image_size must be a positive integer or a (height, width) pair, got {image_size!r}"
        ) from None
    return check_integer(height, "image_size height"), check_integer(width, "image_size width")


# ---------------------------------------------------------------------------
# Inception crop, flip, resize
# ---------------------------------------------------------------------------


def center_crop_window(height, width, image_size, padding=DEFAULT_CROP_PADDING):
    """DeepMind's ``_decode_and_center_crop`` window: ``[offset_y, offset_x, h, w]``.

    The fallback of the training crop (:func:`inception_crop_window`): a
    centre crop with the aspect ratio of ``image_size`` that leaves at least
    ``padding`` pixels (in output scale) on the short side:
    ``scale = min(height / (S_h + padding), width / (S_w + padding))`` and the
    crop is ``int(scale * S_h) x int(scale * S_w)``.
    """
    size_h, size_w = height_width(image_size)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    scale = tf.minimum(
        tf.cast(height, tf.float32) / (size_h + padding),
        tf.cast(width, tf.float32) / (size_w + padding),
    )
    crop_h = tf.maximum(tf.cast(scale * size_h, tf.int32), 1)
    crop_w = tf.maximum(tf.cast(scale * size_w, tf.int32), 1)
    offset_h = ((height - crop_h) + 1) // 2
    offset_w = ((width - crop_w) + 1) // 2
    return tf.stack([offset_h, offset_w, crop_h, crop_w])


def inception_crop_window(
    image_shape,
    image_size,
    seed,
    area_range=(0.08, 1.0),
    aspect_ratio_range=(3 / 4, 4 / 3),
    min_object_covered=0.1,
    max_attempts=10,
):
    """Sample the Inception-style crop window ``[offset_y, offset_x, h, w]`` (int32).

    ``tf.image.stateless_sample_distorted_bounding_box`` over the whole image
    with DeepMind's parameters. If it returns the whole image (all attempts
    failed, or the full frame was drawn) the window falls back to
    :func:`center_crop_window`, exactly as DeepMind's ``_decode_and_random_crop``.

    Args:
        image_shape: ``[height, width, channels]`` (e.g. ``tf.shape(image)``).
        image_size: the training size (int or ``(h, w)``); only used by the
            fallback.
        seed: stateless seed (see :func:`as_seed`).
    """
    image_shape = tf.cast(image_shape, tf.int32)
    height, width = image_shape[0], image_shape[1]
    bbox = tf.constant([0.0, 0.0, 1.0, 1.0], dtype=tf.float32, shape=[1, 1, 4])
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.stack([height, width, 3]),
        bounding_boxes=bbox,
        seed=as_seed(seed),
        min_object_covered=min_object_covered,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    whole = tf.logical_and(tf.equal(size[0], height), tf.equal(size[1], width))
    return tf.where(whole, center_crop_window(height, width, image_size), window)


def inception_crop(image, image_size, seed, **window_kwargs):
    """Crop ``image`` (HWC) to a window from :func:`inception_crop_window`."""
    image = tf.convert_to_tensor(image)
    window = inception_crop_window(tf.shape(image), image_size, seed, **window_kwargs)
    return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])


def train_transform(image, image_size, seed, random_crop=True, random_flip=True, crop_area_range=(0.08, 1.0)):
    """Inception crop, horizontal flip and bicubic resize of one HWC image.

    Returns float32 ``(S_h, S_w, 3)`` on the 0..255 scale, unclamped (bicubic
    overshoots), not normalised: DeepMind's training ``_preprocess_image``.
    With ``random_crop=False`` the whole image is squash-resized.
    ``crop_area_range`` is the Inception crop's area range (DeepMind: 0.08-1).
    """
    size = height_width(image_size)
    crop_seed, flip_seed = tf.unstack(_split(seed, 2))
    image = tf.convert_to_tensor(image)
    if random_crop:
        image = inception_crop(image, size, crop_seed, area_range=tuple(crop_area_range))
    if random_flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    image = tf.image.resize(image, size, method="bicubic", antialias=False)
    return tf.cast(image, tf.float32)


# ---------------------------------------------------------------------------
# MixUp + CutMix
# ---------------------------------------------------------------------------


def sample_mixup_ratio(seed, alpha=0.2):
    """Draw a MixUp ratio ``r ~ Beta(alpha, alpha)`` (float32 scalar).

    Sampled as ``X / (X + Y)`` with ``X, Y ~ Gamma(alpha)`` in float64 (for
    ``alpha = 0.2`` float32 gammas underflow to 0 now and then); if both
    underflow the ratio is 0.5.
    """
    if not alpha > 0:
        raise ValueError(f"mixup alpha must be positive. Received: {alpha!r}")
    seed_x, seed_y = tf.unstack(_split(seed, 2))
    a = tf.constant(alpha, tf.float64)
    x = tf.random.stateless_gamma([], seed=seed_x, alpha=a, dtype=tf.float64)
    y = tf.random.stateless_gamma([], seed=seed_y, alpha=a, dtype=tf.float64)
    total = x + y
    ratio = tf.where(total > 0, x / tf.where(total > 0, total, 1.0), 0.5)
    return tf.cast(ratio, tf.float32)


def sample_cutmix_box(height, width, seed):
    """DeepMind's ``cutmix_padding`` box ``[y1, y2, x1, x2]`` (int32, end-exclusive).

    Centre uniform over the pixels, side ``int(sqrt(1 - U) * size)`` with
    ``U ~ U[0, 1)`` (the paper's ``Beta(1, 1)``), corners clipped to the image.
    """
    seed_x, seed_y, seed_u = tf.unstack(_split(seed, 3))
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    r_x = tf.random.stateless_uniform([], seed_x, minval=0, maxval=width, dtype=tf.int32)
    r_y = tf.random.stateless_uniform([], seed_y, minval=0, maxval=height, dtype=tf.int32)
    image1_proportion = tf.random.stateless_uniform([], seed_u, dtype=tf.float32)
    patch_length_ratio = tf.sqrt(1.0 - image1_proportion)
    r_w = tf.cast(patch_length_ratio * tf.cast(width, tf.float32), tf.int32)
    r_h = tf.cast(patch_length_ratio * tf.cast(height, tf.float32), tf.int32)
    x1 = tf.clip_by_value(r_x - r_w // 2, 0, width)
    y1 = tf.clip_by_value(r_y - r_h // 2, 0, height)
    x2 = tf.clip_by_value(r_x + r_w // 2, 0, width)
    y2 = tf.clip_by_value(r_y + r_h // 2, 0, height)
    return tf.stack([y1, y2, x1, x2])


def cutmix_mask(height, width, box):
    """Float32 ``(H, W, 1)`` mask, 1 inside ``box`` (or ``(N, H, W, 1)`` for ``(N, 4)`` boxes)."""
    box = tf.cast(box, tf.int32)
    y1, y2, x1, x2 = (box[..., i, None, None] for i in range(4))
    ys = tf.range(height, dtype=tf.int32)[:, None]
    xs = tf.range(width, dtype=tf.int32)[None, :]
    inside = (ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2)
    return tf.cast(inside, tf.float32)[..., None]


def mixup_cutmix(images, labels, mixup_ratios, cutmix_masks):
    """DeepMind's ``my_mixup_cutmix`` on a double-size batch, with soft labels.

    With ``n = len(images)`` (a multiple of 4) and ``q = n // 4``:

    * outputs ``[0, q)`` (first half): MixUp,
      ``r * images[:q] + (1 - r) * images[q:2q]`` with ``r = mixup_ratios[:q]``;
    * outputs ``[q, 2q)`` (second half): CutMix,
      ``m * images[2q:3q] + (1 - m) * images[3q:]`` with ``m = cutmix_masks[2q:3q]``
      and ratio ``r = mean(m)``, the exact fraction of pixels from the first image;
    * labels ``r * labels1 + (1 - r) * labels2``.

    Args:
        images: float ``(n, H, W, C)``.
        labels: one-hot (or soft) float ``(n, num_classes)``.
        mixup_ratios: float ``(n,)``; only the first quarter is used.
        cutmix_masks: float ``(n, H, W, 1)`` of 0/1; only the third quarter is used.

    Returns:
        ``(images, labels)`` with ``n // 2`` rows, float32.
    """
    images = tf.cast(images, tf.float32)
    labels = tf.cast(labels, tf.float32)
    n_static = images.shape[0]
    if n_static is not None and n_static % 4:
        raise ValueError(
            f"mixup_cutmix needs a batch that is a multiple of 4 (two halves of pairs). "
            f"Received {n_static} images."
        )
    q = tf.shape(images)[0] // 4
    mix_r = tf.cast(mixup_ratios[:q], tf.float32)
    mix_r_img = mix_r[:, None, None, None]
    mixup_images = mix_r_img * images[:q] + (1.0 - mix_r_img) * images[q : 2 * q]
    mixup_labels = mix_r[:, None] * labels[:q] + (1.0 - mix_r[:, None]) * labels[q : 2 * q]

    mask = tf.cast(cutmix_masks[2 * q : 3 * q], tf.float32)
    cut_r = tf.reduce_mean(mask, axis=[1, 2, 3])
    cutmix_images = mask * images[2 * q : 3 * q] + (1.0 - mask) * images[3 * q : 4 * q]
    cutmix_labels = cut_r[:, None] * labels[2 * q : 3 * q] + (1.0 - cut_r[:, None]) * labels[3 * q : 4 * q]
    return (
        tf.concat([mixup_images, cutmix_images], axis=0),
        tf.concat([mixup_labels, cutmix_labels], axis=0),
    )


def clip_to_uint8(images):
    """Float pixels clipped to ``[0, 255]`` and cast (truncated) to uint8, as RandAugment's input.

    DeepMind's ``_augment_image`` conversion; a uint8 tensor is returned as it is.
    Any shape: one image or a batch.
    """
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        return images
    return tf.cast(tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0), tf.uint8)


# ---------------------------------------------------------------------------
# RandAugment ops (uint8 HWC in, uint8 HWC out)
# ---------------------------------------------------------------------------


def _blend(image1, image2, factor):
    """DeepMind's ``blend``: ``image1 + factor * (image2 - image1)``, clipped, uint8."""
    factor = float(factor)
    if factor == 0.0:
        return tf.convert_to_tensor(image1)
    if factor == 1.0:
        return tf.convert_to_tensor(image2)
    image1 = tf.cast(image1, tf.float32)
    image2 = tf.cast(image2, tf.float32)
    blended = image1 + factor * (image2 - image1)
    return tf.cast(tf.clip_by_value(blended, 0.0, 255.0), tf.uint8)


def _lookup(image, table):
    """Map every uint8 value of an HWC image through a ``(3, 256)`` per-channel table (one gather)."""
    index = tf.cast(image, tf.int32) + tf.range(0, 768, 256, dtype=tf.int32)
    return tf.gather(tf.reshape(tf.cast(table, tf.uint8), [-1]), index)


def autocontrast(image):
    """Stretch each channel so its minimum becomes 0 and its maximum 255."""
    image = tf.convert_to_tensor(image)
    lo = tf.cast(tf.reduce_min(image, axis=[0, 1]), tf.float32)
    hi = tf.cast(tf.reduce_max(image, axis=[0, 1]), tf.float32)
    stretch = hi > lo
    scale = tf.where(stretch, 255.0 / tf.where(stretch, hi - lo, 1.0), 1.0)
    # A flat channel gets 1 * v + 0, which is v exactly: no per-pixel select needed.
    offset = tf.where(stretch, -lo * scale, 0.0)
    return tf.cast(tf.clip_by_value(tf.cast(image, tf.float32) * scale + offset, 0.0, 255.0), tf.uint8)


def equalize(image):
    """Histogram equalisation per channel (PIL ``ImageOps.equalize``)."""
    image = tf.convert_to_tensor(image)
    channels = tf.cast(image, tf.int32) + tf.constant([0, 256, 512], tf.int32)
    histo = tf.reshape(tf.math.bincount(tf.reshape(channels, [-1]), minlength=768, maxlength=768, dtype=tf.int32), [3, 256])
    # PIL's step leaves out the count of the largest value present in the channel.
    largest = tf.cast(tf.reduce_max(image, axis=[0, 1]), tf.int32)
    step = (tf.reduce_sum(histo, axis=1) - tf.gather(histo, largest, batch_dims=1)) // 255
    safe_step = tf.maximum(step, 1)[:, None]
    lut = (tf.cumsum(histo, axis=1) + safe_step // 2) // safe_step
    lut = tf.clip_by_value(tf.concat([tf.zeros([3, 1], tf.int32), lut[:, :-1]], 1), 0, 255)
    return _lookup(image, tf.where(step[:, None] > 0, lut, tf.range(256, dtype=tf.int32)[None, :]))


# The pointwise ops below are uint8 bit arithmetic: no int32 copies and no per-pixel select.


def invert(image):
    """``255 - image``."""
    return tf.bitwise.invert(tf.cast(image, tf.uint8))


def _projective(image, transform, replace):
    """Apply an 8-parameter transform (output -> input map), nearest, constant fill."""
    transform = tf.cast(tf.reshape(tf.stack(transform), [1, 8]), tf.float32)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform,
        output_shape=tf.shape(image)[:2],
        fill_value=tf.cast(replace, tf.float32),
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
    return out[0]


def rotate(image, degrees, replace=REPLACE_VALUE):
    """Rotate by ``degrees`` about the centre (positive: counterclockwise on screen)."""
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    cos_a, sin_a = tf.cos(radians), tf.sin(radians)
    x_offset = ((width - 1) - (cos_a * (width - 1) - sin_a * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin_a * (width - 1) + cos_a * (height - 1))) / 2.0
    zero = tf.zeros_like(cos_a)
    return _projective(image, [cos_a, -sin_a, x_offset, sin_a, cos_a, y_offset, zero, zero], replace)


def translate_x(image, pixels, replace=REPLACE_VALUE, max_pixels=None):
    """Move the content ``pixels`` to the left (``out[:, x] = in[:, x + pixels]``).

    ``max_pixels``: a Python int bounding ``|pixels|`` when ``pixels`` is a
    whole number; the same result then comes from a pad and a slice instead
    of a per-pixel projective transform.
    """
    if max_pixels is not None:
        return _shift(image, 1, pixels, max_pixels, replace)
    return _identity_but(image, 2, pixels, replace)


def translate_y(image, pixels, replace=REPLACE_VALUE, max_pixels=None):
    """Move the content ``pixels`` up (``out[y] = in[y + pixels]``); ``max_pixels`` as for `translate_x`."""
    if max_pixels is not None:
        return _shift(image, 0, pixels, max_pixels, replace)
    return _identity_but(image, 5, pixels, replace)


def _shift(image, axis, amount, limit, replace):
    """``out[i] = in[i + amount]`` along ``axis`` (0: rows, 1: columns), ``replace`` where that is outside.

    ``amount`` is an integer tensor with ``|amount| <= limit``: a pad and a
    slice give exactly what the nearest-neighbour projective transform gives
    for a whole-pixel translation, without computing a coordinate per pixel.
    """
    paddings = [[0, 0], [0, 0], [0, 0]]
    paddings[axis] = [limit, limit]
    padded = tf.pad(image, paddings, constant_values=tf.cast(replace, image.dtype))
    begin = [0, 0, 0]
    begin[axis] = limit + tf.cast(amount, tf.int32)
    return tf.slice(padded, tf.stack(begin), tf.shape(image))


def shear_x(image, level, replace=REPLACE_VALUE):
    """Shear along x: ``out[y, x] = in[y, x + level * y]``."""
    return _identity_but(image, 1, level, replace)


def shear_y(image, level, replace=REPLACE_VALUE):
    """Shear along y: ``out[y, x] = in[y + level * x, x]``."""
    return _identity_but(image, 3, level, replace)


def _identity_but(image, position, value, replace):
    """The projective transform that is the identity but for ``value`` at ``position`` of its 8 entries."""
    value = tf.cast(value, tf.float32)
    one, zero = tf.ones_like(value), tf.zeros_like(value)
    matrix = [one, zero, zero, zero, one, zero, zero, zero]
    matrix[position] = value
    return _projective(image, matrix, replace)


def posterize(image, bits):
    """Keep the ``bits`` most significant bits of each value (``bits`` clipped to 0..8)."""
    shift = 8 - min(max(int(bits), 0), 8)
    return tf.bitwise.bitwise_and(tf.cast(image, tf.uint8), tf.constant((0xFF << shift) & 0xFF, tf.uint8))


def _below(image, threshold):
    """1 where ``image < threshold`` else 0, uint8 (``threshold`` a Python int)."""
    if threshold <= 0:
        return tf.zeros_like(image)
    if threshold > 255:
        return tf.ones_like(image)
    return tf.cast(image < tf.constant(threshold, tf.uint8), tf.uint8)


def solarize(image, threshold=128):
    """Invert every value ``>= threshold``; values below it are kept."""
    image = tf.cast(image, tf.uint8)
    # 255 - v is v XOR 255: XOR with 255 where v >= threshold, with 0 below it.
    return tf.bitwise.bitwise_xor(image, (1 - _below(image, int(threshold))) * 255)


def solarize_add(image, addition=0, threshold=128):
    """Add ``addition`` (clipped to 0..255) to every value below ``threshold``."""
    image = tf.cast(image, tf.uint8)
    addition = int(addition)
    if addition >= 0:
        step = tf.constant(min(addition, 255), tf.uint8)
        added = tf.minimum(image, 255 - step) + step  # min(v + a, 255) without leaving uint8
    else:
        step = tf.constant(min(-addition, 255), tf.uint8)
        added = tf.maximum(image, step) - step  # max(v - a, 0)
    below = _below(image, int(threshold))
    return below * added + (1 - below) * image


def color(image, factor):
    """PIL ``Color``: blend from the greyscale image (0) to the image (1) and beyond."""
    degenerate = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    return _blend(degenerate, image, factor)


def contrast(image, factor, dm_quirks=True):
    """PIL ``Contrast``: blend from a uniform grey image (0) to the image (1) and beyond.

    The grey level is DeepMind's ``num_pixels / 256`` with ``dm_quirks=True``
    and the rounded mean grey value otherwise (see the module docstring).
    """
    grey = tf.image.rgb_to_grayscale(image)
    if dm_quirks:
        mean = tf.cast(tf.size(grey), tf.float32) / 256.0
    else:
        mean = tf.floor(tf.reduce_mean(tf.cast(grey, tf.float32)) + 0.5)
    degenerate = tf.cast(tf.clip_by_value(tf.ones_like(grey, tf.float32) * mean, 0.0, 255.0), tf.uint8)
    return _blend(tf.image.grayscale_to_rgb(degenerate), image, factor)


def brightness(image, factor):
    """PIL ``Brightness``: blend from black (0) to the image (1) and beyond."""
    return _blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
    """PIL ``Sharpness``: blend from PIL's SMOOTH-filtered image (0) to the image (1)."""
    pixels = tf.cast(image, tf.float32)[None]
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32, shape=[3, 3, 1, 1]) / 13.0
    kernel = tf.tile(kernel, [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(pixels, kernel, [1, 1, 1, 1], padding="VALID")
    smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)[0]
    mask = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]])
    padded = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(tf.equal(mask, 1), padded, image)
    return _blend(degenerate, image, factor)


def cutout(image, pad_size, seed, replace=REPLACE_VALUE):
    """Fill a ``2 * pad_size`` square around a uniform random centre with ``replace``.

    Rows ``[max(0, cy - pad), min(H, cy + pad))`` and the same for columns,
    as DeepMind's ``cutout``.
    """
    seed_y, seed_x = tf.unstack(_split(seed, 2))
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    cy = tf.random.stateless_uniform([], seed_y, minval=0, maxval=height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seed_x, minval=0, maxval=width, dtype=tf.int32)
    pad = int(pad_size)
    box = tf.stack(
        [
            tf.maximum(0, cy - pad),
            tf.minimum(height, cy + pad),
            tf.maximum(0, cx - pad),
            tf.minimum(width, cx + pad),
        ]
    )
    # The image with its box replaced, put together from slices: copies only, no per-pixel select.
    y1, y2, x1, x2 = tf.unstack(box)
    fill = tf.fill(tf.stack([y2 - y1, x2 - x1, tf.shape(image)[2]]), tf.cast(replace, image.dtype))
    middle = tf.concat([image[y1:y2, :x1], fill, image[y1:y2, x2:]], axis=1)
    return tf.concat([image[:y1], middle, image[y2:]], axis=0)


def randaugment_op_arg(op_name, magnitude, translate_const=TRANSLATE_CONST, cutout_const=CUTOUT_CONST):
    """The (unsigned) argument DeepMind's ``level_to_arg`` gives ``op_name`` at ``magnitude``.

    ``None`` for AutoContrast, Equalize and Invert. Rotate: degrees; ShearX/Y:
    shear factor; TranslateX/Y: pixels; Posterize: bits; Solarize: threshold
    (before the uint8 wrap of ``dm_quirks``); SolarizeAdd: addition; Cutout:
    half-side in pixels; Color/Contrast/Brightness/Sharpness: enhance factor.
    """
    level = float(magnitude)
    if op_name in ("AutoContrast", "Equalize", "Invert"):
        return None
    if op_name == "Rotate":
        return (level / MAX_LEVEL) * 30.0
    if op_name == "Posterize":
        return int((level / MAX_LEVEL) * 4)
    if op_name == "Solarize":
        return int((level / MAX_LEVEL) * 256)
    if op_name == "SolarizeAdd":
        return int((level / MAX_LEVEL) * 110)
    if op_name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (level / MAX_LEVEL) * 1.8 + 0.1
    if op_name in ("ShearX", "ShearY"):
        return (level / MAX_LEVEL) * 0.3
    if op_name in ("TranslateX", "TranslateY"):
        return (level / MAX_LEVEL) * float(translate_const)
    if op_name == "Cutout":
        return int((level / MAX_LEVEL) * cutout_const)
    raise ValueError(f"Unknown RandAugment op {op_name!r}. Known ops: {', '.join(RANDAUGMENT_OPS)}")


def apply_randaugment_op(
    image,
    op_name,
    magnitude,
    seed=0,
    negate=False,
    translate_const=TRANSLATE_CONST,
    cutout_const=CUTOUT_CONST,
    replace=REPLACE_VALUE,
    dm_quirks=True,
):
    """Apply one RandAugment op to a uint8 HWC RGB image at ``magnitude``.

    Args:
        image: uint8 ``(H, W, 3)``.
        op_name: one of :data:`RANDAUGMENT_OPS`.
        magnitude: DeepMind's ``M`` (Python number; 10 is the nominal maximum).
        seed: stateless seed, used by Cutout for its centre.
        negate: bool (or bool tensor); the geometric ops use ``-arg`` when true.
        translate_const, cutout_const: pixel constants at magnitude 10.
        replace: fill value for uncovered pixels and Cutout.
        dm_quirks: reproduce DeepMind's Solarize/Contrast behaviour (module docstring).
    """
    arg = randaugment_op_arg(op_name, magnitude, translate_const, cutout_const)
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise TypeError(f"RandAugment ops expect a uint8 image. Received dtype {image.dtype}")
    magnitude_arg = arg  # before the sign: the bound of a whole-pixel translation
    if op_name in GEOMETRIC_OPS:
        arg = tf.where(tf.convert_to_tensor(negate, tf.bool), -float(arg), float(arg))
    if op_name == "AutoContrast":
        return autocontrast(image)
    if op_name == "Equalize":
        return equalize(image)
    if op_name == "Invert":
        return invert(image)
    if op_name == "Rotate":
        return rotate(image, arg, replace)
    if op_name == "Posterize":
        return posterize(image, arg)
    if op_name == "Solarize":
        return solarize(image, arg % 256 if dm_quirks else arg)
    if op_name == "SolarizeAdd":
        return solarize_add(image, arg)
    if op_name == "Color":
        return color(image, arg)
    if op_name == "Contrast":
        return contrast(image, arg, dm_quirks=dm_quirks)
    if op_name == "Brightness":
        return brightness(image, arg)
    if op_name == "Sharpness":
        return sharpness(image, arg)
    if op_name == "ShearX":
        return shear_x(image, arg, replace)
    if op_name == "ShearY":
        return shear_y(image, arg, replace)
    if op_name in ("TranslateX", "TranslateY"):
        translate = translate_x if op_name == "TranslateX" else translate_y
        whole = int(magnitude_arg) if float(magnitude_arg).is_integer() else None
        return translate(image, arg, replace, max_pixels=whole)
    return cutout(image, arg, seed, replace)


@functools.lru_cache(maxsize=64)
def _randaugment_layer_fn(ops, magnitude, translate_const, cutout_const, replace, dm_quirks):
    """One RandAugment layer as a ``tf.function``: ``tf.switch_case`` over ``ops``.

    Traced once per configuration and shared by all layers (and pipelines), so
    a graph with N layers holds the 16 op branches once instead of N times,
    which makes building and optimising the ``tf.data`` graph much faster.
    """

    @tf.function(
        autograph=False,
        input_signature=[
            tf.TensorSpec([None, None, 3], tf.uint8),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.bool),
            tf.TensorSpec([2], tf.int64),
        ],
    )
    def layer(image, op_index, negate, seed):
        branches = [
            functools.partial(
                apply_randaugment_op,
                image,
                name,
                magnitude,
                seed=seed,
                negate=negate,
                translate_const=translate_const,
                cutout_const=cutout_const,
                replace=replace,
                dm_quirks=dm_quirks,
            )
            for name in ops
        ]
        return tf.switch_case(op_index, branches)

    return layer


def sample_randaugment_layers(num_layers, seed, num_ops=len(RANDAUGMENT_OPS)):
    """The random choices of :func:`randaugment` for one image, layer by layer.

    Returns a list of ``num_layers`` tuples ``(op_index, negate, op_seed)``:
    the op index, uniform in ``[0, num_ops)`` (int32 scalar); whether a
    geometric op uses ``-magnitude`` (bool scalar, probability 1/2); and the
    stateless seed of the op itself (Cutout's centre).
    """
    choices = []
    layer_seeds = _split(seed, max(int(num_layers), 1))
    for layer in range(int(num_layers)):
        op_seed, sign_seed, arg_seed = tf.unstack(_split(layer_seeds[layer], 3))
        op_index = tf.random.stateless_uniform([], op_seed, minval=0, maxval=int(num_ops), dtype=tf.int32)
        negate = tf.random.stateless_uniform([], sign_seed) < 0.5
        choices.append((op_index, negate, arg_seed))
    return choices


def randaugment(
    image,
    num_layers,
    magnitude,
    seed,
    translate_const=TRANSLATE_CONST,
    cutout_const=CUTOUT_CONST,
    replace=REPLACE_VALUE,
    dm_quirks=True,
    ops=RANDAUGMENT_OPS,
):
    """DeepMind's ``distort_image_with_randaugment`` on one HWC image.

    Each of ``num_layers`` layers picks one op uniformly from ``ops`` and always
    applies it at the fixed ``magnitude`` (DeepMind draws a per-op probability
    and discards it); geometric ops get a random sign. Only the chosen op is
    computed (``tf.switch_case``).

    A float image is handled as in DeepMind's ``_augment_image``: clipped to
    ``[0, 255]``, cast (truncated) to uint8, augmented and cast back to its
    dtype. A uint8 image stays uint8.

    Args:
        image: ``(H, W, 3)`` uint8 or float on the 0..255 scale.
        num_layers: ``N`` (int >= 0).
        magnitude: ``M`` (e.g. 5, 10 or 15 for NFNet-F0, F1-F2, F3+).
        seed: stateless seed for this image (see :func:`as_seed`).
        translate_const, cutout_const, replace, dm_quirks: see
            :func:`apply_randaugment_op`.
        ops: the op names to choose from (default: all 16).
    """
    num_layers = check_integer(num_layers, "num_layers", minimum=0)
    for name in ops:
        randaugment_op_arg(name, magnitude, translate_const, cutout_const)  # validates names
    image = tf.convert_to_tensor(image)
    input_dtype = image.dtype
    image = clip_to_uint8(image)
    static_shape = image.shape
    layer_fn = _randaugment_layer_fn(
        tuple(ops), float(magnitude), float(translate_const), float(cutout_const), int(replace), bool(dm_quirks)
    )
    for op_index, negate, arg_seed in sample_randaugment_layers(num_layers, seed, len(ops)):
        image = layer_fn(image, op_index, negate, arg_seed)
        image.set_shape(static_shape)
    if input_dtype != tf.uint8:
        image = tf.cast(image, input_dtype)
    return image
