"""Tests for nfnet_keras.preprocessing.transform (DeepMind's resize_crop_32 and timm's eval transforms)."""

import io
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from PIL import Image

from nfnet_keras.preprocessing import (
    MEAN_RGB,
    STDDEV_RGB,
    EvalPreprocessing,
    eval_transform,
    eval_transform_tf,
    load_image,
    prepare_images,
    preprocess_input,
)

from support import GOLDEN_F0 as GOLDEN
from support import REPO_ROOT as REPO


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def photo():
    """The scikit-image `chelsea` photo (256x256 uint8 RGB) behind golden x[0]."""
    with np.load(GOLDEN) as golden:
        x = golden["x"][0].astype(np.float64)
    pixels = x * np.array(STDDEV_RGB) + np.array(MEAN_RGB)
    assert np.abs(pixels - np.round(pixels)).max() < 1e-3  # it was uint8
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _tf_reference(image, size, pad=32):
    """DeepMind's dataset.py transform written directly with tf.image.resize."""
    tf = pytest.importorskip("tensorflow")
    big = size + pad
    off = (pad + 1) // 2
    resized = tf.image.resize(
        np.asarray(image, np.float32), (big, big), method="bicubic", antialias=False
    ).numpy()
    return resized[..., off : off + size, off : off + size, :]


def _encode(array, fmt):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


# preprocess_input --------------------------------------------------------------


def test_preprocess_input_maps_mean_to_zero_and_mean_plus_std_to_one():
    mean = np.array(MEAN_RGB, np.float32)
    std = np.array(STDDEV_RGB, np.float32)
    x = np.stack([np.full((2, 2, 3), mean), np.full((2, 2, 3), mean + std)])
    y = _np(preprocess_input(x))
    np.testing.assert_allclose(y[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(y[1], 1.0, atol=1e-6)


def test_preprocess_input_constants_match_deepmind():
    np.testing.assert_allclose(MEAN_RGB, np.array([0.485, 0.456, 0.406]) * 255)
    np.testing.assert_allclose(STDDEV_RGB, np.array([0.229, 0.224, 0.225]) * 255)


def test_preprocess_input_accepts_uint8_and_returns_float32():
    x = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    y = preprocess_input(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    np.testing.assert_allclose(
        _np(y), _np(preprocess_input(x.astype(np.float64))), atol=1e-6
    )
    assert y.shape == (4, 5, 3)


def test_preprocess_input_works_on_symbolic_input():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, preprocess_input(inputs))
    x = np.full((1, 8, 8, 3), MEAN_RGB, np.float32)
    np.testing.assert_allclose(_np(model(x)), 0.0, atol=1e-6)


def test_preprocess_input_reproduces_golden_input(photo):
    with np.load(GOLDEN) as golden:
        expected = golden["x"][0]
    np.testing.assert_allclose(_np(preprocess_input(photo)), expected, atol=1e-5)


@pytest.mark.parametrize(
    "shape", [(8, 8, 4), (2, 8, 8, 1), (8, 8), (1, 2, 8, 8, 3), (3, 8, 8)]
)
def test_preprocess_input_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="3 channels|single image"):
        preprocess_input(np.zeros(shape, np.float32))


def test_preprocess_input_rejects_channels_first():
    with pytest.raises(ValueError, match="channels_last"):
        preprocess_input(np.zeros((1, 3, 8, 8)), data_format="channels_first")


# eval_transform ----------------------------------------------------------------


def test_eval_transform_single_image_shape():
    out = eval_transform(np.zeros((40, 30, 3), np.uint8), 24)
    assert tuple(out.shape) == (24, 24, 3)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_eval_transform_batch_shape():
    out = eval_transform(np.zeros((2, 40, 30, 3), np.float32), 24)
    assert tuple(out.shape) == (2, 24, 24, 3)


def test_eval_transform_keeps_constant_image_constant():
    out = _np(eval_transform(np.full((37, 53, 3), 123, np.uint8), 32))
    np.testing.assert_allclose(out, 123.0, atol=1e-3)


def test_eval_transform_matches_tf_resize_bicubic_then_crop16(photo):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TF reference equality is exact only on the TensorFlow backend")
    out = _np(eval_transform(photo, 256))
    np.testing.assert_allclose(out, _tf_reference(photo, 256), atol=1e-4, rtol=0)


def test_eval_transform_output_is_unclamped(photo):
    out = _np(eval_transform(photo, 256))
    assert out.min() < 0.0  # bicubic overshoot is kept, as in DeepMind's eval


def test_eval_transform_squashes_instead_of_keeping_aspect_ratio():
    # 32x128: left quarter black, rest 200. Squashed to 96x96 the edge lands on
    # column 24, i.e. column 8 after the 16-px crop. An aspect-preserving
    # resize + centre crop would see only the grey part.
    image = np.full((32, 128, 3), 200, np.uint8)
    image[:, :32] = 0
    out = _np(eval_transform(image, 64))
    assert np.abs(out[:, :6]).max() < 5.0
    assert np.abs(out[:, 11:] - 200.0).max() < 10.0
    assert np.abs(out[:, 16:] - 200.0).max() < 1e-3


def test_eval_transform_crop_offset_follows_padding():
    image = np.random.default_rng(0).uniform(0, 255, (50, 60, 3)).astype(np.float32)
    full = _np(eval_transform(image, 40, crop_padding=0))
    padded = _np(eval_transform(image, 30, crop_padding=10))  # offset 5 of 40
    np.testing.assert_allclose(padded, full[5:35, 5:35], atol=1e-4)


def _torchvision_eval_reference(image, size, scale_size):
    """timm's crop_mode "center" geometry written out: Resize(int) then CenterCrop, with tf.image's bicubic."""
    tf = pytest.importorskip("tensorflow")
    height, width = image.shape[:2]
    short, long = min(height, width), max(height, width)
    new_long = int(scale_size * long / short)  # torchvision's _compute_resized_output_size
    new_height, new_width = (scale_size, new_long) if height <= width else (new_long, scale_size)
    resized = tf.image.resize(np.asarray(image, np.float32), (new_height, new_width), "bicubic").numpy()
    top = int(round((new_height - size) / 2.0))  # torchvision's center_crop
    left = int(round((new_width - size) / 2.0))
    return resized[top : top + size, left : left + size]


@pytest.mark.parametrize("shape, padding", [((48, 80, 3), 3), ((81, 50, 3), 0), ((57, 57, 3), 5), ((40, 70, 3), 7)])
def test_shorter_side_resize_keeps_the_aspect_ratio_and_crops_as_torchvision(shape, padding):
    image = np.random.default_rng(1).uniform(0, 255, shape).astype(np.float32)
    settings = EvalPreprocessing(32, crop_padding=padding, resize="shorter_side")
    expected = _torchvision_eval_reference(image, 32, 32 + padding)
    np.testing.assert_allclose(_np(eval_transform(image, settings)), expected, atol=1e-3)


def test_shorter_side_resize_keeps_a_wide_images_edge_out_of_the_crop():
    # The squash test's image: resized by its shorter side, the black quarter lies outside the centre.
    image = np.full((32, 128, 3), 200, np.uint8)
    image[:, :32] = 0
    out = _np(eval_transform(image, EvalPreprocessing(64, crop_padding=0, resize="shorter_side")))
    assert np.abs(out - 200.0).max() < 1e-3


@pytest.mark.parametrize("resize", ["squash", "shorter_side"])
def test_tf_data_transform_equals_the_keras_one_on_images_of_unknown_size(resize):
    tf = pytest.importorskip("tensorflow")
    settings = EvalPreprocessing(32, crop_padding=3, resize=resize)
    transform = tf.function(
        lambda images: eval_transform_tf(images, settings),
        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)],
    )
    image = np.random.default_rng(2).integers(0, 256, (45, 77, 3)).astype(np.uint8)
    out = transform(tf.constant(image))
    assert tuple(transform.get_concrete_function().structured_outputs.shape) == (32, 32, 3)
    np.testing.assert_array_equal(out.numpy(), _np(eval_transform(image, settings)))


@pytest.mark.parametrize("size", [0, -4, 2.5, True])
def test_eval_transform_rejects_non_positive_image_size(size):
    with pytest.raises(ValueError, match="image_size"):
        eval_transform(np.zeros((8, 8, 3)), size)


@pytest.mark.parametrize("shape", [(8, 8), (1, 1, 8, 8, 3), (8, 8, 4)])
def test_eval_transform_rejects_bad_rank_or_channels(shape):
    with pytest.raises(ValueError, match="single image|3 channels"):
        eval_transform(np.zeros(shape), 8)


# JAX backend vs TF --------------------------------------------------------------

_JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    from nfnet_keras.preprocessing import eval_transform
    assert keras.backend.backend() == "jax", keras.backend.backend()
    data = np.load(sys.argv[1])
    np.savez(
        sys.argv[2],
        photo=keras.ops.convert_to_numpy(eval_transform(data["photo"], 256)),
        noise=keras.ops.convert_to_numpy(eval_transform(data["noise"], 224)),
    )
    """
)


@pytest.fixture(scope="module")
def jax_vs_tf(photo, tmp_path_factory):
    """eval_transform under KERAS_BACKEND=jax (subprocess) and the TF reference."""
    pytest.importorskip("jax")
    tmp = tmp_path_factory.mktemp("jax_eval")
    noise = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    np.savez(tmp / "in.npz", photo=photo, noise=noise)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT, str(tmp / "in.npz"), str(tmp / "out.npz")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp / "out.npz") as out:
        jax_out = {key: out[key] for key in out}
    tf_out = {"photo": _tf_reference(photo, 256), "noise": _tf_reference(noise, 224)}
    return jax_out, tf_out


def test_eval_transform_jax_matches_tf_where_tf_table_is_exact(jax_vs_tf):
    # 37x53 -> 256x256: every sampling position is a multiple of 1/512 px, so
    # TF's 1/1024-px coefficient table is exact and only float round-off is
    # left (measured max 1.2e-4 on the 0..255 scale).
    jax_out, tf_out = jax_vs_tf
    np.testing.assert_allclose(jax_out["noise"], tf_out["noise"], atol=5e-4, rtol=0)


def test_eval_transform_jax_close_to_tf_on_photo(jax_vs_tf):
    # 256 -> 288: TF rounds each sampling phase to 1/1024 px (tabulated Keys
    # cubic), jax.image.resize evaluates it exactly. Measured on this photo:
    # max |diff| 0.0435, mean 0.0026 on the 0..255 scale (<= 7.6e-4 after
    # normalisation); interior pixels differ as much as border pixels.
    jax_out, tf_out = jax_vs_tf
    diff = np.abs(jax_out["photo"] - tf_out["photo"])
    assert diff.max() < 0.05
    assert diff.mean() < 0.004


# load_image / prepare_images -----------------------------------------------------


def test_load_image_reads_png_bytes_exactly():
    array = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    out = load_image(_encode(array, "PNG"))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, array)


def test_load_image_reads_jpeg_file(tmp_path):
    array = np.zeros((16, 24, 3), np.uint8)
    array[..., 0] = 200
    path = tmp_path / "red.jpg"
    path.write_bytes(_encode(array, "JPEG"))
    out = load_image(path)
    assert out.shape == (16, 24, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(out.astype(float), array, atol=8)


def test_load_image_converts_greyscale_to_rgb():
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    out = load_image(_encode(grey, "PNG"))
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out[..., 1], grey)


def test_load_image_rejects_non_image_bytes_naming_source():
    with pytest.raises(ValueError, match="<12 bytes>"):
        load_image(b"not an image")


def test_load_image_rejects_non_image_file_naming_path(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        load_image(str(path))


def test_load_image_rejects_truncated_png_naming_source():
    data = _encode(np.zeros((64, 64, 3), np.uint8), "PNG")
    with pytest.raises(ValueError, match="Cannot decode"):
        load_image(data[: len(data) // 2])


def test_load_image_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")


def test_prepare_images_batches_paths_and_arrays(tmp_path):
    rng = np.random.default_rng(2)
    first = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    second = rng.integers(0, 256, (25, 18, 3), dtype=np.uint8)
    path = tmp_path / "first.png"
    path.write_bytes(_encode(first, "PNG"))
    batch = prepare_images([path, second], 16)
    assert isinstance(batch, np.ndarray)
    assert batch.shape == (2, 16, 16, 3) and batch.dtype == np.float32
    for got, image in zip(batch, [first, second]):
        expected = _np(preprocess_input(eval_transform(image, 16)))
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_prepare_images_accepts_single_pil_image():
    array = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    batch = prepare_images(Image.fromarray(array), 16)
    expected = _np(preprocess_input(eval_transform(array, 16)))
    np.testing.assert_allclose(batch, expected[None], atol=1e-6)


def test_prepare_images_rejects_empty_input():
    with pytest.raises(ValueError, match="no images"):
        prepare_images([], 16)
