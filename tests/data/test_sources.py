"""Tests for nfnet_keras.data.sources: the bundled sample, npz/folder/TFDS readers and their errors."""

import io
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from nfnet_keras.data import sources
from nfnet_keras.data.sources import DatasetError


def _encode(array, fmt, **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _image(seed, h=10, w=12, mode="RGB"):
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return rng.integers(0, 256, shape).astype(np.uint8)


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _make_folder(root, classes=("cat", "dog"), per_class=3):
    for c, name in enumerate(classes):
        for i in range(per_class):
            fmt, ext = (("PNG", "png"), ("JPEG", "jpg"))[(c + i) % 2]
            _write(root / name / f"img{i}.{ext}", _encode(_image(10 * c + i), fmt))


def _decode_all(source, split):
    ds = source.make_dataset(split).map(lambda raw, label: (source.decode(raw), label))
    return [(x.numpy(), int(y)) for x, y in ds]


def _npz_arrays(encoded):
    lengths = [len(e) for e in encoded]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return np.frombuffer(b"".join(encoded), np.uint8), offsets


# Bundled sample -----------------------------------------------------------------------


def test_bundled_sample_has_10_balanced_cifar10_classes():
    source = sources.load_source("cifar10_sample")
    assert source.class_names == sources.CIFAR10_CLASSES and source.num_classes == 10
    assert source.split_names == ("train", "test")
    assert source.resolve_split("eval") == "test"
    np.testing.assert_array_equal(np.bincount(source.labels("train")), [500] * 10)
    np.testing.assert_array_equal(np.bincount(source.labels("test")), [100] * 10)
    assert sources.load_source(None).num_examples("train") == 5000
    assert os.path.getsize(sources.BUNDLED_SAMPLE_PATH) < 3_000_000


def test_bundled_sample_holds_real_cifar_jpegs_decoded_like_pillow():
    source = sources.bundled_cifar10_sample()
    names = source.example_names("train")
    assert str(names[0]).startswith("train/airplane/") and str(names[-1]).startswith("train/truck/")
    ds = source.make_dataset("train").take(20)
    for raw, _ in ds:
        data = raw.numpy()
        assert data[:2] == b"\xff\xd8"  # JPEG
        ours = source.decode(raw).numpy()
        pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert ours.shape == (32, 32, 3)
        np.testing.assert_array_equal(ours, pil)


# Folder reader --------------------------------------------------------------------------


def test_folder_reader_reads_png_and_jpeg_class_folders(tmp_path):
    _make_folder(tmp_path, classes=("dog", "cat"), per_class=3)
    _write(tmp_path / "cat" / "notes.txt", b"not an image")
    _write(tmp_path / "dog" / "sub" / "grey.png", _encode(_image(99, mode="L"), "PNG"))
    source = sources.load_source(str(tmp_path))
    assert source.kind == "files"
    assert source.class_names == ("cat", "dog")  # sorted folder names
    assert source.split_names == ("train",)
    np.testing.assert_array_equal(source.labels("train"), [0, 0, 0, 1, 1, 1, 1])
    decoded = _decode_all(source, "train")
    assert all(x.shape == (10, 12, 3) for x, _ in decoded)
    png = next(x for (x, _), n in zip(decoded, source.example_names("train")) if n.endswith("cat/img1.png"))
    np.testing.assert_array_equal(png, _image(11))  # lossless ("cat" was made second: seeds 10..12)
    grey = decoded[-1][0]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 0] == _image(99, mode="L")).all()


def test_folder_reader_reads_train_and_val_split_folders(tmp_path):
    _make_folder(tmp_path / "train", per_class=3)
    _make_folder(tmp_path / "val", per_class=2)
    source = sources.load_source(f"folder:{tmp_path}")
    assert source.split_names == ("train", "val")
    assert source.resolve_split("eval") == "val"
    assert source.num_examples("train") == 6 and source.num_examples("eval") == 4


def test_folder_reader_rejects_val_class_missing_from_train(tmp_path):
    _make_folder(tmp_path / "train")
    _make_folder(tmp_path / "val", classes=("cat", "dog", "emu"))
    with pytest.raises(DatasetError, match=r"\['emu'\] are not in the 'train' split's classes"):
        sources.load_source(str(tmp_path))


def test_folder_with_corrupt_file_raises_naming_it(tmp_path):
    _make_folder(tmp_path)
    good = _encode(_image(5), "JPEG")
    _write(tmp_path / "dog" / "truncated.jpg", good[: len(good) // 2])
    with pytest.raises(DatasetError, match=r"1 corrupt image\(s\).*dog/truncated\.jpg.*skip_corrupt=True"):
        sources.load_source(str(tmp_path))


def test_folder_with_corrupt_files_skips_and_counts_them(tmp_path, caplog):
    _make_folder(tmp_path)
    good = _encode(_image(5), "JPEG")
    _write(tmp_path / "dog" / "truncated.jpg", good[: len(good) // 2])
    _write(tmp_path / "cat" / "garbage.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    _write(tmp_path / "cat" / "empty.jpeg", b"")
    with caplog.at_level(logging.WARNING, logger="nfnet_keras.data.sources"):
        source = sources.load_source(str(tmp_path), skip_corrupt=True)
    assert len(source.skipped) == 3
    assert {os.path.basename(name) for _, name, _ in source.skipped} == {"truncated.jpg", "garbage.png", "empty.jpeg"}
    assert source.num_examples("train") == 6
    assert "skipped 3 corrupt image(s)" in caplog.text
    assert len(_decode_all(source, "train")) == 6  # what remains decodes


def test_folder_with_zero_images_raises(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    _write(tmp_path / "dog" / "readme.txt", b"hello")
    with pytest.raises(DatasetError, match="no image files"):
        sources.load_source(str(tmp_path))


def test_folder_without_class_folders_raises(tmp_path):
    _write(tmp_path / "a.png", _encode(_image(0), "PNG"))
    with pytest.raises(DatasetError, match="no class folders.*1 image file"):
        sources.load_source(str(tmp_path))


def test_folder_with_one_class_raises(tmp_path):
    _make_folder(tmp_path, classes=("cat",))
    with pytest.raises(DatasetError, match=r"found 1 class\(es\).*at least 2 classes"):
        sources.load_source(str(tmp_path))


def test_folder_where_corrupt_files_leave_one_class_raises(tmp_path):
    _make_folder(tmp_path, classes=("cat",))
    _write(tmp_path / "dog" / "bad.jpg", b"\xff\xd8\xff garbage")
    with pytest.raises(DatasetError, match="at least 2 classes"):
        sources.load_source(str(tmp_path), skip_corrupt=True)


# npz reader ------------------------------------------------------------------------------


def test_npz_source_in_shared_per_split_layout(tmp_path):
    train = [_encode(_image(i), "JPEG", quality=90) for i in range(6)]
    val = [_encode(_image(50 + i), "JPEG", quality=90) for i in range(4)]
    for split, encoded, labels in (("train", train, [0, 1, 2, 0, 1, 2]), ("val", val, [2, 1, 0, 0])):
        jpeg, offsets = _npz_arrays(encoded)
        np.savez(
            tmp_path / f"toy_{split}.npz",
            jpeg=jpeg,
            offsets=offsets,
            labels=np.array(labels, np.int64),
            files=np.array([f"{split}/{i}.JPEG" for i in range(len(encoded))]),
            class_names=np.array(["a", "b", "c"]),
        )
    for spec in (str(tmp_path / "toy_train.npz"), str(tmp_path / "toy_val.npz"), str(tmp_path)):
        source = sources.load_source(spec)
        assert source.split_names == ("train", "val") and source.class_names == ("a", "b", "c")
        np.testing.assert_array_equal(source.labels("eval"), [2, 1, 0, 0])
    decoded = _decode_all(source, "train")
    pil = np.asarray(Image.open(io.BytesIO(train[3])).convert("RGB"))
    np.testing.assert_array_equal(decoded[3][0], pil)
    assert decoded[3][1] == 0


def test_npz_source_in_shared_multi_split_layout(tmp_path):
    encoded = [_encode(_image(i), "JPEG") for i in range(5)]
    jpeg, offsets = _npz_arrays(encoded)
    path = tmp_path / "data.npz"
    np.savez(
        path,
        x_train_jpeg=jpeg,
        x_train_offsets=offsets,
        y_train=np.array([0, 1, 0, 1, 1]),
        x_test_jpeg=jpeg,
        x_test_offsets=offsets,
        y_test=np.array([1, 1, 0, 0, 1]),
    )
    source = sources.load_source(f"npz:{path}")
    assert source.split_names == ("train", "test") and source.class_names == ("0", "1")
    assert source.num_examples("eval") == 5


def test_npz_source_with_corrupt_image_raises_or_skips(tmp_path):
    encoded = [_encode(_image(i), "JPEG") for i in range(4)]
    encoded[2] = encoded[2][:30]
    jpeg, offsets = _npz_arrays(encoded)
    path = tmp_path / "bad.npz"
    np.savez(path, jpeg=jpeg, offsets=offsets, labels=np.array([0, 1, 0, 1]))
    with pytest.raises(DatasetError, match=r"1 corrupt image\(s\) in split 'train'; the first is #2"):
        sources.load_source(str(path))
    source = sources.load_source(str(path), skip_corrupt=True)
    assert source.num_examples("train") == 3 and source.skipped[0][1] == "#2"


def test_npz_with_wrong_keys_or_offsets_raises(tmp_path):
    np.savez(tmp_path / "x.npz", images=np.zeros(3))
    with pytest.raises(DatasetError, match="not an npz of JPEG bytes"):
        sources.load_source(str(tmp_path / "x.npz"))
    np.savez(tmp_path / "y.npz", jpeg=np.zeros(10, np.uint8), offsets=np.array([0, 5, 20]), labels=np.array([0, 1]))
    with pytest.raises(DatasetError, match="past the buffer end"):
        sources.load_source(str(tmp_path / "y.npz"))


# Dispatcher errors ----------------------------------------------------------------------


def test_unknown_dataset_name_lists_accepted_forms():
    with pytest.raises(DatasetError, match=r"unknown dataset 'imagenet_typo'(.|\n)*Accepted forms(.|\n)*tfds:NAME"):
        sources.load_source("imagenet_typo")


def test_missing_path_raises():
    with pytest.raises(DatasetError, match="data path not found: /no/such/dir"):
        sources.load_source("/no/such/dir")
    with pytest.raises(DatasetError, match="npz source not found"):
        sources.load_source("npz:/no/such/file.npz")


def test_unknown_split_names_the_available_ones():
    source = sources.bundled_cifar10_sample()
    with pytest.raises(DatasetError, match=r"no split 'holdout'; it has \['train', 'test'\]"):
        source.num_examples("holdout")


def test_array_source_rejects_labels_outside_class_names():
    images = np.zeros((4, 5, 5, 3), np.uint8)
    with pytest.raises(DatasetError, match=r"labels in \[0, 3\] but 2 class names"):
        sources.from_arrays(images, [0, 1, 3, 0], class_names=("a", "b"))


# TFDS -------------------------------------------------------------------------------------


TOY_TFDS_LABELS = [0, 1, 2, 0, 1, 2]


@pytest.fixture(scope="module")
def toy_tfds(tmp_path_factory):
    """A prepared 6-image TFDS dataset (train: 6, test: the first 3) and its pixels."""
    tfds = pytest.importorskip("tensorflow_datasets")
    data_dir = tmp_path_factory.mktemp("tfds")
    images = np.stack([_image(i, 8, 8) for i in range(6)])
    split_ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": np.array(TOY_TFDS_LABELS)})
    tfds.dataset_builders.TfDataBuilder(
        name="nfnet_toy_images",
        config="default",
        version="1.0.0",
        data_dir=str(data_dir),
        split_datasets={"train": split_ds, "test": split_ds.take(3)},
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(8, 8, 3)),
                "label": tfds.features.ClassLabel(names=["x", "y", "z"]),
            }
        ),
    ).download_and_prepare()
    return str(data_dir), images


def test_tfds_source_reads_a_prepared_dataset_offline(toy_tfds):
    data_dir, images = toy_tfds
    source = sources.load_source("tfds:nfnet_toy_images", data_dir=data_dir)
    assert source.kind == "tfds" and source.class_names == ("x", "y", "z")
    assert source.num_examples("train") == 6 and source.resolve_split("eval") == "test"
    got = sorted((int(y), source.decode(raw).numpy().tobytes()) for raw, y in source.make_dataset("train"))
    want = sorted((int(y), x.tobytes()) for x, y in zip(images, TOY_TFDS_LABELS))
    assert got == want  # PNG inside TFDS: lossless


def test_tfds_source_examples_are_the_encoded_images_of_the_split_in_reading_order(toy_tfds):
    data_dir, _ = toy_tfds
    source = sources.load_source("tfds:nfnet_toy_images", data_dir=data_dir)
    examples = source.examples("eval")
    assert examples.dtype == object and len(examples) == source.num_examples("test") == 3
    streamed = [raw.numpy() for raw, _ in source.make_dataset("test")]
    assert list(examples) == streamed and all(isinstance(e, bytes) for e in examples)


def test_tfds_unknown_or_unprepared_dataset_raises(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DatasetError, match="unknown TFDS dataset 'no_such_dataset_xyz'"):
        sources.load_source("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))
    with pytest.raises(DatasetError, match="'imagenet2012' is not prepared.*manual_dir="):
        sources.load_source("tfds:imagenet2012", data_dir=str(tmp_path))


def test_seeded_shuffle_ignores_the_global_tensorflow_seed():
    source = sources.load_source("cifar10_sample", verify=False)

    def first_labels():
        ds = source.make_dataset("train", shuffle=True, seed=5, repeat=True)
        return [int(label) for _, label in ds.take(64)]

    tf.random.set_seed(1)
    first = first_labels()
    tf.random.set_seed(2)
    assert first_labels() == first
