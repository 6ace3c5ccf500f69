"""Tests for nfnet_keras.data.augment: DeepMind's crop, MixUp/CutMix and RandAugment in tf ops."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from nfnet_keras.data import augment


def _batch_map(fn, n):
    """Evaluate ``fn(seed)`` for seeds [i, 7], i < n, inside tf.data (fast, graph mode)."""
    ds = tf.data.Dataset.range(n).map(lambda i: fn(tf.stack([i, tf.constant(7, tf.int64)])))
    return next(iter(ds.batch(n))).numpy()


def _natural_image(h=24, w=20):
    """A smooth, non-symmetric uint8 RGB test image with no value 128."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(y * 9 + x * 3) % 250, (x * 11) % 250, (y * 5 + 40) % 250], -1)
    img = np.where(img == 128, 127, img)
    return img.astype(np.uint8)


def _one_hot(labels, classes):
    return np.eye(classes, dtype=np.float32)[labels]


# MixUp / CutMix --------------------------------------------------------------------


def test_cutmix_label_weight_equals_fraction_of_pixels_from_first_image():
    n, h, w, classes = 16, 12, 10, 4
    q = n // 4
    images = np.zeros((n, h, w, 3), np.float32)
    images[2 * q : 3 * q] = 200.0  # first CutMix image
    images[3 * q :] = 50.0  # second CutMix image
    labels = _one_hot(np.array([0] * q + [1] * q + [2] * q + [3] * q), classes)
    boxes = np.stack([augment.sample_cutmix_box(h, w, [s, 1]).numpy() for s in range(n)])
    masks = augment.cutmix_mask(h, w, boxes)
    out, soft = augment.mixup_cutmix(images, labels, np.full(n, 0.5, np.float32), masks)
    out, soft = out.numpy(), soft.numpy()
    for k in range(q):
        img = out[q + k]
        assert set(np.unique(img)) <= {50.0, 200.0}
        from_first = np.mean(img[..., 0] == 200.0)
        assert soft[q + k, 2] == pytest.approx(from_first, abs=1e-6)
        assert soft[q + k, 3] == pytest.approx(1.0 - from_first, abs=1e-6)
        assert soft[q + k].sum() == pytest.approx(1.0, abs=1e-6)


def test_mixup_pixels_and_labels_use_the_same_ratio():
    rng = np.random.default_rng(0)
    n, classes = 8, 5
    q = n // 4
    images = rng.uniform(0, 255, (n, 6, 7, 3)).astype(np.float32)
    labels = _one_hot(np.array([0, 1, 2, 3, 4, 0, 1, 2]), classes)
    ratios = np.array([augment.sample_mixup_ratio([s, 3]).numpy() for s in range(n)], np.float32)
    masks = np.ones((n, 6, 7, 1), np.float32)
    out, soft = augment.mixup_cutmix(images, labels, ratios, masks)
    out, soft = out.numpy(), soft.numpy()
    for k in range(q):
        r = soft[k, np.argmax(labels[k])]  # the label weight of image 1
        assert r == pytest.approx(ratios[k], abs=1e-6)
        np.testing.assert_allclose(out[k], r * images[k] + (1 - r) * images[q + k], atol=1e-4)
        np.testing.assert_allclose(soft[k], r * labels[k] + (1 - r) * labels[q + k], atol=1e-6)


def test_first_half_of_output_is_mixup_of_quarters_1_2_and_second_half_cutmix_of_quarters_3_4():
    n, h, w = 16, 9, 9
    q = n // 4
    values = np.array([10.0, 60.0, 150.0, 240.0])  # one value per input quarter
    images = np.repeat(values, q)[:, None, None, None] * np.ones((1, h, w, 3), np.float32)
    labels = _one_hot(np.repeat(np.arange(4), q), 4)
    ratios = np.linspace(0.1, 0.9, n).astype(np.float32)
    masks = augment.cutmix_mask(h, w, np.stack([augment.sample_cutmix_box(h, w, [s, 9]) for s in range(n)]))
    out, soft = augment.mixup_cutmix(images, labels, ratios, masks)
    out, soft = out.numpy(), soft.numpy()
    assert out.shape == (n // 2, h, w, 3) and soft.shape == (n // 2, 4)
    for k in range(q):  # MixUp: spatially uniform blend of quarters 1 and 2
        assert np.ptp(out[k]) < 1e-4
        np.testing.assert_allclose(out[k, 0, 0, 0], ratios[k] * 10.0 + (1 - ratios[k]) * 60.0, atol=1e-4)
        assert soft[k, 2] == 0 and soft[k, 3] == 0
    for k in range(q, 2 * q):  # CutMix: pixels copied from quarters 3 and 4 only
        assert set(np.unique(out[k])) <= {150.0, 240.0}
        assert soft[k, 0] == 0 and soft[k, 1] == 0


def test_mixup_cutmix_rejects_batch_not_multiple_of_four():
    with pytest.raises(ValueError, match="multiple of 4"):
        augment.mixup_cutmix(np.zeros((6, 2, 2, 3)), np.zeros((6, 2)), np.zeros(6), np.zeros((6, 2, 2, 1)))


def test_clip_to_uint8_clips_then_truncates_a_batch_and_keeps_uint8_as_it_is():
    floats = np.array([[-3.0, 0.0, 0.99, 1.5, 254.7, 255.0, 300.0]], np.float32)
    np.testing.assert_array_equal(augment.clip_to_uint8(floats).numpy(), [[0, 0, 0, 1, 254, 255, 255]])
    uint8 = np.arange(6, dtype=np.uint8)
    assert augment.clip_to_uint8(uint8).dtype == tf.uint8
    np.testing.assert_array_equal(augment.clip_to_uint8(uint8).numpy(), uint8)


def test_mixup_ratio_follows_beta_0_2_distribution():
    ours = np.sort(_batch_map(augment.sample_mixup_ratio, 4000))
    ref = np.sort(np.random.default_rng(0).beta(0.2, 0.2, 200_000))
    for p in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert np.quantile(ours, p) == pytest.approx(np.quantile(ref, p), abs=0.04)
    assert ours.min() >= 0.0 and ours.max() <= 1.0


def test_cutmix_box_side_is_sqrt_one_minus_uniform_times_size_around_uniform_centre():
    h = w = 64
    boxes = _batch_map(lambda s: augment.sample_cutmix_box(h, w, s), 3000)
    y1, y2, x1, x2 = boxes.T
    assert (0 <= y1).all() and (y1 <= y2).all() and (y2 <= h).all()
    assert (0 <= x1).all() and (x1 <= x2).all() and (x2 <= w).all()
    # Boxes that touch no border have side 2 * (int(sqrt(1 - U) * 64) // 2): area ~ 1 - U is uniform.
    inner = (y1 > 0) & (x1 > 0) & (y2 < h) & (x2 < w)
    sides = (y2 - y1)[inner]
    assert ((x2 - x1)[inner] == sides).all() and (sides % 2 == 0).all()
    frac = sides**2 / (h * w)
    assert inner.sum() > 300
    assert np.mean(frac) < 0.5  # inner boxes are biased to small ones, but cover the range
    assert frac.max() > 0.5 and frac.min() < 0.05


# Inception crop, flip, resize ------------------------------------------------------


def test_inception_crop_keeps_area_and_aspect_within_ranges_over_many_draws():
    h, w = 200, 160
    windows = _batch_map(lambda s: augment.inception_crop_window([h, w, 3], 64, s), 1000)
    oy, ox, ch, cw = windows.T
    assert (oy >= 0).all() and (ox >= 0).all() and (oy + ch <= h).all() and (ox + cw <= w).all()
    area = ch * cw / (h * w)
    aspect = cw / ch
    assert area.min() >= 0.08 and area.max() <= 1.0
    tolerance = 0.5 / ch  # width is rounded to whole pixels: |w - h * aspect| <= 0.5
    assert (aspect >= 3 / 4 - tolerance).all() and (aspect <= 4 / 3 + tolerance).all()
    assert area.min() < 0.2 and area.max() > 0.8  # the whole range is used
    assert len({tuple(x) for x in windows}) > 900  # different per seed


def test_inception_crop_falls_back_to_deepmind_centre_crop_when_no_box_fits():
    # min_object_covered=1 with area <= 0.5 cannot be met: the op returns the whole image.
    window = augment.inception_crop_window(
        [100, 80, 3], 32, [1, 2], area_range=(0.08, 0.5), min_object_covered=1.0
    ).numpy()
    scale = min(100 / 64, 80 / 64)  # min(h, w) / (S + 32)
    size = int(scale * 32)
    np.testing.assert_array_equal(window, [(100 - size + 1) // 2, (80 - size + 1) // 2, size, size])


def test_train_transform_returns_unclamped_float_image_of_train_size():
    image = _natural_image(40, 30)
    image[::2, ::2] = 255
    image[1::2, 1::2] = 0
    out = augment.train_transform(image, (16, 12), [3, 4]).numpy()
    assert out.shape == (16, 12, 3) and out.dtype == np.float32
    outs = [augment.train_transform(image, 16, [s, 0]).numpy() for s in range(40)]
    assert min(o.min() for o in outs) < 0.0 or max(o.max() for o in outs) > 255.0  # bicubic overshoot kept


def test_train_transform_flip_mirrors_the_image():
    image = _natural_image(8, 8)
    outs = [augment.train_transform(image, 8, [s, 0], random_crop=False).numpy() for s in range(12)]
    resized = tf.image.resize(image, (8, 8), method="bicubic").numpy()
    flipped = [np.allclose(o, resized[:, ::-1], atol=1e-4) for o in outs]
    same = [np.allclose(o, resized, atol=1e-4) for o in outs]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)


def test_height_width_takes_an_int_as_a_square_and_a_pair_as_height_then_width():
    assert augment.height_width(24) == (24, 24)
    assert augment.height_width(np.int64(24)) == (24, 24)
    assert augment.height_width((16, 12)) == (16, 12)


@pytest.mark.parametrize("bad", [True, 0, -3, 24.0, (16,), (16, 0), (16, 12.5), "24"])
def test_height_width_rejects_anything_but_positive_integers(bad):
    with pytest.raises(ValueError, match="image_size"):
        augment.height_width(bad)


# RandAugment -------------------------------------------------------------------------


def test_randaugment_differs_per_image_for_the_same_input_and_is_deterministic_per_seed():
    image = tf.constant(_natural_image())
    outs = [augment.randaugment(image, 2, 10, [s, 5]).numpy() for s in range(12)]
    distinct = {o.tobytes() for o in outs}
    assert len(distinct) >= 8
    again = [augment.randaugment(image, 2, 10, [s, 5]).numpy() for s in range(12)]
    for a, b in zip(outs, again):
        np.testing.assert_array_equal(a, b)


def test_randaugment_on_float_input_clips_truncates_and_returns_float():
    image = _natural_image().astype(np.float32) + 0.7
    image[0, 0] = [-40.0, 300.0, 12.9]
    out = augment.randaugment(image, 0, 5, [0, 0]).numpy()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], [0.0, 255.0, 12.0])
    np.testing.assert_array_equal(out[1:], np.floor(image[1:]))


def test_randaugment_picks_ops_uniformly_with_random_sign():
    draws = _batch_map(
        lambda s: tf.stack([tf.cast(c, tf.int32) for c in augment.sample_randaugment_layers(1, s)[0][:2]]), 1600
    )
    counts = np.bincount(draws[:, 0], minlength=len(augment.RANDAUGMENT_OPS))
    assert counts.min() > 60 and counts.max() < 140  # 100 expected for each of the 16 ops
    assert 0.45 < draws[:, 1].mean() < 0.55


def test_randaugment_applies_the_sampled_ops_in_sequence():
    image = _natural_image()
    for s in range(6):
        expected = tf.constant(image)
        for op_index, negate, op_seed in augment.sample_randaugment_layers(3, [s, 1]):
            op = augment.RANDAUGMENT_OPS[int(op_index)]
            expected = augment.apply_randaugment_op(expected, op, 10, seed=op_seed, negate=negate)
        np.testing.assert_array_equal(augment.randaugment(image, 3, 10, [s, 1]), expected)


def test_rotate_at_magnitude_30_turns_image_90_degrees_counterclockwise():
    image = _natural_image(16, 16)
    out = augment.apply_randaugment_op(image, "Rotate", 30).numpy()  # 30/10 * 30 = 90 degrees
    np.testing.assert_array_equal(out, np.rot90(image, 1))
    out_neg = augment.apply_randaugment_op(image, "Rotate", 30, negate=True).numpy()
    np.testing.assert_array_equal(out_neg, np.rot90(image, -1))


def test_rotate_at_magnitude_10_fills_uncovered_corners_with_128():
    image = _natural_image(21, 21)
    out = augment.apply_randaugment_op(image, "Rotate", 10).numpy()  # 30 degrees
    assert (out[0, 0] == 128).all() and (out[-1, -1] == 128).all()
    np.testing.assert_array_equal(out[10, 10], image[10, 10])  # the centre stays


def test_posterize_at_magnitude_5_keeps_two_bits():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
    out = augment.apply_randaugment_op(image, "Posterize", 5).numpy()  # int(0.5 * 4) = 2 bits
    np.testing.assert_array_equal(out, image & 0b11000000)
    out15 = augment.apply_randaugment_op(image, "Posterize", 15).numpy()  # 6 bits
    np.testing.assert_array_equal(out15, image & 0b11111100)


def test_solarize_at_magnitude_5_inverts_pixels_from_128_up():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
    out = augment.apply_randaugment_op(image, "Solarize", 5).numpy()  # threshold 128
    expected = np.where(image < 128, image, 255 - image)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(np.asarray(ImageOps.solarize(Image.fromarray(image), 128)), expected)


def test_solarize_threshold_wraps_modulo_256_with_dm_quirks_only():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
    wrapped = augment.apply_randaugment_op(image, "Solarize", 10).numpy()  # 256 -> uint8 0
    np.testing.assert_array_equal(wrapped, 255 - image)
    plain = augment.apply_randaugment_op(image, "Solarize", 10, dm_quirks=False).numpy()
    np.testing.assert_array_equal(plain, image)


def test_solarize_add_adds_to_pixels_below_128_and_clips():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
    out = augment.apply_randaugment_op(image, "SolarizeAdd", 10).numpy().astype(int)  # + 110
    src = image.astype(int)
    np.testing.assert_array_equal(out, np.where(src < 128, np.minimum(src + 110, 255), src))


def test_posterize_keeps_the_top_bits_of_every_value_for_every_bit_count():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
    for bits in range(-1, 10):
        shift = 8 - min(max(bits, 0), 8)
        out = augment.posterize(image, bits).numpy()
        np.testing.assert_array_equal(out, (image.astype(int) >> shift << shift).astype(np.uint8))


def test_solarize_and_solarize_add_follow_their_formulas_for_every_value_and_threshold():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
    src = image.astype(int)
    for threshold in (0, 1, 128, 255, 256, 300):
        below = src < threshold
        np.testing.assert_array_equal(augment.solarize(image, threshold).numpy(), np.where(below, src, 255 - src))
        for addition in (-300, -20, 0, 110, 300):
            out = augment.solarize_add(image, addition, threshold).numpy()
            np.testing.assert_array_equal(out, np.where(below, np.clip(src + addition, 0, 255), src))


def test_invert_maps_each_value_to_255_minus_it():
    image = _natural_image()
    out = augment.apply_randaugment_op(image, "Invert", 7).numpy()
    np.testing.assert_array_equal(out, 255 - image)


def test_cutout_fills_a_square_of_side_twice_magnitude_times_4_with_128():
    image = _natural_image(60, 60)
    sizes = set()
    for s in range(20):
        out = augment.apply_randaugment_op(image, "Cutout", 5, seed=[s, 0]).numpy()  # half-side 20
        filled = (out == 128).all(-1)
        rows, cols = np.flatnonzero(filled.any(1)), np.flatnonzero(filled.any(0))
        assert filled.sum() == len(rows) * len(cols)  # one axis-aligned rectangle
        assert len(rows) <= 40 and len(cols) <= 40
        np.testing.assert_array_equal(out[~filled], image[~filled])
        sizes.add((len(rows), len(cols)))
    assert (40, 40) in sizes  # a box away from the borders is 2 * 20 pixels wide


def test_translate_x_moves_content_left_by_magnitude_times_10_pixels_and_fills_128():
    image = _natural_image(12, 30)
    out = augment.apply_randaugment_op(image, "TranslateX", 1).numpy()  # 0.1 * 100 = 10 px
    np.testing.assert_array_equal(out[:, :20], image[:, 10:])
    assert (out[:, 20:] == 128).all()
    right = augment.apply_randaugment_op(image, "TranslateX", 1, negate=True).numpy()
    np.testing.assert_array_equal(right[:, 10:], image[:, :20])


def test_translate_y_moves_content_up():
    image = _natural_image(30, 12)
    out = augment.apply_randaugment_op(image, "TranslateY", 1).numpy()
    np.testing.assert_array_equal(out[:20], image[10:])
    assert (out[20:] == 128).all()


@pytest.mark.parametrize("op_name", ["TranslateX", "TranslateY"])
def test_whole_pixel_translation_equals_the_projective_transform_also_past_the_border(op_name):
    image = _natural_image(20, 30)
    shift = augment.translate_x if op_name == "TranslateX" else augment.translate_y
    for magnitude, const in ((5, 100), (10, 40), (3, 10), (10, 14)):  # 50, 40, 3 and 14 pixels
        pixels = augment.randaugment_op_arg(op_name, magnitude, translate_const=const)
        for negate in (False, True):
            out = augment.apply_randaugment_op(image, op_name, magnitude, negate=negate, translate_const=const)
            expected = shift(image, -pixels if negate else pixels)
            np.testing.assert_array_equal(out.numpy(), expected.numpy())


def test_shear_x_shifts_row_y_by_level_times_y():
    image = _natural_image(20, 40)
    out = augment.apply_randaugment_op(image, "ShearX", 10).numpy()  # level 0.3
    for y in (0, 10, 19):
        shift = int(np.round(0.3 * y))
        np.testing.assert_array_equal(out[y, : 40 - shift - 1], image[y, shift : 40 - 1])


def test_equalize_matches_pil_equalize():
    rng = np.random.default_rng(3)
    image = np.clip(rng.normal(110, 12, (32, 24, 3)), 0, 255).astype(np.uint8)
    out = augment.apply_randaugment_op(image, "Equalize", 5).numpy()
    np.testing.assert_array_equal(out, np.asarray(ImageOps.equalize(Image.fromarray(image))))
    assert out.min() < 20 and out.max() > 235  # the histogram is spread out


def test_autocontrast_stretches_each_channel_to_full_range():
    rng = np.random.default_rng(4)
    image = rng.integers(70, 170, (20, 20, 3)).astype(np.uint8)
    image[..., 2] = 99  # a flat channel is left unchanged
    out = augment.apply_randaugment_op(image, "AutoContrast", 5).numpy()
    for c in (0, 1):
        # float32 scale then truncation, as DeepMind: the top value can land on 254.
        assert out[..., c].min() == 0 and out[..., c].max() >= 254
        order = np.argsort(image[..., c], axis=None)
        assert (np.diff(out[..., c].ravel()[order].astype(int)) >= 0).all()  # monotone
    np.testing.assert_array_equal(out[..., 2], 99)
    np.testing.assert_allclose(out, np.asarray(ImageOps.autocontrast(Image.fromarray(image))), atol=1)


def test_enhance_ops_are_identity_at_magnitude_5_and_follow_factor_elsewhere():
    image = _natural_image()
    for op in ("Color", "Contrast", "Brightness", "Sharpness"):
        np.testing.assert_array_equal(augment.apply_randaugment_op(image, op, 5), image)  # factor 1.0
    dark = augment.apply_randaugment_op(image, "Brightness", 0).numpy()  # factor 0.1
    np.testing.assert_array_equal(dark, (image.astype(np.float32) * np.float32(0.1)).astype(np.uint8))
    grey = augment.color(image, 0.0).numpy()
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_contrast_dm_quirk_uses_pixel_count_over_256_as_grey_level():
    image = np.full((16, 16, 3), 200, np.uint8)  # 256 pixels -> DeepMind's "mean" is 1.0
    quirk = augment.contrast(image, 0.0).numpy()
    np.testing.assert_array_equal(quirk, 1)
    true_mean = augment.contrast(image, 0.0, dm_quirks=False).numpy()
    np.testing.assert_array_equal(true_mean, 200)


def test_randaugment_rejects_unknown_op_and_non_uint8_op_input():
    with pytest.raises(ValueError, match="Unknown RandAugment op"):
        augment.randaugment(_natural_image(), 1, 5, [0, 0], ops=("Rotate", "Blur"))
    with pytest.raises(TypeError, match="uint8"):
        augment.apply_randaugment_op(np.zeros((4, 4, 3), np.float32), "Invert", 5)
