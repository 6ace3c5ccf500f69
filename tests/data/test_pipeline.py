"""Tests for nfnet_keras.data.pipeline: train/eval tf.data pipelines end to end."""

import importlib.util
import io
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from nfnet_keras.data import sources
from nfnet_keras.data import pipeline
from nfnet_keras.preprocessing import MEAN_RGB, STDDEV_RGB, EvalPreprocessing

from support import GOLDEN_F0 as GOLDEN
from support import REPO_ROOT as REPO
from support.subprocesses import child_env

MEAN = np.array(MEAN_RGB, np.float32)
STD = np.array(STDDEV_RGB, np.float32)


def _pixels(x):
    """Undo the normalisation: back to the 0..255 scale."""
    return np.asarray(x, np.float64) * STD + MEAN


def _constant_source(values, labels, size=6, name="constant"):
    """One constant-colour image per value (all channels = value)."""
    images = np.stack([np.full((size, size, 3), v, np.uint8) for v in values])
    return sources.from_arrays(images, labels, name=name)


def _ids(batches, step=10.0):
    """Recover the example index of constant images whose value is index * step."""
    out = []
    for x in batches:
        pix = _pixels(x)
        assert np.ptp(pix, axis=(1, 2, 3)).max() < 1e-2
        out.extend(np.rint(pix[:, 0, 0, 0] / step).astype(int).tolist())
    return out


@pytest.fixture(scope="module")
def photo():
    """The real 256x256 photo behind golden x[0] (uint8 RGB)."""
    with np.load(GOLDEN) as golden:
        x = golden["x"][0].astype(np.float64)
    pixels = x * np.array(STDDEV_RGB) + np.array(MEAN_RGB)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _reference_eval(photo, size):
    """preprocess_input(eval_transform(photo)) with Keras on the TensorFlow backend."""
    if keras.backend.backend() == "tensorflow":
        from nfnet_keras.preprocessing import eval_transform, preprocess_input

        return keras.ops.convert_to_numpy(preprocess_input(eval_transform(photo, size)))
    code = textwrap.dedent(
        f"""
        import sys, numpy as np, keras
        from nfnet_keras.preprocessing import eval_transform, preprocess_input
        x = np.load(sys.argv[1])
        np.save(sys.argv[1], keras.ops.convert_to_numpy(preprocess_input(eval_transform(x, {size}))))
        """
    )
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"nfnet_eval_ref_{os.getpid()}.npy")
    np.save(path, photo)
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    subprocess.run([sys.executable, "-c", code, path], check=True, env=env, capture_output=True)
    return np.load(path)


# Evaluation ---------------------------------------------------------------------------


def test_eval_pipeline_matches_preprocessing_eval_transform_on_real_photo(photo):
    source = sources.from_encoded([_png(photo), _png(photo[:, ::-1])], [0, 1])
    images, labels = next(iter(pipeline.make_eval_dataset(source, 2, 256, split="train")))
    reference = _reference_eval(photo, 256)
    assert images.shape == (2, 256, 256, 3) and images.dtype == tf.float32
    np.testing.assert_allclose(images.numpy()[0], reference, atol=1e-4)
    np.testing.assert_array_equal(labels.numpy(), [[1, 0], [0, 1]])


def test_eval_pipeline_uses_the_padding_mean_and_std_of_the_preprocessing_it_is_given():
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    settings = EvalPreprocessing(24, crop_padding=4, mean=(100.0, 110.0, 120.0), std=(50.0, 60.0, 70.0))
    source = sources.from_arrays(np.stack([image, image]), [0, 1])
    images, _ = next(iter(pipeline.make_eval_dataset(source, 2, settings, split="train")))
    resized = tf.image.resize(image.astype(np.float32), (28, 28), method="bicubic", antialias=False).numpy()
    expected = (resized[2:26, 2:26] - np.array(settings.mean)) / np.array(settings.std)
    np.testing.assert_allclose(images.numpy()[0], expected, atol=1e-5)


def test_eval_pipeline_covers_the_split_once_in_order_with_a_smaller_last_batch():
    source = sources.bundled_cifar10_sample()
    batches = list(pipeline.make_eval_dataset(source, 300, 32))
    assert [int(x.shape[0]) for x, _ in batches] == [300, 300, 300, 100]
    labels = np.concatenate([np.argmax(y, 1) for _, y in batches])
    np.testing.assert_array_equal(labels, source.labels("test"))


# Training: semantics -----------------------------------------------------------------


def test_train_batch_first_half_mixup_second_half_cutmix_label_mass_equals_pixel_fraction():
    values = [20, 80, 150, 230]  # one colour per class
    source = _constant_source(values * 4, [0, 1, 2, 3] * 4)
    ds = pipeline.make_train_dataset(source, 16, 12, randaugment=None, seed=3)
    for images, labels in ds.take(3):
        pix, soft = _pixels(images)[..., 0], labels.numpy()
        np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
        expected_mean = soft @ np.array(values, np.float64)
        for k in range(8):  # MixUp: every pixel is r * v1 + (1 - r) * v2 with the label's r
            np.testing.assert_allclose(pix[k], expected_mean[k], atol=1e-2)
        for k in range(8, 16):  # CutMix: pixels from the two images, in label proportions
            nearest = np.abs(pix[k][..., None] - np.array(values)).argmin(-1)
            np.testing.assert_allclose(pix[k], np.array(values)[nearest], atol=1e-2)
            fraction = np.bincount(nearest.ravel(), minlength=4) / nearest.size
            np.testing.assert_allclose(fraction, soft[k], atol=1e-6)


def test_randaugment_differs_per_image_in_a_batch():
    image = sources.bundled_cifar10_sample().make_dataset("train").take(1).get_single_element()[0]
    pixels = tf.io.decode_jpeg(image, channels=3, dct_method="INTEGER_ACCURATE").numpy()
    source = sources.from_arrays(np.stack([pixels] * 8), [0, 1] * 4)
    common = dict(seed=0, mixup_cutmix=False, random_crop=False, random_flip=False)
    plain, _ = next(iter(pipeline.make_train_dataset(source, 16, 32, randaugment=None, **common)))
    assert len({x.tobytes() for x in plain.numpy()}) == 1  # identical inputs without RandAugment
    augmented, _ = next(iter(pipeline.make_train_dataset(source, 16, 32, randaugment=(2, 10), **common)))
    assert len({x.tobytes() for x in augmented.numpy()}) >= 12


def test_same_seed_gives_same_first_batches_and_another_seed_differs():
    def first(seed):
        ds = pipeline.make_train_dataset("cifar10_sample", 8, 32, randaugment=(4, 10), seed=seed)
        return [(x.numpy(), y.numpy()) for x, y in ds.take(3)]

    a, b, c = first(11), first(11), first(12)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])


def test_a_stream_of_jpegs_started_at_step_k_gives_the_batches_from_batch_k_on():
    common = dict(randaugment=(4, 10), seed=4)
    whole = [(x.numpy(), y.numpy()) for x, y in pipeline.make_train_dataset("cifar10_sample", 8, 32, **common).take(5)]
    resumed = pipeline.make_train_dataset("cifar10_sample", 8, 32, start_step=3, **common).take(2)
    for (x, y), (xw, yw) in zip(resumed, whole[3:]):
        np.testing.assert_array_equal(x.numpy(), xw)
        np.testing.assert_array_equal(y.numpy(), yw)


def test_train_batches_have_static_shape_float32_and_soft_labels():
    ds = pipeline.make_train_dataset(None, 8, 24, randaugment="F0", seed=0)
    assert ds.element_spec[0].shape.as_list() == [8, 24, 24, 3]
    assert ds.element_spec[1].shape.as_list() == [8, 10]
    x, y = next(iter(ds))
    assert x.dtype == tf.float32 and y.dtype == tf.float32
    np.testing.assert_allclose(y.numpy().sum(1), 1.0, atol=1e-6)
    assert -3.0 < float(tf.reduce_mean(x)) < 3.0  # normalised


# Sharding -------------------------------------------------------------------------------


def test_sharding_splits_train_data_between_two_hosts_without_overlap():
    source = _constant_source([10 * i for i in range(24)], [i % 3 for i in range(24)])
    seen = []
    for host in (0, 1):
        ds = pipeline.make_train_dataset(
            source, 8, 4, randaugment=None, seed=0, num_hosts=2, host_index=host,
            mixup_cutmix=False, random_crop=False, random_flip=False,
        )
        seen.append(_ids(x for x, _ in ds.take(3)))  # 3 batches of 4 = one epoch of a 12-example shard
    assert len(seen[0]) == len(set(seen[0])) == 12 and len(set(seen[1])) == 12
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(range(24))


@pytest.mark.parametrize("start_step", [0, 3])
def test_the_hosts_rows_of_a_step_are_the_one_host_batch_of_that_step_augmentation_included(start_step):
    rng = np.random.default_rng(0)
    source = sources.from_arrays(rng.integers(0, 256, (40, 12, 12, 3), dtype=np.uint8), [i % 4 for i in range(40)])
    common = dict(randaugment=(2, 5), seed=7, mixup_cutmix=False, start_step=start_step)
    one_host = [x.numpy() for x, _ in pipeline.make_train_dataset(source, 8, 8, **common).take(4)]
    per_host = [
        [x.numpy() for x, _ in pipeline.make_train_dataset(source, 8, 8, num_hosts=2, host_index=h, **common).take(4)]
        for h in (0, 1)
    ]
    for step in range(4):
        np.testing.assert_array_equal(np.concatenate([per_host[0][step], per_host[1][step]]), one_host[step])


def test_sharding_splits_eval_data_between_two_hosts_without_overlap():
    source = _constant_source([10 * i for i in range(20)], [i % 2 for i in range(20)])
    seen = [_ids(x for x, _ in pipeline.make_eval_dataset(source, 4, 4, num_hosts=2, host_index=h, split="train")) for h in (0, 1)]
    assert sorted(seen[0] + seen[1]) == list(range(20)) and len(seen[0]) == len(seen[1]) == 10


def test_input_context_gives_per_replica_batches_of_its_shard():
    source = _constant_source([10 * i for i in range(16)], [i % 2 for i in range(16)])
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4)
    ds = pipeline.make_eval_dataset(source, 8, 4, input_context=context, split="train")
    ids = _ids(x for x, _ in ds)
    assert all(int(x.shape[0]) <= 2 for x, _ in ds)  # 8 global / 4 replicas
    assert sorted(ids) == list(range(1, 16, 2))


# Errors, helpers, other backends -------------------------------------------------------


def test_bad_arguments_fail_before_any_batch_is_made():
    with pytest.raises(sources.DatasetError, match="unknown dataset"):
        pipeline.make_train_dataset("cifar100_typo", 8, 32)
    with pytest.raises(ValueError, match="even per-host batch"):
        pipeline.make_train_dataset(None, 6, 32, num_hosts=2)
    with pytest.raises(ValueError, match="not divisible by num_hosts"):
        pipeline.make_eval_dataset(None, 9, 32, num_hosts=2)
    with pytest.raises(ValueError, match="smaller than the 10 classes"):
        pipeline.make_eval_dataset(None, 8, 32, num_classes=5)


def test_randaugment_for_variant_follows_deepmind_405_410_415():
    assert pipeline.randaugment_for_variant("F0") == (4, 5)
    assert pipeline.randaugment_for_variant("F1") == pipeline.randaugment_for_variant("F2") == (4, 10)
    assert pipeline.randaugment_for_variant("F3+") == pipeline.randaugment_for_variant("F7") == (4, 15)


def test_benchmark_script_times_the_eval_pipeline_of_the_bundled_sample():
    run = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "input_pipeline.py"), "--eval", "--batch-size", "50",
         "--batches", "4", "--warmup", "1"],
        env=child_env("tensorflow"), cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    line = run.stdout.strip().splitlines()[-1]
    assert line.startswith("eval pipeline, cifar10_sample, 32 px, batch 50: ")
    assert "images/s (4 batches in " in line


def test_benchmark_compare_runs_each_pipeline_pinned_to_its_cores_and_writes_json_lines(tmp_path):
    out = tmp_path / "rates.jsonl"
    run = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "input_pipeline.py"), "--compare", "--modes", "plain",
         "--cores", "1", "--repeats", "1", "--batch-size", "8", "--batches", "2", "--warmup", "1", "--json", str(out)],
        env=child_env("tensorflow"), cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| this | plain | 32 | 1 |" in run.stdout
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["mode"] == "plain" and record["cores"] == 1 and record["runs"][0] > 0
    assert record["per_core"] == record["images_per_second"]


def test_benchmark_script_reports_a_bad_source_in_one_line():
    run = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "input_pipeline.py"), "--source", "cifar100_typo"],
        env=child_env("tensorflow"), cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 2
    assert "error: unknown dataset 'cifar100_typo'" in run.stderr and "Traceback" not in run.stderr


def test_train_dataset_feeds_fit_under_jax_backend(tmp_path):
    if importlib.util.find_spec("jax") is None:  # not imported here: the subprocess uses it
        pytest.skip("jax is not installed")
    script = textwrap.dedent(
        """
        import sys
        import keras, numpy as np
        from nfnet_keras.data.pipeline import make_train_dataset
        ds = make_train_dataset("cifar10_sample", 16, 32, randaugment=(4, 5), seed=7)
        model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, strides=2),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
        model.compile(optimizer="sgd", loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        history = model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)
        # A new iterator of the same dataset object reshuffles (next epoch): build a fresh one.
        x, y = next(iter(make_train_dataset("cifar10_sample", 16, 32, randaugment=(4, 5), seed=7)))
        np.save(sys.argv[1], x.numpy())
        print("BACKEND", keras.backend.backend(), "LOSS", history.history["loss"][0])
        """
    )
    out = tmp_path / "first_batch.npy"
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(l for l in run.stdout.splitlines() if l.startswith("BACKEND"))
    assert line.split()[1] == "jax" and np.isfinite(float(line.split()[3]))
    here, _ = next(iter(pipeline.make_train_dataset("cifar10_sample", 16, 32, randaugment=(4, 5), seed=7)))
    np.testing.assert_array_equal(np.load(out), here.numpy())  # same stream on both backends
