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


# Labels out of range ------------------------------------------------------------------------


def _one_line_error(function, *args, **kwargs):
    """The message of the DatasetError ``function(*args, **kwargs)`` raises, checked to be one line."""
    with pytest.raises(DatasetError) as info:
        function(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def _save_npz_split(path, labels, class_names=None):
    jpeg, offsets = _npz_arrays([_encode(_image(i), "JPEG") for i in range(len(labels))])
    extra = {} if class_names is None else {"class_names": np.array(class_names)}
    np.savez(path, jpeg=jpeg, offsets=offsets, labels=np.array(labels, np.int64), **extra)
    return path


def test_npz_labels_outside_the_class_names_are_refused(tmp_path):
    path = _save_npz_split(tmp_path / "toy_train.npz", [0, 1, 2, 3], class_names=["a", "b", "c"])
    message = _one_line_error(sources.load_source, str(path))
    assert r"labels in [0, 3] but 3 class names; labels must be in [0, 3)" in message


def test_npz_negative_labels_are_refused(tmp_path):
    path = _save_npz_split(tmp_path / "toy_train.npz", [0, 1, -1, 1])
    message = _one_line_error(sources.load_source, str(path))
    assert "labels in [-1, 1]" in message


def test_encoded_source_labels_outside_the_class_names_are_refused():
    encoded = [_encode(_image(i), "PNG") for i in range(3)]
    message = _one_line_error(sources.from_encoded, encoded, [0, 1, 2], class_names=("a", "b"))
    assert "labels in [0, 2] but 2 class names" in message


def _build_toy_tfds(data_dir, name, label_feature, labels):
    """Prepares a TFDS dataset ``name`` of 8x8 images in ``data_dir``: ``labels`` is ``{split: [label, ...]}``."""
    tfds = pytest.importorskip("tensorflow_datasets")
    split_datasets = {
        split: tf.data.Dataset.from_tensor_slices(
            {"image": np.stack([_image(i, 8, 8) for i in range(len(values))]), "label": np.array(values, np.int64)}
        )
        for split, values in labels.items()
    }
    tfds.dataset_builders.TfDataBuilder(
        name=name,
        config="default",
        version="1.0.0",
        data_dir=str(data_dir),
        split_datasets=split_datasets,
        features=tfds.features.FeaturesDict(
            {"image": tfds.features.Image(shape=(8, 8, 3)), "label": label_feature}
        ),
    ).download_and_prepare()


def test_tfds_label_feature_that_is_not_a_class_label_is_refused(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    feature = tfds.features.Scalar(dtype=np.int64)
    _build_toy_tfds(tmp_path, "nfnet_toy_int_labels", feature, {"train": [0, 1, 7]})
    message = _one_line_error(sources.load_source, "tfds:nfnet_toy_int_labels", data_dir=str(tmp_path))
    assert "feature 'label' is a Scalar, not a ClassLabel" in message


def test_tfds_split_of_unlabelled_examples_is_refused_when_read(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    feature = tfds.features.ClassLabel(names=["x", "y"])
    _build_toy_tfds(tmp_path, "nfnet_toy_unlabelled", feature, {"train": [0, 1, 1], "test": [-1, -1]})
    source = sources.load_source("tfds:nfnet_toy_unlabelled", data_dir=str(tmp_path))
    assert sorted(int(label) for _, label in source.make_dataset("train")) == [0, 1, 1]
    message = _one_line_error(source.make_dataset, "eval")
    assert "split 'test' has labels outside [0, 2) (TFDS marks unlabelled examples with -1)" in message


# Holding out an evaluation split ------------------------------------------------------------


def _class_counts_source(counts):
    """An array source whose class ``k`` has ``counts[k]`` distinct 4x4 images."""
    labels = np.repeat(np.arange(len(counts)), counts)
    images = np.stack([_image(i, 4, 4) for i in range(len(labels))])
    return sources.from_arrays(images, labels, class_names=[f"c{k}" for k in range(len(counts))])


def _held_out_names(source, fraction=0.25, seed=0):
    return list(sources.hold_out(source, fraction, seed).example_names("eval"))


def test_flat_folder_has_no_eval_split_and_the_error_says_how_to_hold_one_out(tmp_path):
    _make_folder(tmp_path)
    source = sources.load_source(str(tmp_path))
    assert not source.has_split("eval") and source.has_split("train")
    message = _one_line_error(source.num_examples, "eval")
    assert "has no evaluation split" in message and "pass --validation_fraction F" in message


def test_hold_out_takes_the_rounded_fraction_of_each_class():
    source = _class_counts_source([10, 6, 2, 1])
    split = sources.hold_out(source, 0.25, seed=0)
    # 2.5 and 1.5 round half up; 0.5 rounds to the minimum of 1; a lone example stays in train.
    np.testing.assert_array_equal(np.bincount(split.labels("eval"), minlength=4), [3, 2, 1, 0])
    np.testing.assert_array_equal(np.bincount(split.labels("train"), minlength=4), [7, 4, 1, 1])


def test_hold_out_leaves_every_class_a_training_example():
    split = sources.hold_out(_class_counts_source([3, 2]), 0.9, seed=0)
    np.testing.assert_array_equal(np.bincount(split.labels("train")), [1, 1])


def test_hold_out_puts_the_part_where_eval_finds_it():
    split = sources.hold_out(_class_counts_source([4, 4]), 0.25, seed=0)
    assert split.split_names == ("train", "validation") and split.resolve_split("eval") == "validation"
    assert split.has_split("eval") and split.num_examples("eval") == 2


def test_hold_out_with_the_same_seed_gives_the_same_split(tmp_path):
    _make_folder(tmp_path, classes=("a", "b", "c"), per_class=8)
    first = sources.load_source(str(tmp_path))
    again = sources.load_source(str(tmp_path))
    assert _held_out_names(first, seed=3) == _held_out_names(again, seed=3)


def test_hold_out_with_another_seed_gives_another_split(tmp_path):
    _make_folder(tmp_path, classes=("a", "b", "c"), per_class=8)
    source = sources.load_source(str(tmp_path))
    assert _held_out_names(source, seed=3) != _held_out_names(source, seed=4)


def test_hold_out_of_named_examples_does_not_depend_on_the_stored_order(tmp_path):
    labels = np.array([0, 1] * 8)
    encoded = [_encode(_image(i), "PNG") for i in range(len(labels))]
    files = np.array([f"img{i:02d}.png" for i in range(len(labels))])
    held = []
    for index in (np.arange(len(labels)), np.random.default_rng(0).permutation(len(labels))):
        jpeg, offsets = _npz_arrays([encoded[i] for i in index])
        np.savez(tmp_path / "toy_train.npz", jpeg=jpeg, offsets=offsets, labels=labels[index], files=files[index])
        held.append(set(_held_out_names(sources.load_source(str(tmp_path / "toy_train.npz")))))
    assert held[0] == held[1]


def test_hold_out_of_nameless_examples_does_not_depend_on_the_stored_order():
    labels = np.array([0, 1] * 8)
    pixels = np.stack([_image(i, 4, 4) for i in range(len(labels))])
    held = []
    for index in (np.arange(len(labels)), np.random.default_rng(0).permutation(len(labels))):
        split = sources.hold_out(sources.from_arrays(pixels[index], labels[index]), 0.25, seed=0)
        held.append({image.tobytes() for image in split.examples("eval")})
    assert held[0] == held[1]


def test_hold_out_splits_are_disjoint_cover_train_and_keep_each_files_label(tmp_path):
    _make_folder(tmp_path, classes=("a", "b", "c"), per_class=7)
    source = sources.load_source(str(tmp_path))
    split = sources.hold_out(source, 0.3, seed=1)
    original = dict(zip(source.example_names("train"), source.labels("train")))
    train = dict(zip(split.example_names("train"), split.labels("train")))
    held = dict(zip(split.example_names("eval"), split.labels("eval")))
    assert not set(train) & set(held)
    assert {**train, **held} == original
    for part in (train, held):  # each split keeps the source's order
        assert list(part) == [name for name in source.example_names("train") if name in part]


def test_hold_out_works_for_npz_folder_and_array_sources(tmp_path):
    _make_folder(tmp_path / "folder", per_class=4)
    encoded = [_encode(_image(i), "JPEG") for i in range(8)]
    jpeg, offsets = _npz_arrays(encoded)
    np.savez(tmp_path / "toy_train.npz", jpeg=jpeg, offsets=offsets, labels=np.array([0, 1] * 4))
    kinds = {
        "files": sources.load_source(str(tmp_path / "folder")),
        "bytes": sources.load_source(str(tmp_path / "toy_train.npz")),
        "pixels": _class_counts_source([4, 4]),
    }
    for kind, source in kinds.items():
        assert source.kind == kind
        split = sources.hold_out(source, 0.25, seed=0)
        decoded = _decode_all(split, "eval")
        assert sorted(label for _, label in decoded) == [0, 1] and split.num_examples("train") == 6


def test_hold_out_keeps_class_names_skipped_files_and_other_splits(tmp_path):
    _make_folder(tmp_path, per_class=4)
    _write(tmp_path / "dog" / "broken.jpg", b"not an image")
    source = sources.load_source(str(tmp_path), skip_corrupt=True)
    split = sources.hold_out(source, 0.25, seed=0)
    assert split.class_names == source.class_names and split.skipped == source.skipped and len(split.skipped) == 1
    images = {"train": np.stack([_image(i, 4, 4) for i in range(6)]), "test": np.stack([_image(9, 4, 4)] * 2)}
    arrays = sources.from_arrays(images, {"train": [0, 1] * 3, "test": [1, 0]})
    kept = sources.hold_out(arrays, 0.25, seed=0)
    assert kept.split_names == ("train", "validation", "test")
    np.testing.assert_array_equal(kept.labels("test"), [1, 0])


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan"), True, "0.1", None])
def test_hold_out_refuses_a_fraction_outside_0_1(fraction):
    message = _one_line_error(sources.hold_out, _class_counts_source([4, 4]), fraction, 0)
    assert "must be a number in (0, 1)" in message


def test_hold_out_refuses_a_source_that_already_has_a_validation_split():
    images = np.stack([_image(i, 4, 4) for i in range(4)])
    labels = [0, 1, 0, 1]
    source = sources.from_arrays({"train": images, "validation": images}, {"train": labels, "validation": labels})
    assert "already has a 'validation' split" in _one_line_error(sources.hold_out, source, 0.5, 0)


def test_hold_out_refuses_a_source_whose_classes_have_one_example_each():
    message = _one_line_error(sources.hold_out, _class_counts_source([1, 1]), 0.5, 0)
    assert "no class has 2 or more training examples" in message


def test_hold_out_refuses_a_tfds_source(toy_tfds):
    data_dir, _ = toy_tfds
    source = sources.load_source("tfds:nfnet_toy_images", data_dir=data_dir)
    assert "use the dataset's own split" in _one_line_error(sources.hold_out, source, 0.1, 0)


def test_hold_out_refuses_a_negative_seed():
    message = _one_line_error(sources.hold_out, _class_counts_source([4, 4]), 0.5, -1)
    assert "seed must be a non-negative integer, got -1" in message
